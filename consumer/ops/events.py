"""Replaying stored jobs' terminal events to one subscriber's queue, as the pipeline first published them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection

# The properties the pipeline publishes an event with (headers, message_id = event id, persistent):
# reused, so that a replayed event cannot drift from the original.
from consumer.amqp.publisher import OutboundEvent, event_properties
from consumer.settings import Settings
from consumer.store.mongo import MongoStore
from schemas.job import JobStatus

__all__ = [
    "TERMINAL",
    "EventSelection",
    "QueueMissing",
    "QueueUnusable",
    "ReplayReport",
    "replay_events",
]

log = logging.getLogger("speechjobs.events")

TERMINAL: tuple[JobStatus, ...] = tuple(status for status in JobStatus if status.terminal)

_WINDOW = 128  # publishes awaiting their confirm at once: pipelined, not one round trip each
_CHUNK = 500  # jobs read from the store at a time


class QueueMissing(Exception):
    """The subscriber's queue does not exist: an event sent there would be returned unroutable."""


class QueueUnusable(Exception):
    """The broker refused to let this connection check the queue (exclusive to another, no access)."""


@dataclass(frozen=True, slots=True)
class EventSelection:
    """Which stored jobs' events a replay sends: every criterion must hold."""

    since: datetime  # updated at or after
    provider: str | None = None
    statuses: tuple[JobStatus, ...] = TERMINAL


@dataclass(slots=True)
class ReplayReport:
    matched: int = 0
    published: int = 0  # in a dry run: would be published
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why the run ended early, if it did


async def replay_events(
    settings: Settings,
    selection: EventSelection,
    queue: str,
    *,
    rate: float | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] = lambda done, total: None,
    say: Callable[[str], None] = lambda line: None,
) -> ReplayReport:
    """Publish each selected terminal job's stored event, byte for byte, to `queue` by the default exchange.

    The body is the event record the pipeline published (and republishes on every retry), with the same
    properties, so subscribers deduplicate a replayed event on its event_id like any redelivery. Only a
    `traceparent` header is not carried: it came from the input message and is not stored. The keys are
    read first and the jobs fetched as they are sent: the run covers the jobs that matched when it began,
    each once, however long it is paced.
    """
    started = time.monotonic()
    report = ReplayReport()
    async with _subscriber_queue(settings, queue) as connection:
        store = MongoStore.from_settings(settings.mongodb, settings.consumer, settings.limits)
        try:
            keys = await store.job_keys(
                provider=selection.provider,
                statuses=[status.value for status in selection.statuses],
                since=selection.since,
            )
            report.matched = len(keys)
            shown = -1

            def tick() -> None:
                # Each count once: a count shown again would be a second line where stderr is no terminal.
                nonlocal shown
                done = report.published + report.skipped + report.failed
                if done != shown and report.matched:
                    shown = done
                    progress(done, report.matched)

            sender = None
            if not dry_run:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                sender = _Sender(channel, queue, settings.amqp.publish_timeout_s, report)
            pace = _Pace(None if dry_run else rate)
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                jobs = await store.jobs_by_key(chunk)
                for key in chunk:
                    if report.stopped is not None:
                        break
                    job = jobs.get(key)
                    if job is None or job.event is None:
                        # Gone (deleted meanwhile), or terminal before events were stored with the job.
                        report.skipped += 1
                        say(f"skipped {key}: no stored event")
                    elif sender is None:
                        report.published += 1
                        say(f"{job.event.event_id}  {job.event.routing_key}  {job.provider}  {job.task_id}")
                    else:
                        await pace.wait()
                        await sender.send(OutboundEvent(job.event, job.provider, job.kind))
                    tick()
                if report.stopped is not None:
                    break
            if sender is not None:
                await sender.drain()
            tick()
        finally:
            await store.close()
    report.seconds = time.monotonic() - started
    return report


class _Pace:
    """At most `rate` starts a second, spaced evenly from the first."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._count = 0
        self._start: float | None = None

    async def wait(self) -> None:
        if not self._rate:
            return
        now = time.monotonic()
        if self._start is None:
            self._start = now
        await asyncio.sleep(max(0.0, self._start + self._count / self._rate - now))
        self._count += 1


class _Sender:
    """Publishes events with up to _WINDOW confirms outstanding, and counts what each publish became."""

    def __init__(self, channel: AbstractChannel, queue: str, timeout: float, report: ReplayReport) -> None:
        self._channel = channel
        self._queue = queue
        self._timeout = timeout
        self._report = report
        self._inflight: set[asyncio.Task[None]] = set()

    async def send(self, event: OutboundEvent) -> None:
        if len(self._inflight) >= _WINDOW:
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
        # Every outcome known by now counts before the next publish: a return stops the run at once.
        for task in [task for task in self._inflight if task.done()]:
            self._inflight.discard(task)
            self._count(task)
        if self._report.stopped is None:
            self._inflight.add(asyncio.create_task(self._publish(event)))

    async def drain(self) -> None:
        if self._inflight:
            done, _ = await asyncio.wait(self._inflight)
            for task in done:
                self._count(task)
            self._inflight = set()

    async def _publish(self, event: OutboundEvent) -> None:
        record = event.record
        channel = await self._channel.get_underlay_channel()
        # The pipeline's own properties; the routing key alone differs: the queue, by the default exchange.
        properties = event_properties(event, datetime.now(UTC))
        try:
            await channel.basic_publish(
                record.body.encode(),
                exchange="",
                routing_key=self._queue,
                properties=properties,
                mandatory=True,
                timeout=self._timeout,
            )
        except aio_pika.exceptions.PublishError:
            # Returned unroutable: the queue was there at the start, so it was deleted since, and every
            # further event would be returned too.
            raise _Unroutable(
                f"event {record.event_id} returned: queue {self._queue} no longer exists"
            ) from None
        except (aio_pika.exceptions.DeliveryError, TimeoutError) as exc:
            # Nacked (a full queue that rejects publishes) or not confirmed in time: this one only.
            raise _NotDelivered(f"event {record.event_id}: {exc!r}") from None

    def _count(self, task: asyncio.Task[None]) -> None:
        report = self._report
        exc = task.exception()
        if exc is None:
            report.published += 1
        elif isinstance(exc, _NotDelivered):
            report.failed += 1
            log.warning("not delivered: %s", exc)
        else:
            # Unroutable, or a lost channel or connection: what is in flight fails with it, and nothing
            # more is sent.
            report.failed += 1
            if report.stopped is None:
                report.stopped = str(exc) if isinstance(exc, _Unroutable) else f"{type(exc).__name__}: {exc}"


class _NotDelivered(Exception):
    """One event the broker did not take: counted as failed, and the run goes on."""


class _Unroutable(Exception):
    """An event returned by the broker: the queue is gone, and the run stops."""


@asynccontextmanager
async def _subscriber_queue(settings: Settings, queue: str) -> AsyncIterator[AbstractConnection]:
    """A connection to the broker, once the queue is known to exist."""
    connection = await aio_pika.connect(
        settings.amqp.amqp_url.get_secret_value(),
        client_properties={"connection_name": "speechjobs-events-replay"},
    )
    try:
        await _check_queue(connection, queue)
        yield connection
    finally:
        await connection.close()


async def _check_queue(connection: AbstractConnection, queue: str) -> None:
    # On a throwaway channel: a passive declare of a missing queue closes its channel.
    probe = await connection.channel(publisher_confirms=False)
    try:
        await probe.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise QueueMissing(queue) from None
    except aio_pika.exceptions.ChannelClosed as exc:
        raise QueueUnusable(f"{queue}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            await probe.close()
