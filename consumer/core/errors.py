"""Why a message is dead-lettered: one reason class and a short, secret-free message."""

from __future__ import annotations

from typing import Literal

from consumer.core.redact import redact

__all__ = ["Reason", "Rejection", "error_name"]

Reason = Literal[
    "too-large",  # body over SPEECHJOBS_MAX_BODY_BYTES, never parsed
    "undecodable",  # bytes that are not text in the declared or default charset
    "malformed",  # not well-formed JSON or XML
    "unsafe-xml",  # DTDs and entities: never sent by vendors, the vector of XXE and billion laughs
    "too-deep",  # nesting beyond the configured depth
    "unknown-format",  # parsed, but no adapter recognises the shape
    "unknown-provider",  # x-provider header names no provider we know
    "unsupported-provider",  # a provider outside SPEECHJOBS_PROVIDERS
    "invalid-payload",  # the vendor's shape, but a field is missing or of the wrong type
    "unknown-state",  # a state this version does not know: kept in the DLQ, replayed after an upgrade
    "missing-task-id",  # a job notification that names no job
    "vendor-error",  # the vendor's own error body (an API error, not a job state)
    "processing-failed",  # kept failing for reasons other than the input, redelivery limit reached
]


class Rejection(Exception):
    """Raised by pure code for input that can never be processed; the message is dead-lettered."""

    def __init__(self, reason: Reason, message: str, *, provider: str | None = None) -> None:
        self.reason: Reason = reason
        self.message = redact(message)[:300]
        self.provider = provider
        super().__init__(f"{reason}: {self.message}")


def error_name(exc: BaseException) -> str:
    """The exception's class name, or its nearest public base's: `_OperationCancelled` means nothing to
    an operator, `AutoReconnect` does."""
    return next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))
