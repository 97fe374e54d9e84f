"""The receiver's ASGI app: authenticate a callback, publish it untouched, answer 200 only once confirmed."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from consumer.core.contract import Inbound, inbound, valid_traceparent
from consumer.core.errors import error_name
from consumer.runtime import metrics
from consumer.runtime.health import Health
from consumer.settings import ReceiverSettings
from consumer.vendors.aliyun_ice import webhook
from schemas.job import PROVIDERS, Provider

__all__ = ["Publish", "Receiver", "build_app"]

log = logging.getLogger("speechjobs.receiver")

# Publishes one inbound message and returns once the broker confirmed it; raises otherwise.
Publish = Callable[[Inbound], Awaitable[None]]


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status = status
        self.text = text


@dataclass
class Receiver:
    """What the routes need: settings, the publish function, health, and the count of requests in flight."""

    settings: ReceiverSettings
    max_body_bytes: int
    publish: Publish
    health: Health
    in_flight: int = 0

    def __post_init__(self) -> None:
        self._tokens = {p: tuple(t.encode() for t in ts) for p, ts in self.settings.tokens().items()}
        self._ice_keys = self.settings.ice_keys()

    def authorised(self, provider: str, token: str) -> bool:
        """Whether the token is one of the provider's, compared in constant time with each of them."""
        given = token.encode()
        matched = False
        for candidate in self._tokens.get(provider, ()):
            matched |= hmac.compare_digest(given, candidate)
        return matched

    async def callback(self, request: Request) -> Response:
        started = time.perf_counter()
        provider = request.path_params["provider"]
        known: Provider | None = provider if provider in PROVIDERS else None
        status, size, confirm_ms = 500, 0, None
        traceparent = valid_traceparent(request.headers.get("traceparent")) or _new_traceparent()
        self.in_flight += 1
        metrics.RECEIVER_IN_FLIGHT.inc()
        try:
            if known is None or not self.authorised(provider, request.path_params["token"]):
                # A stranger learns nothing: an unknown provider and a wrong token look alike.
                metrics.RECEIVER_AUTH_FAILURES.labels("provider" if known is None else "token").inc()
                raise _Refused(404, "not found")
            if request.method != "POST":
                raise _Refused(405, "POST only")
            if self.in_flight > self.settings.receiver_max_in_flight:
                raise _Refused(503, "busy, try again")
            body = await self._body(request)
            size = len(body)
            if known == "aliyun-ice" and self._ice_keys:
                self._check_ice(request)
            message = inbound(
                body,
                channel="callback",
                provider=known,
                task_id=request.query_params.get("task_id") or None,
                traceparent=traceparent,
                content_type=request.headers.get("content-type"),
                received_at=datetime.now(UTC),
            )
            confirm_started = time.perf_counter()
            await self._publish(message)
            confirm_s = time.perf_counter() - confirm_started
            metrics.RECEIVER_CONFIRM_SECONDS.observe(confirm_s)
            confirm_ms = round(confirm_s * 1000, 2)
            status = 200
            return PlainTextResponse("ok\n")
        except _Refused as refused:
            status = refused.status
            headers = {"retry-after": "1"} if status == 503 else None
            return PlainTextResponse(refused.text + "\n", status_code=status, headers=headers)
        finally:
            self.in_flight -= 1
            metrics.RECEIVER_IN_FLIGHT.dec()
            label = known or "unknown"
            metrics.RECEIVER_REQUESTS.labels(label, str(status)).inc()
            # One line per request; never the token, a signature or the body.
            log.info(
                "callback %d",
                status,
                extra={
                    "provider": label,
                    "status": status,
                    "bytes": size,
                    "confirm_ms": confirm_ms,
                    "trace_id": traceparent[3:35],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        limit = self.max_body_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _Refused(413, f"body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            # A client dripping its body is cut off: the whole body within the read timeout.
            async with asyncio.timeout(self.settings.receiver_read_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(413, f"body over {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise _Refused(408, "body not received in time") from None
        except ClientDisconnect:
            raise _Refused(400, "client went away") from None
        return b"".join(chunks)

    def _check_ice(self, request: Request) -> None:
        verdict = webhook.verify(
            request.headers.get(webhook.SIGNATURE),
            request.headers.get(webhook.TIMESTAMP),
            callback_url=self.settings.ice_callback_url,
            keys=self._ice_keys,
            now=time.time(),
            window_s=self.settings.ice_signature_window_s,
        )
        if verdict != "ok":
            metrics.RECEIVER_AUTH_FAILURES.labels(f"ice-{verdict}").inc()
            raise _Refused(401, "signature refused")

    async def _publish(self, message: Inbound) -> None:
        # Only an outage refuses: a request already in flight at SIGTERM is finished and published.
        if self.health.unavailable("broker"):
            raise _Refused(503, "not ready, try again")
        try:
            async with asyncio.timeout(self.settings.receiver_confirm_timeout_s):
                await self.publish(message)
        except TimeoutError:
            # Not confirmed in time: the vendor retries; a late confirm makes a duplicate the consumer drops.
            raise _Refused(503, "not confirmed in time, try again") from None
        except Exception as exc:  # the broker refused or went away: never 200 for an unconfirmed body
            log.warning("publish failed: %s", error_name(exc))
            raise _Refused(503, "not accepted, try again") from None

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        problems = self.health.not_ready()
        return PlainTextResponse(("\n".join(problems) or "ok") + "\n", status_code=503 if problems else 200)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def build_app(receiver: Receiver) -> Starlette:
    any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes = [
        Route("/callbacks/{provider}/{token}", receiver.callback, methods=any_method),
        Route("/healthz", receiver.healthz, methods=["GET"]),
        Route("/readyz", receiver.readyz, methods=["GET"]),
        Route("/metrics", receiver.metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.add_exception_handler(404, _not_found)
    return app


async def _not_found(request: Request, exc: Any) -> Response:
    return PlainTextResponse("not found\n", status_code=404)


def _new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
