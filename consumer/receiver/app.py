"""The receiver's ASGI app: authenticate a callback, publish it untouched, answer 200 only once confirmed."""

from __future__ import annotations

import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.core.contract import Inbound, inbound, valid_traceparent
from consumer.core.errors import error_name
from consumer.runtime import logs, metrics, tracing
from consumer.runtime.health import Health
from consumer.settings import ReceiverSettings
from consumer.vendors.aliyun_ice import webhook
from schemas.job import PROVIDERS, Provider

__all__ = ["BODY_TIMED_OUT", "Publish", "Receiver"]

log = logging.getLogger("speechjobs.receiver")

# Publishes one inbound message and returns once the broker confirmed it, within the timeout (seconds);
# raises TimeoutError when the confirm is late, another exception when the broker refused or went away.
Publish = Callable[[Inbound, float], Awaitable[None]]

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# The request headers the receiver reads; the rest are never decoded.
_WANTED = frozenset(
    (
        b"content-length",
        b"content-type",
        b"traceparent",
        webhook.SIGNATURE.encode(),
        webhook.TIMESTAMP.encode(),
    )
)
_TEXT = b"text/plain; charset=utf-8"

# The scope key the HTTP protocol sets when it cut a request off for a body slower than the read timeout:
# the deadline lives in the protocol (service.guarded_protocol), which arms a timer only for a body that
# takes more than one read, rather than an `asyncio.timeout` around every request's read.
BODY_TIMED_OUT = "speechjobs.body_timed_out"


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status = status
        self.text = text


