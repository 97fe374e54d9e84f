"""`speechjobs receive`: uvicorn (httptools, uvloop) serving the receiver; publishes with confirms."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import signal
from collections.abc import Callable, Generator
from typing import Any, cast

import aio_pika
import uvicorn
from pamqp.commands import Basic
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from consumer.amqp.connection import TRANSIENT, Producer, TopologyError, connect_producer
from consumer.core.contract import Inbound
from consumer.core.errors import error_name
from consumer.receiver.app import BODY_TIMED_OUT, Receiver
from consumer.runtime import metrics
from consumer.runtime.health import Health
from consumer.runtime.lifecycle import freeze_startup_heap, until_up
from consumer.settings import Settings

__all__ = ["EXIT_CONFIG", "ReceiverService", "guarded_protocol"]

log = logging.getLogger("speechjobs.receiver")

EXIT_CONFIG = 2


def guarded_protocol(*, head_timeout_s: float, max_head_bytes: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, plus what it lacks: deadlines for a request's head and for its body
    (a client that opens a connection and drips, or sends nothing, is cut off) and a cap on the head's
    size (431). A timer is armed only for a head or body that takes more than one read."""

    class Guarded(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _in_head = True
        _in_body = False  # the head is parsed, the body not yet complete
        _tail = b""  # the last bytes of the head so far: its end may straddle two reads

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                # Only the head counts: a body arriving in the same read is the app's to limit. The head's
                # end may straddle two reads: the last read's final bytes are searched with this one.
                tail = self._tail
                end = (tail + data).find(b"\r\n\r\n") if tail else data.find(b"\r\n\r\n")
                if end < 0:
                    self._head_bytes += len(data)
                    self._tail = (tail + data)[-3:] if len(data) < 3 else data[-3:]
                    if self._timer is None:  # a head in several reads: it has until the deadline
                        self._arm()
                else:
                    self._head_bytes += max(end + 4 - len(tail), 0)
                if self._head_bytes > max_head_bytes:
                    metrics.RECEIVER_REFUSED.labels("head-too-large").inc()
                    self._refuse(b"431 Request Header Fields Too Large")
                    return
            super().data_received(data)
            if self._in_body and self._timer is None:  # a body in several reads: it has until the deadline
                self._arm()

        def on_headers_complete(self) -> None:
            self._in_head, self._in_body = False, True
            self._disarm()
            if self.parser.get_http_version() not in ("1.0", "1.1"):
                # httptools takes a request line without a version as HTTP/0.9, and parses 2.0 as well.
                self.send_400_response("Unsupported HTTP version")
                return
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            # A keep-alive connection's next request starts its head again.
            self._in_head, self._in_body, self._head_bytes, self._tail = True, False, 0, b""
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self._in_head and not self.transport.is_closing():
                # Answered before its body was read (404, 413, ...): the rest is read and dropped, so the
                # client gets its answer rather than a reset, but only for as long as a head may take;
                # each byte would otherwise cancel uvicorn's keep-alive timer and hold the connection.
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._timer = asyncio.get_running_loop().call_later(head_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            cycle = self.cycle
            if self._in_body and cycle is not None and not cycle.response_started:
                # The app is still waiting for the body: the answer is 408, and the app, woken by the
                # disconnect, finds the mark and logs it as such.
                metrics.RECEIVER_REFUSED.labels("slow-body").inc()
                cast(dict[str, object], self.scope)[BODY_TIMED_OUT] = True  # a key beyond uvicorn's type
                self._refuse(b"408 Request Timeout", b"body not received in time\n")
                return
            if not self._in_head and not self.transport.is_closing():
                metrics.RECEIVER_REFUSED.labels("slow-body").inc()
                self.transport.close()  # already answered: the unread rest of a body took too long
                return
            if self._in_head and not self.transport.is_closing():
                if self._head_bytes:
                    metrics.RECEIVER_REFUSED.labels("slow-head").inc()
                    self._refuse(b"408 Request Timeout")
                else:
                    metrics.RECEIVER_REFUSED.labels("idle").inc()
                    self.transport.close()  # an idle connection: nothing to answer

        def send_400_response(self, msg: str) -> None:
            metrics.RECEIVER_REFUSED.labels("malformed").inc()
            super().send_400_response(msg)

        def _refuse(self, status: bytes, body: bytes = b"") -> None:
            self._disarm()
            self._in_head = self._in_body = False
            head = b"HTTP/1.1 %s\r\ncontent-length: %d\r\nconnection: close\r\n" % (status, len(body))
            if body:
                head += b"content-type: text/plain; charset=utf-8\r\n"
            self.transport.write(head + b"\r\n" + body)
            self.transport.close()

    return Guarded


class ReceiverService:
    """The receiver process: connect to the broker (retrying while it is unreachable), then serve."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.health = Health()
        self._producer: Producer | None = None
        self._stopping = False

    async def run(self) -> int:
        settings = self.settings
        receiver_settings = settings.receiver
        if not receiver_settings.tokens():
            log.warning("SPEECHJOBS_CALLBACK_TOKENS is empty: every callback will be answered 404")
        receiver = Receiver(receiver_settings, settings.limits.max_body_bytes, self._publish, self.health)
        self.health.degrade("broker", "not connected yet")
        config = uvicorn.Config(
            receiver,
            host="0.0.0.0",
            port=receiver_settings.receiver_port,
            http=guarded_protocol(
                head_timeout_s=receiver_settings.receiver_read_timeout_s,
                max_head_bytes=receiver_settings.receiver_max_header_bytes,
            ),
            loop="none",  # the loop is already running: uvloop unless SPEECHJOBS_EVENT_LOOP says otherwise
            lifespan="off",
            ws="none",
            proxy_headers=False,  # the client's address is neither used nor logged
            log_config=None,
            access_log=False,  # the path holds the token; the app logs one line per request without it
            server_header=False,
            date_header=False,
            # Connections beyond several times the request cap get a 503 from uvicorn itself.
            limit_concurrency=receiver_settings.receiver_max_in_flight * 4,
            timeout_keep_alive=max(5, int(receiver_settings.receiver_read_timeout_s)),
            timeout_graceful_shutdown=int(settings.runtime.shutdown_grace_s),
        )
        server = _Server(config, self._stop)
        connecting = asyncio.create_task(self._connect(), name="broker")

        # A refused topology is a configuration error: stop serving rather than answer 503 forever.
        def stop_if_failed(task: asyncio.Task[None]) -> None:
            if _failed(task):
                server.should_exit = True

        connecting.add_done_callback(stop_if_failed)
        try:
            await server.serve()  # returns after SIGTERM/SIGINT, once the requests in flight are answered
        finally:
            connecting.cancel()
            if self._producer is not None:
                await self._producer.close()
        if _failed(connecting):
            return EXIT_CONFIG
        log.info("stopped")
        return 0

    def _stop(self) -> None:
        self._stopping = True
        self.health.working = False

    async def _connect(self) -> None:
        stop = asyncio.Event()
        try:
            producer = await until_up(
                "broker",
                lambda: connect_producer(self.settings.amqp, name="speechjobs-receiver"),
                transient=lambda e: isinstance(e, TRANSIENT),
                stop=stop,
                health=self.health,
            )
        except TopologyError as exc:
            log.error("cannot start: %s", exc, extra={"component": "broker"})
            raise
        assert producer is not None
        self._producer = producer
        freeze_startup_heap()
        if not self._stopping:  # a SIGTERM during the connect keeps readiness failed
            self.health.working = True

        def lost(_: object, exc: BaseException | None = None) -> None:
            self.health.degrade(
                "broker", f"connection lost ({error_name(exc)})" if exc else "connection lost"
            )

        producer.connection.close_callbacks.add(lost)
        producer.connection.reconnect_callbacks.add(lambda *_: self.health.recovered("broker"))
        log.info("receiving", extra={"port": self.settings.receiver.receiver_port})

    async def _publish(self, message: Inbound, timeout: float) -> None:
        producer = self._producer
        if producer is None:
            raise ConnectionError("not connected to the broker")
        # Straight on aiormq's channel: a confirm awaited per request, pipelined with the others in flight.
        channel = await producer.channel.get_underlay_channel()
        await channel.basic_publish(
            message.body,
            exchange=producer.inbound_exchange.name,
            routing_key=message.routing_key,
            properties=_properties(message),
            mandatory=True,
            timeout=timeout,  # aiormq's own deadline, which takes a late publish back safely
        )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Readiness fails first; uvicorn then closes the listener and finishes the requests in flight.
        self._on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own re-raises the signal after shutting down, which ends the process with 143, not 0.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def _failed(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is not None


# A message id per publish, cheaper than the random UUID aiormq makes otherwise: it matches a returned
# (unroutable) message to its publish, so it must be unique while the message is in flight.
_ID_PREFIX = f"{random.getrandbits(48):012x}-"
_ids = itertools.count()


def _properties(message: Inbound) -> Basic.Properties:
    headers: dict[str, Any] = dict(message.headers)
    return Basic.Properties(
        content_type=message.content_type[:255] if message.content_type else None,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
        message_id=f"{_ID_PREFIX}{next(_ids):x}",
    )
