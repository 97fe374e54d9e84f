"""The running service: wires settings, store, broker and pipeline; batches deliveries; shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import signal
from collections import deque
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from aio_pika.abc import AbstractIncomingMessage
from pymongo.errors import PyMongoError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential_jitter

from consumer.amqp.connection import Broker, connect
from consumer.amqp.publisher import Publisher
from consumer.runtime import metrics
from consumer.runtime.health import Health
from consumer.runtime.probes import serve
from consumer.settings import Settings
from consumer.store import JobStore
from consumer.store.mongo import MongoStore
from consumer.worker.pipeline import Pipeline

__all__ = ["Service", "run_loop"]

log = logging.getLogger("speechjobs.service")

_STOP = None  # sentinel in the delivery buffer: finish the current batch, then return

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T], loop: Literal["uvloop", "asyncio"]) -> T:
    """Run `main` on uvloop where it is installed (it is not on Windows), else on asyncio's own loop."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed, running on the asyncio loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


class Service:
    """`speechjobs run`. The store is swappable (the benchmark runs the same service on an in-memory one)."""

    def __init__(self, settings: Settings, *, store: JobStore | None = None) -> None:
        self.settings = settings
        self.health = Health()
        self._buffer: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._store: JobStore | None = store
        self._closing = False

    async def run(self) -> int:
        settings = self.settings
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self._store = store = self._store or MongoStore.from_settings(settings)
        server = (
            await serve("0.0.0.0", settings.http_port, live=self._live, ready=self._ready)
            if settings.http_port
            else None
        )
        broker: Broker | None = None
        try:
            await self._until_up("mongodb", store.setup, PyMongoError, stop)
            broker = await self._until_up("broker", lambda: connect(settings), Exception, stop)
            if broker is None:
                return 0
            self._watch(broker)
            publisher = Publisher.on(broker, timeout=settings.publish_timeout_s)
            pipeline = Pipeline(settings, store, publisher, self.health)
            # What start-up built (modules, models, validators, connections) lives as long as the process:
            # out of the collector's sight, full collections walk only what messages allocate, and pause
            # the pipeline for a few milliseconds instead of 20-35.
            gc.collect()
            gc.freeze()
            self._worker = asyncio.create_task(self._batches(pipeline), name="batches")
            tag = await broker.topology.inbound.consume(self._on_message, no_ack=False)
            self.health.consuming = True
            log.info(
                "consuming",
                extra={
                    "queue": settings.inbound_queue,
                    "providers": list(settings.providers),
                    "event_loop": type(loop).__module__.split(".")[0],
                },
            )
            stop_wait = asyncio.create_task(stop.wait())
            await asyncio.wait({stop_wait, self._worker}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s})
            self.health.consuming = False
            with contextlib.suppress(Exception):
                await broker.topology.inbound.cancel(tag)
            await self._drain(settings.shutdown_grace_s)
        finally:
            self._closing = True
            if broker is not None:
                with contextlib.suppress(Exception):
                    await broker.close()
            await store.close()
            if server is not None:
                server.close()
        log.info("stopped")
        return 0

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        metrics.IN_FLIGHT.inc()
        self._buffer.put_nowait(message)

    async def _batches(self, pipeline: Pipeline) -> None:
        """Cut the delivery buffer into batches and run up to `batches_in_flight` of them at once."""
        size, linger = self.settings.batch_size, self.settings.batch_linger_ms / 1000
        slots = asyncio.Semaphore(self.settings.batches_in_flight)
        in_flight: deque[int] = deque()  # batch numbers, oldest first
        running: set[asyncio.Task[None]] = set()
        for number in itertools.count():
            await slots.acquire()
            first = await self._buffer.get()
            if first is _STOP:
                break
            # Deliveries keep arriving while the previous batch writes; cutting this one only then makes
            # batches as large as the database's pace allows rather than as small as the broker's.
            await pipeline.until_writer_idle()
            batch = [first]
            stopping = False
            for waited in (False, True):
                while len(batch) < size and not self._buffer.empty():
                    message = self._buffer.get_nowait()
                    if message is _STOP:
                        stopping = True
                        break
                    batch.append(message)
                # One short linger lets a burst fill the batch; a lone message waits at most this long.
                if waited or stopping or len(batch) >= size or linger == 0:
                    break
                await asyncio.sleep(linger)
            in_flight.append(number)
            task = asyncio.create_task(self._batch(pipeline, batch, number, in_flight, slots))
            running.add(task)
            task.add_done_callback(running.discard)
            if stopping:
                break
        await asyncio.gather(*running)

    async def _batch(
        self,
        pipeline: Pipeline,
        batch: list[AbstractIncomingMessage],
        number: int,
        in_flight: deque[int],
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            # Only the oldest batch in flight may ack with multiple=True: every earlier delivery is settled.
            await pipeline.process(batch, oldest=lambda: in_flight[0] == number)
        except Exception:
            log.exception("batch of %d failed; handing the messages back for redelivery", len(batch))
            for message in batch:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
        finally:
            in_flight.remove(number)
            slots.release()
            metrics.IN_FLIGHT.dec(len(batch))
            self.health.beat()

    async def _drain(self, grace: float) -> None:
        """Finish what was received within the grace period; the broker redelivers the rest."""
        if self._worker is None or self._worker.done():
            return
        self._buffer.put_nowait(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._worker), grace)
        except TimeoutError:
            log.warning("grace period over, handing in-flight messages back to the broker")
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _watch(self, broker: Broker) -> None:
        self.health.broker_connected = True

        def lost(*_: object) -> None:
            self.health.broker_connected = False
            if self._closing:
                return
            log.warning("broker connection lost, reconnecting")

        def back(*_: object) -> None:
            self.health.broker_connected = True
            log.info("broker connection restored")

        broker.connection.close_callbacks.add(lost)
        broker.connection.reconnect_callbacks.add(back)

    async def _until_up(
        self, component: str, call: Any, error: type[BaseException], stop: asyncio.Event
    ) -> Any:
        async def attempt() -> Any:
            if stop.is_set():
                return None
            return await call()

        async def sleep(seconds: float) -> None:
            # A SIGTERM during start-up must not wait out the backoff.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(error),
            wait=wait_exponential_jitter(initial=0.5, max=15),
            stop=stop_never,
            sleep=sleep,
            before_sleep=lambda s: log.warning(
                "%s not reachable yet: %s",
                component,
                type(s.outcome.exception()).__name__ if s.outcome else "?",
            ),
        )
        return await retrying(attempt)

    async def _live(self) -> list[str]:
        if self._worker is not None and self._worker.done():
            return ["consumer task ended"]
        return []

    async def _ready(self) -> list[str]:
        problems = self.health.not_ready()
        if self._store is not None:
            try:
                await asyncio.wait_for(self._store.ping(), 2)
            except (PyMongoError, TimeoutError) as exc:
                problems.append(f"mongodb unreachable: {type(exc).__name__}")
        return problems
