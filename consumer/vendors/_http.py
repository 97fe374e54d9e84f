"""What every vendor status client shares: one pooled httpx client, a capped streamed GET, safe retry."""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from consumer.core.decode import parse_document
from consumer.core.errors import Rejection, error_name
from consumer.vendors._client import Answer, Verdict
from schemas.job import Provider

__all__ = [
    "MAX_ANSWER_BYTES",
    "UNEXPECTED",
    "USER_AGENT",
    "BaseStatusClient",
    "Reply",
    "SharedHttp",
    "by_status",
    "encode_segment",
    "fetch",
    "host_of",
    "plain_segment",
    "retry_after_s",
    "vendor_code",
]

USER_AGENT = "speechjobs"
MAX_ANSWER_BYTES = 4 << 20
UNEXPECTED = "unexpected answer"

# Only these fail before any byte of the request has left: the vendor cannot have seen it, so one more try
# cannot do anything twice. Everything later (a read timeout, a reset) may follow a request it did see.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
_RETRY_WAIT_S = (0.2, 0.5)
# Enough for any status answer; bounded so that a hostile body cannot cost more than its 4 MiB.
_MAX_DEPTH = 64
_MAX_MEMBERS = 1_000_000
# Printable, short and without spaces: a vendor's code, never its free text (which may quote the request).
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,80}")


@dataclass(frozen=True, slots=True)
class Reply:
    """A vendor's HTTP answer, read in full (within MAX_ANSWER_BYTES)."""

    status: int
    headers: httpx.Headers
    body: bytes
    content_type: str | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def answer(self, verdict: Verdict, detail: str, retry_after_s: float | None = None) -> Answer:
        return Answer(verdict, self.status, self.body, self.content_type, retry_after_s, detail)

    def document(self) -> Any:
        """The body as JSON or XML (no DTD, bounded depth), or None when it is neither."""
        if not self.body:
            return None
        try:
            document, _ = parse_document(
                self.body, self.content_type, max_depth=_MAX_DEPTH, max_members=_MAX_MEMBERS
            )
        except Rejection:
            return None
        return document


class SharedHttp:
    """One pooled httpx client lent to several status clients; closed when the last of them gives it back."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self._users = 0

    def lend(self) -> httpx.AsyncClient:
        self._users += 1
        return self.client

    async def give_back(self) -> None:
        self._users -= 1
        if self._users <= 0:
            await self.client.aclose()


class BaseStatusClient:
    """A status client: build a signed request, fetch it, classify the reply; never raises for failures."""

    provider: Provider

    def __init__(self, http: SharedHttp, *, timeout_s: float) -> None:
        self._shared = http
        self._client = http.lend()
        self._timeout_s = timeout_s
        self._closed = False

    async def status(self, task_id: str) -> Answer:
        if not plain_segment(task_id):
            # It would change the path (a slash, a dot segment) or cannot be any vendor's id: not sent.
            return Answer("error", detail="invalid task id")
        return await self._call(lambda: self._request(task_id), self._classify)

    async def _call(self, build: Callable[[], httpx.Request], classify: Callable[[Reply], Answer]) -> Answer:
        """Fetch a request `build` signs (afresh for each try) and classify the reply; never raises."""
        try:
            reply = await fetch(self._client, build, deadline_s=self._timeout_s)
            return reply if isinstance(reply, Answer) else classify(reply)
        except Exception as exc:
            # The class name only: messages can carry the URL, and with it a signature.
            return Answer("error", detail=error_name(exc))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._shared.give_back()

    def _request(self, task_id: str) -> httpx.Request:
        raise NotImplementedError

    def _classify(self, reply: Reply) -> Answer:
        raise NotImplementedError


def plain_segment(text: str) -> bool:
    """Whether an id can be one path segment: no slash, no dot segment, no control character."""
    return (
        0 < len(text) <= 256
        and text not in (".", "..")
        and not any(c == "/" or c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    )


async def fetch(
    client: httpx.AsyncClient, build: Callable[[], httpx.Request], *, deadline_s: float
) -> Reply | Answer:
    """GET once, or twice when the first try never connected; an Answer is a failure without a reply.

    `build` signs afresh for each try. Each try has `deadline_s` from connect to last byte (httpx's own
    timeouts bound each read, not the whole).
    """

    async def attempt() -> Reply | Answer:
        async with asyncio.timeout(deadline_s):
            return await _read(client, build())

    retrying = AsyncRetrying(
        stop=stop_after_attempt(2),
        wait=wait_random(*_RETRY_WAIT_S),
        retry=retry_if_exception_type(_NOT_SENT),
        reraise=True,
    )
    try:
        result: Reply | Answer = await retrying(attempt)
    except (httpx.TimeoutException, TimeoutError):
        return Answer("error", detail="timeout")
    except httpx.TransportError as exc:
        return Answer("error", detail=error_name(exc))
    return result


async def _read(client: httpx.AsyncClient, request: httpx.Request) -> Reply | Answer:
    response = await client.send(request, stream=True)
    try:
        content_type = response.headers.get("content-type")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            return Answer("error", response.status_code, content_type=content_type, detail="answer too large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                return Answer(
                    "error", response.status_code, content_type=content_type, detail="answer too large"
                )
            chunks.append(chunk)
        return Reply(response.status_code, response.headers, b"".join(chunks), content_type)
    finally:
        await response.aclose()


def host_of(url: httpx.URL) -> str:
    """The Host header httpx sends for a URL (host, and a port unless the default): the one to sign."""
    return url.netloc.decode("ascii")


def vendor_code(value: object) -> str | None:
    """A vendor's error code fit for a log line (short, plain), or None."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        if _CODE.fullmatch(text):
            return text
    return None


def retry_after_s(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Retry-After (RFC 9110): delay-seconds or an HTTP date; None when absent or unreadable."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def by_status(reply: Reply, code: str | None, *, retry_after: float | None = None) -> Answer:
    """The generic HTTP rule, for what a vendor's own codes do not settle."""
    detail = code or f"HTTP {reply.status}"
    if reply.status == 429:
        return reply.answer("throttled", detail, retry_after)
    if reply.status in (401, 403):
        return reply.answer("auth", detail)
    if reply.status == 404:
        return reply.answer("not-found", detail)
    return reply.answer("error", UNEXPECTED if reply.ok and code is None else detail)


def encode_segment(text: str) -> str:
    """A path segment percent-encoded (RFC 3986 unreserved kept), as the vendors' signers encode it."""
    return quote(text, safe="")
