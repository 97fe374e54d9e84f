"""`speechjobs run`: wires store, broker and pipeline; cuts deliveries into batches; shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage
from pymongo.errors import ConnectionFailure, PyMongoError

from consumer.amqp.connection import TRANSIENT, Broker, TopologyError, connect_consumer
from consumer.amqp.publisher import Publisher
from consumer.core.errors import error_name
from consumer.runtime import metrics
from consumer.runtime.health import Health
from consumer.runtime.lifecycle import freeze_startup_heap, stop_on_signals, until_up
from consumer.runtime.probes import serve
from consumer.settings import Settings
from consumer.store import JobStore
from consumer.store.mongo import MongoStore
from consumer.worker.pipeline import Pipeline

__all__ = ["EXIT_CONFIG", "EXIT_CRASHED", "Service"]

log = logging.getLogger("speechjobs.service")

EXIT_CRASHED = 1  # the batch worker died: the pod restarts, the broker redelivers what was unacked
EXIT_CONFIG = 2  # the broker refused the topology: no restart fixes it

_STOP = None  # sentinel in the delivery buffer: finish the current batch, then return
_SAMPLE_EVERY_S = 30.0


class Service:
    """The consumer process. The store is swappable (the benchmark runs it on an in-memory one)."""

    def __init__(self, settings: Settings, *, store: JobStore | None = None) -> None:
        self.settings = settings
        self.health = Health()
        self._buffer: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._store: JobStore | None = store
        self._closing = False
        self._broker: Broker | None = None
        self._tag: str | None = None  # the consumer tag while deliveries flow; None while paused
        self._bytes_in_flight = 0
        self._flow = asyncio.Lock()  # pausing and resuming never interleave

    async def run(self) -> int:
        settings = self.settings
        stop = stop_on_signals()
        self._store = store = self._store or MongoStore.from_settings(
            settings.mongodb, settings.consumer, settings.limits
        )
        port = settings.runtime.http_port
        server = await serve("0.0.0.0", port, live=self._live, ready=self._ready) if port else None
        broker: Broker | None = None
        try:
            up = await until_up(
                "mongodb",
                _setup(store),
                transient=lambda e: isinstance(e, ConnectionFailure),
                stop=stop,
                health=self.health,
            )
            if up is None:
                return 0
            try:
                broker = await until_up(
                    "broker",
                    lambda: connect_consumer(settings.amqp, settings.consumer),
                    transient=lambda e: isinstance(e, TRANSIENT),
                    stop=stop,
                    health=self.health,
                )
            except TopologyError as exc:
                log.error("cannot start: %s", exc, extra={"component": "broker"})
                return EXIT_CONFIG
            if broker is None:
                return 0
            return await self._consume(broker, store, stop)
        finally:
            self._closing = True
            if broker is not None:
                with contextlib.suppress(Exception):
                    await broker.close()
            await store.close()
            if server is not None:
                server.close()
            log.info("stopped")

    async def _consume(self, broker: Broker, store: JobStore, stop: asyncio.Event) -> int:
        settings = self.settings
        self._watch(broker)
        publisher = Publisher.on(broker, timeout=settings.amqp.publish_timeout_s)
        pipeline = Pipeline(
            settings.amqp,
            settings.consumer,
            settings.limits,
            store=store,
            publisher=publisher,
            health=self.health,
            first_poll_s=settings.poller.poll_interval_s,
        )
        freeze_startup_heap()
        self._worker = worker = asyncio.create_task(self._batches(pipeline), name="batches")
        sampler = asyncio.create_task(self._sample_queues(broker), name="queue-samples")
        self._broker = broker
        self._tag = await broker.topology.inbound.consume(self._on_message, no_ack=False)
        self.health.working = True
        log.info(
            "consuming",
            extra={
                "queue": settings.consumer.inbound_queue,
                "providers": list(settings.consumer.providers),
                "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            },
        )
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({stop_wait, worker}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        sampler.cancel()
        self.health.working = False
        if worker.done():
            # Only a bug ends the worker early: exit non-zero so the pod restarts; the broker redelivers.
            exc = worker.exception() if not worker.cancelled() else None
            log.critical(
                "the batch worker died", exc_info=exc, extra={"error": error_name(exc) if exc else None}
            )
            return EXIT_CRASHED
        log.info("shutting down", extra={"grace_s": settings.runtime.shutdown_grace_s})
        async with self._flow:
            self._closing = True
            if self._tag is not None:
                try:
                    await broker.topology.inbound.cancel(self._tag)
                except Exception as exc:  # the channel may be gone; the broker then stops delivering anyway
                    log.warning("could not cancel the consumer: %s", error_name(exc))
                self._tag = None
        await self._drain(settings.runtime.shutdown_grace_s)
        return 0

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        metrics.IN_FLIGHT.inc()
        self._bytes_in_flight += len(message.body)
        metrics.IN_FLIGHT_BYTES.set(self._bytes_in_flight)
        self._buffer.put_nowait(message)
        if self._bytes_in_flight > self.settings.consumer.max_bytes_in_flight and self._tag is not None:
            await self._pause()

    async def _pause(self) -> None:
        """Stop deliveries while the bodies held exceed the budget; prefetch alone counts messages, not
        bytes, and 512 deliveries of 1 MiB would be half a gigabyte."""
        async with self._flow:
            if self._tag is None or self._broker is None:
                return
            try:
                await self._broker.topology.inbound.cancel(self._tag)
            except Exception as exc:  # a lost channel stops deliveries as well; the reconnect resumes them
                log.warning("could not pause the consumer: %s", error_name(exc))
                return
            self._tag = None
            log.info(
                "paused deliveries: bodies in flight over the budget",
                extra={"bytes_in_flight": self._bytes_in_flight},
            )

    async def _resume(self) -> None:
        # Until it works: a consumer cancelled by us is not one the robust channel restores on reconnect.
        while not self._closing:
            async with self._flow:
                if self._tag is not None or self._broker is None or self._closing:
                    return
                try:
                    self._tag = await self._broker.topology.inbound.consume(self._on_message, no_ack=False)
                except Exception as exc:
                    log.warning("could not resume deliveries, trying again: %s", error_name(exc))
                else:
                    log.info("resumed deliveries", extra={"bytes_in_flight": self._bytes_in_flight})
                    return
            await asyncio.sleep(1)

    async def _batches(self, pipeline: Pipeline) -> None:
        """Cut the delivery buffer into batches and run up to `batches_in_flight` of them at once."""
        consumer = self.settings.consumer
        size, linger = consumer.batch_size, consumer.batch_linger_ms / 1000
        slots = asyncio.Semaphore(consumer.batches_in_flight)
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
                try:
                    await message.nack(requeue=True)
                except Exception as exc:  # the channel is gone: the broker redelivers it anyway
                    log.warning(
                        "could not nack message %s: %s",
                        message.message_id,
                        error_name(exc),
                        extra={"message_id": message.message_id},
                    )
        finally:
            in_flight.remove(number)
            slots.release()
            metrics.IN_FLIGHT.dec(len(batch))
            self._bytes_in_flight -= sum(len(message.body) for message in batch)
            metrics.IN_FLIGHT_BYTES.set(self._bytes_in_flight)
            # Half the budget before resuming, so that the consumer does not flap at the line.
            if self._tag is None and self._bytes_in_flight <= self.settings.consumer.max_bytes_in_flight // 2:
                await self._resume()

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

    async def _sample_queues(self, broker: Broker) -> None:
        """Export how many messages wait in the inbound queue (for the consumers: with none processed, they
        are stuck) and in the unrouted queue (each an event no subscriber received)."""
        queues = [(self.settings.consumer.inbound_queue, metrics.INBOUND_READY)]
        if self.settings.amqp.events_unrouted:
            queues.append((self.settings.amqp.events_unrouted, metrics.EVENTS_UNROUTED))
        while True:
            for name, gauge in queues:
                try:
                    # A channel of its own: a passive declare that fails closes the channel it runs on.
                    channel = await broker.connection.channel(publisher_confirms=False)
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                        gauge.set(queue.declaration_result.message_count or 0)
                    finally:
                        await channel.close()
                except Exception as exc:  # a sample missed during an outage is taken again next time
                    log.debug("could not sample queue %s: %s", name, error_name(exc))
            await asyncio.sleep(_SAMPLE_EVERY_S)

    def _watch(self, broker: Broker) -> None:
        def lost(_: object, exc: BaseException | None = None) -> None:
            if not self._closing:
                self.health.degrade(
                    "broker", f"connection lost ({error_name(exc)})" if exc else "connection lost"
                )

        def back(*_: object) -> None:
            self.health.recovered("broker")

        broker.connection.close_callbacks.add(lost)
        broker.connection.reconnect_callbacks.add(back)

    async def _live(self) -> list[str]:
        if self._worker is not None and self._worker.done():
            return ["batch worker ended"]
        return []

    async def _ready(self) -> list[str]:
        problems = self.health.not_ready() + await self._live()
        if self._store is not None:
            try:
                await asyncio.wait_for(self._store.ping(), 2)
            except (PyMongoError, TimeoutError) as exc:
                problems.append(f"mongodb unreachable: {error_name(exc)}")
        return problems


def _setup(store: JobStore) -> Callable[[], Awaitable[bool]]:
    async def setup() -> bool:
        await store.setup()
        return True

    return setup
