"""The batch pipeline: normalize, store, publish, confirm, then settle every message of the batch."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import aio_pika.exceptions
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage
from pymongo.errors import ConnectionFailure
from tenacity import AsyncRetrying, retry_if_exception, stop_never, wait_exponential_jitter

from consumer.amqp.publisher import DeadLetter, OutboundEvent, Publisher
from consumer.core.contract import Inbound, header_text
from consumer.core.errors import Rejection
from consumer.core.normalize import Limits, Normalized
from consumer.core.state import Outcome, job_key
from consumer.runtime import metrics
from consumer.runtime.health import Health
from consumer.settings import Settings
from consumer.store import JobStore, RawBody, StoreConflict
from consumer.vendors import normalize
from schemas.job import EventRecord, JobUpdate

__all__ = ["Pipeline"]

log = logging.getLogger("speechjobs.pipeline")

T = TypeVar("T")
Result = Literal["stored", "duplicate", "ignored", "dead-lettered", "requeued"]

_KEPT_HEADERS = ("x-provider", "x-task-id", "traceparent")


def _transient_store_error(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionFailure | StoreConflict)


def _transient_broker_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        aio_pika.exceptions.AMQPError
        | aiormq.exceptions.AMQPError
        | ConnectionError
        | asyncio.TimeoutError
        | RuntimeError,
    )


@dataclass(slots=True)
class _Item:
    message: AbstractIncomingMessage
    received_at: datetime
    normalized: Normalized | None = None
    rejection: Rejection | None = None
    failure: BaseException | None = None
    result: Result = "stored"
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    transitions: list[str] = field(default_factory=list)


class Pipeline:
    """Processes batches; an input is acked only after its job write, its body's archive and its event's
    logged confirm. Batches write jobs one at a time, in order; the rest of their work overlaps."""

    def __init__(self, settings: Settings, store: JobStore, publisher: Publisher, health: Health) -> None:
        self._settings = settings
        self._store = store
        self._publisher = publisher
        self._health = health
        self._limits = Limits(max_body_bytes=settings.max_body_bytes, max_depth=settings.max_depth)
        self._exchange = settings.inbound_exchange
        self._lease = timedelta(seconds=settings.publish_timeout_s * 3)
        self._writing = asyncio.Lock()  # FIFO: batches write jobs in the order they were cut

    async def until_writer_idle(self) -> None:
        """Wait until no batch is writing jobs: a batch cut now goes straight to the database, fuller."""
        async with self._writing:
            pass

    async def process(
        self, batch: Sequence[AbstractIncomingMessage], *, oldest: Callable[[], bool] = lambda: True
    ) -> None:
        """Process and settle one batch; `oldest` says whether no earlier batch is still unsettled."""
        started = time.perf_counter()
        now = datetime.now(UTC)
        items = [self._normalize(message, now) for message in batch]
        metrics.BATCH_SIZE.observe(len(items))
        try:
            await self._store_and_publish(items)
        except Exception as exc:  # transient faults are retried inside; this is one message's problem
            if len(items) == 1:
                log.exception("message %s failed", items[0].message.message_id)
                items[0].failure = exc
            else:
                log.warning("batch failed, retrying its %d messages one by one", len(items), exc_info=True)
                for item in items:
                    await self._isolated(item)
        await self._settle(items, started, multiple=oldest())

    async def _isolated(self, item: _Item) -> None:
        try:
            await self._store_and_publish([item])
        except Exception as exc:
            log.exception("message %s failed", item.message.message_id)
            item.failure = exc

    def _normalize(self, message: AbstractIncomingMessage, now: datetime) -> _Item:
        item = _Item(message, now)
        inbound = Inbound(message.body, message.routing_key or "", message.headers, message.content_type)
        try:
            item.normalized = normalize(inbound, enabled=self._settings.providers, limits=self._limits)
        except Rejection as exc:
            item.rejection = exc
        except Exception as exc:  # a bug in an adapter: counted redeliveries, then dead-lettered
            log.exception("normalizing message %s failed", message.message_id)
            item.failure = exc
        return item

    async def _store_and_publish(self, items: Sequence[_Item]) -> None:
        updates: list[tuple[JobUpdate, datetime, str]] = []
        owners: list[_Item] = []
        raws: list[RawBody] = []
        for item in items:
            if item.normalized is None or item.failure is not None:
                continue
            for update in item.normalized.updates:
                updates.append((update, item.received_at, item.token))
                owners.append(item)
            if item.normalized.updates:
                raws.append(self._raw(item, item.normalized))
        if not updates:
            return
        async with self._writing:
            outcomes = await self._retry("mongodb", lambda: self._timed_store(updates))
        events: dict[str, tuple[str, OutboundEvent]] = {}
        orphans: set[str] = set()
        for item, outcome in zip(owners, outcomes, strict=True):
            self._account(item, outcome)
            event = outcome.event
            if event is None or event.event_id in events:
                continue
            owned = event.owner == item.token
            if owned or self._may_be_orphaned(item, event):
                job = outcome.job
                traceparent = header_text(item.message.headers, "traceparent")
                events[event.event_id] = (
                    job_key(job.provider, job.task_id),
                    OutboundEvent(event, job.provider, job.kind, traceparent),
                )
                if not owned:
                    orphans.add(event.event_id)
        if orphans:
            published = await self._retry("mongodb", lambda: self._store.published(sorted(orphans)))
            for event_id in orphans & published:
                del events[event_id]
        # The archive is off the job-writing path: it waits on the database while events wait on the broker.
        await asyncio.gather(
            self._retry("mongodb", lambda: self._store.save_raw(raws)), self._publish(events)
        )

    async def _publish(self, events: dict[str, tuple[str, OutboundEvent]]) -> None:
        if not events:
            return
        outbound = [event for _, event in events.values()]
        started = time.perf_counter()
        await self._retry("broker", lambda: self._publisher.publish_events(outbound))
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        confirmed = [(key, eid) for eid, (key, _) in events.items()]
        await self._retry("mongodb", lambda: self._store.confirm(confirmed, datetime.now(UTC)))
        for sent in outbound:
            metrics.EVENTS.labels(sent.provider, sent.record.routing_key).inc()

    def _may_be_orphaned(self, item: _Item, event: EventRecord) -> bool:
        """Whether this delivery must republish another delivery's event, unless its confirm is logged.

        The delivery whose write created the event stays unacked until the confirm is logged, so a
        fresh duplicate arriving meanwhile leaves publishing to it. A redelivery may be that very
        message after a crash, and an event older than the lease means its owner is gone.
        """
        return item.message.redelivered or item.received_at - event.created_at > self._lease

    async def _timed_store(self, updates: list[tuple[JobUpdate, datetime, str]]) -> list[Outcome]:
        started = time.perf_counter()
        try:
            return await self._store.apply(updates)
        finally:
            metrics.DB_SECONDS.observe(time.perf_counter() - started)

    def _account(self, item: _Item, outcome: Outcome) -> None:
        job = outcome.job
        if outcome.kind in ("new", "transition"):
            item.transitions.append(f"{job.task_id}:{job.status.value}")
            metrics.TRANSITIONS.labels(job.provider, job.status.value).inc()
        if not outcome.changed:
            metrics.DUPLICATES.labels(job.provider).inc()

    def _raw(self, item: _Item, normalized: Normalized) -> RawBody:
        message = item.message
        headers = {h: v for h in _KEPT_HEADERS if (v := header_text(message.headers, h)) is not None}
        return RawBody(
            sha256=normalized.body_sha256,
            body=message.body,
            routing_key=message.routing_key or "",
            content_type=message.content_type,
            headers=headers,
            provider=normalized.provider,
            task_ids=tuple(dict.fromkeys(u.task_id for u in normalized.updates)),
            received_at=item.received_at,
        )

    async def _settle(self, items: Sequence[_Item], started: float, *, multiple: bool) -> None:
        for item in items:
            message = item.message
            if item.failure is not None:
                deliveries = _deliveries(message)
                if deliveries < self._settings.max_deliveries:
                    item.result = "requeued"
                    await _settle_one(message.nack(requeue=True))
                    continue
                item.rejection = Rejection(
                    "processing-failed",
                    f"{type(item.failure).__name__} on each of {deliveries} deliveries",
                )
            if item.rejection is not None:
                await self._dead_letter(item)
                item.result = "dead-lettered"
            elif item.normalized is not None and item.normalized.ignored:
                item.result = "ignored"
            elif item.normalized is not None and not item.transitions:
                item.result = "duplicate"
        unsettled = [i for i in items if i.result != "requeued"]
        if multiple and unsettled and len(unsettled) == len(items):
            await _settle_one(items[-1].message.ack(multiple=True))
        else:
            for item in unsettled:
                await _settle_one(item.message.ack())
        elapsed = time.perf_counter() - started
        for item in items:
            self._log(item, elapsed)

    async def _dead_letter(self, item: _Item) -> None:
        assert item.rejection is not None
        message = item.message
        letter = DeadLetter(
            body=message.body,
            routing_key=message.routing_key or "",
            exchange=message.exchange or self._exchange,
            headers=dict(message.headers),
            content_type=message.content_type,
            message_id=message.message_id,
            rejection=item.rejection,
            deliveries=_deliveries(message),
        )
        await self._retry("broker", lambda: self._publisher.dead_letter(letter))
        metrics.DEAD_LETTERS.labels(item.rejection.reason).inc()

    def _log(self, item: _Item, elapsed: float) -> None:
        normalized = item.normalized
        provider = (
            normalized.provider if normalized else (item.rejection.provider if item.rejection else None)
        )
        extra = {
            "outcome": item.result,
            "message_id": item.message.message_id,
            "routing_key": item.message.routing_key,
            "provider": provider,
            "task_ids": sorted({u.task_id for u in normalized.updates}) if normalized else [],
            "transitions": item.transitions,
            "duration_ms": round(elapsed * 1000, 2),
        }
        metrics.MESSAGES.labels(provider or "unknown", item.result).inc()
        metrics.PROCESSING_SECONDS.observe(elapsed)
        if item.rejection is not None:
            extra |= {"reason": item.rejection.reason, "error": item.rejection.message}
            log.warning("message dead-lettered", extra=extra)
        elif item.result == "ignored" and normalized is not None:
            log.info("message ignored: %s", normalized.ignored, extra=extra)
        else:
            log.info("message %s", item.result, extra=extra)

    async def _retry(self, component: str, call: Callable[[], Awaitable[T]]) -> T:
        """Retry transient failures forever with backoff; readiness reports the component as degraded."""
        transient = _transient_store_error if component == "mongodb" else _transient_broker_error
        try:
            result = await call()
        except Exception as exc:
            if not transient(exc):
                raise
            self._degraded(component, exc)
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(transient),
                wait=wait_exponential_jitter(initial=0.2, max=15, jitter=1),
                stop=stop_never,
                before_sleep=lambda s: self._degraded(
                    component, s.outcome.exception() if s.outcome else None
                ),
                reraise=True,
            ):
                with attempt:
                    result = await call()
        self._health.recovered(component)
        return result

    def _degraded(self, component: str, exc: BaseException | None) -> None:
        reason = f"{component} unavailable: {type(exc).__name__}"
        if self._health.degrade(component, reason):
            log.warning("%s, retrying with backoff", reason)


async def _settle_one(settle: Awaitable[None]) -> None:
    try:
        await settle
    except (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, RuntimeError, ConnectionError):
        # The channel went away with the connection: the broker redelivers, and redeliveries are idempotent.
        log.warning("could not settle a message, the broker will redeliver it")


def _deliveries(message: AbstractIncomingMessage) -> int:
    """This delivery's number: quorum queues count earlier deliveries in x-delivery-count."""
    count = message.headers.get("x-delivery-count")
    if isinstance(count, int):
        return count + 1
    return 2 if message.redelivered else 1
