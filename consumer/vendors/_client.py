"""What every vendor status client answers: the vendor's body untouched, and a verdict for the poller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from schemas.job import Provider

__all__ = ["Answer", "StatusClient", "Verdict"]

# ok: the vendor answered about the job (the body goes on the inbound exchange as it is).
# not-found: the vendor says the job does not exist. throttled: slow down (retry_after_s when it said).
# auth: credentials refused (a configuration error: no point retrying soon). error: anything else,
# retried later: 5xx, a timeout, a connection refused, an answer that is not the vendor's format.
Verdict = Literal["ok", "not-found", "throttled", "auth", "error"]


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    http_status: int = 0  # 0: no HTTP answer (timeout, connection refused)
    body: bytes = b""
    content_type: str | None = None
    retry_after_s: float | None = None
    detail: str = (
        ""  # a short reason for logs and metrics: a vendor error code, an exception's name; no secret
    )


class StatusClient(Protocol):
    """A vendor's job-status API, signed; one pooled HTTP client per process."""

    provider: Provider

    async def status(self, task_id: str) -> Answer:
        """Ask about one job; never raises for the vendor's or the network's failures (see Answer)."""
        ...

    async def aclose(self) -> None: ...
