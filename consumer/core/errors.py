"""Why a message is dead-lettered: one reason class and a short, secret-free message."""

from __future__ import annotations

from typing import Literal

from consumer.core.redact import redact

__all__ = ["Reason", "Rejection", "error_name"]

Reason = Literal[
    "too-large",  # over a size limit: body bytes (never parsed), members, a string's bytes, result entries
    "undecodable",  # bytes that are not text in the declared or default charset
    "malformed",  # not well-formed JSON or XML
    "unsafe-xml",  # DTDs and entities: never sent by vendors, the vector of XXE and billion laughs
    "too-deep",  # nesting beyond the configured depth, in the body or in JSON nested in its strings
    "unknown-format",  # parsed, but no adapter recognises the shape
    "unknown-provider",  # x-provider header names no provider we know
    "unsupported-provider",  # a provider outside SPEECHJOBS_PROVIDERS
    "invalid-payload",  # the vendor's shape, but a field is missing, of the wrong type or unstorable
    "too-many-jobs",  # one message updating more jobs than SPEECHJOBS_MAX_JOBS_PER_MESSAGE
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

    def detached(self) -> Rejection:
        """This rejection without its traceback and chained errors, to be kept past the raise: their frames
        hold the parsed body alive, and a batch of kept rejections would hold a batch of parsed bodies."""
        self.__traceback__ = self.__context__ = self.__cause__ = None
        return self


def error_name(exc: BaseException) -> str:
    """The exception's class name, or its nearest public base's: `_OperationCancelled` means nothing to
    an operator, `AutoReconnect` does."""
    return next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))