@dataclass
class Receiver:
    """The ASGI app: `POST /callbacks/{provider}/{token}`, `/healthz`, `/readyz` and `/metrics`.

    A plain ASGI callable rather than a framework's router: one route does the work, and a framework's
    request objects cost more CPU per callback than the rest of the receiver (bench/README.md).
    """

    settings: ReceiverSettings
    max_body_bytes: int
    publish: Publish
    health: Health
    in_flight: int = 0

    def __post_init__(self) -> None:
        self._tokens = {p: tuple(t.encode() for t in ts) for p, ts in self.settings.tokens().items()}
        self._ice_keys = self.settings.ice_keys()
        self._counters: dict[tuple[str, int], Any] = {}  # prometheus children, looked up once each
        metrics.RECEIVER_IN_FLIGHT.set_function(lambda: self.in_flight)  # read when scraped, not kept
        self._probes: dict[str, Callable[[], tuple[int, bytes, bytes]]] = {
            "/healthz": lambda: (200, b"ok\n", _TEXT),
            "/readyz": self._readiness,
            "/metrics": lambda: (200, generate_latest(), CONTENT_TYPE_LATEST.encode()),
        }

    def authorised(self, provider: str, token: str) -> bool:
        """Whether the token is one of the provider's, compared in constant time with each of them."""
        given = token.encode()
        matched = False
        for candidate in self._tokens.get(provider, ()):
            matched |= hmac.compare_digest(given, candidate)
        return matched

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":  # no lifespan, no websockets: the server is configured without them
            return
        path: str = scope["path"]
        if path.startswith("/callbacks/"):
            await self._callback(scope, receive, send)
            return
        probe = self._probes.get(path)
        if probe is None:
            await _answer(send, 404, b"not found\n")
        elif scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"GET only\n")
        else:
            await _answer(send, *probe())

    async def _callback(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        started = time.perf_counter()
        parts = scope["path"].split("/")  # "", "callbacks", provider, token
        provider = parts[2] if len(parts) == 4 else ""
        known: Provider | None = provider if provider in PROVIDERS else None
        headers = {n.decode(): v.decode("latin-1") for n, v in scope["headers"] if n in _WANTED}
        incoming = valid_traceparent(headers.get("traceparent"))
        # Traced, the published traceparent is this request's SERVER span: the consumer continues the trace.
        span = (
            tracing.server_span(scope["method"], known, incoming, scheme=scope.get("scheme", "http"))
            if tracing.enabled
            else None
        )
        traceparent = (incoming or _new_traceparent()) if span is None else tracing.traceparent_of(span)
        status, size, confirm_ms = 500, 0, None
        self.in_flight += 1
        try:
            if known is None or not self.authorised(known, parts[3]):
                # A stranger learns nothing: an unknown provider and a wrong token look alike.
                metrics.RECEIVER_AUTH_FAILURES.labels("provider" if known is None else "token").inc()
                raise _Refused(404, "not found")
            if scope["method"] != "POST":
                raise _Refused(405, "POST only")
            if self.in_flight > self.settings.receiver_max_in_flight:
                raise _Refused(503, "busy, try again")
            body = await self._body(scope, receive, headers.get("content-length"))
            size = len(body)
            if known == "aliyun-ice" and self._ice_keys:
                self._check_ice(headers)
            message = inbound(
                body,
                channel="callback",
                provider=known,
                task_id=_task_id(scope["query_string"]),
                traceparent=traceparent,
                content_type=headers.get("content-type"),
                received_at=datetime.now(UTC),
            )
            # Only an outage refuses: a request already in flight at SIGTERM is still published.
            if self.health.unavailable("broker"):
                raise _Refused(503, "not ready, try again")
            confirm_started = time.perf_counter()
            await self._publish(message)
            confirm_s = time.perf_counter() - confirm_started
            metrics.RECEIVER_CONFIRM_SECONDS.observe(confirm_s)
            confirm_ms = round(confirm_s * 1000, 2)
            status = 200
            await send(_OK_START)
            await send(_OK_BODY)
        except _Refused as refused:
            status = refused.status
            await _answer(send, status, refused.text.encode() + b"\n", retry=status == 503)
        finally:
            self.in_flight -= 1
            label = known or "unknown"
            self._count(label, status)
            if span is not None:
                tracing.end_server_span(span, status)
            # One line per request; never the token, a signature or the body.
            logs.outcome(
                log,
                f"callback {status}",
                {
                    "provider": label,
                    "status": status,
                    "bytes": size,
                    "confirm_ms": confirm_ms,
                    "trace_id": traceparent[3:35],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )

    async def _body(self, scope: _Scope, receive: _Receive, declared: str | None) -> bytes:
        limit = self.max_body_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _Refused(413, f"body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                if scope.get(BODY_TIMED_OUT):
                    raise _Refused(408, "body not received in time")
                raise _Refused(400, "client went away")
            chunk: bytes = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Refused(413, f"body over {limit} bytes")
            chunks.append(chunk)
            if not event.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _check_ice(self, headers: dict[str, str]) -> None:
        verdict = webhook.verify(
            headers.get(webhook.SIGNATURE),
            headers.get(webhook.TIMESTAMP),
            callback_url=self.settings.ice_callback_url,
            keys=self._ice_keys,
            now=time.time(),
            window_s=self.settings.ice_signature_window_s,
        )
        if verdict != "ok":
            metrics.RECEIVER_AUTH_FAILURES.labels(f"ice-{verdict}").inc()
            raise _Refused(401, "signature refused")

    async def _publish(self, message: Inbound) -> None:
        try:
            await self.publish(message, self.settings.receiver_confirm_timeout_s)
        except TimeoutError:
            # The vendor retries; a late confirm makes a duplicate the consumer drops.
            raise _Refused(503, "not confirmed in time, try again") from None
        except Exception as exc:  # the broker refused or went away: never 200 for an unconfirmed body
            log.warning("publish failed: %s", error_name(exc))
            raise _Refused(503, "not accepted, try again") from None

    def _count(self, provider: str, status: int) -> None:
        counter = self._counters.get((provider, status))
        if counter is None:
            counter = self._counters[provider, status] = metrics.RECEIVER_REQUESTS.labels(
                provider, str(status)
            )
        counter.inc()

    def _readiness(self) -> tuple[int, bytes, bytes]:
        problems = self.health.not_ready()
        return 503 if problems else 200, (("\n".join(problems) or "ok") + "\n").encode(), _TEXT


async def _answer(
    send: _Send, status: int, body: bytes, content_type: bytes = _TEXT, *, retry: bool = False
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if retry:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_OK_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", _TEXT), (b"content-length", b"3")],
}
_OK_BODY = {"type": "http.response.body", "body": b"ok\n"}


def _task_id(query: bytes) -> str | None:
    """`?task_id=…` of the callback URL, the last one if repeated; None when absent or blank."""
    if not query:
        return None
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    found = [value for name, value in pairs if name == "task_id"]
    return found[-1] if found and found[-1] else None


def _new_traceparent() -> str:
    # Random ids as OpenTelemetry's SDK makes them: unique, not secret, so no system call for entropy.
    trace_id = random.getrandbits(128) or 1
    span_id = random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-01"
