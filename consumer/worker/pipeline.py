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

import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage
from bson.errors import InvalidDocument
from pymongo.errors import ConnectionFailure, DocumentTooLarge, PyMongoError, WTimeoutError
from tenacity import AsyncRetrying, retry_if_exception, stop_never, wait_exponential_jitter

from consumer.amqp.connection import TRANSIENT
from consumer.amqp.publisher import DeadLetter, EventPublisher, OutboundEvent
from consumer.core.contract import (
    DELIVERY_COUNT,
    INBOUND_HEADERS,
    TRACEPARENT,
    Inbound,
    header_text,
    valid_traceparent,
)
from consumer.core.errors import Reason, Rejection, error_name
from consumer.core.normalize import Limits, Normalized
from consumer.core.state import Outcome, job_key, publishing_duty
from consumer.runtime import logs, metrics, tracing
from consumer.runtime.health import Health
from consumer.settings import AmqpSettings, ConsumerSettings, LimitsSettings
from consumer.store import JobStore, RawBody, StoreConflict
from consumer.vendors import normalize
from schemas.job import JobUpdate

__all__ = ["Pipeline", "transient_broker_error", "transient_store_error"]

log = logging.getLogger("speechjobs.pipeline")

T = TypeVar("T")
_Result = Literal["stored", "duplicate", "ignored", "dead-lettered", "requeued"]


def transient_store_error(exc: BaseException) -> bool:
    """Worth another attempt: the server unreachable or failing over, a write concern timing out, or
    other replicas winning every version race of a batch."""
    if isinstance(exc, ConnectionFailure | WTimeoutError | StoreConflict):
        return True
    return isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError")


_KEPT_HEADER_CHARS = 512

_RETRIED_BROKER_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT, aiormq.exceptions.DeliveryError)


def transient_broker_error(exc: BaseException) -> bool:
    """Worth another attempt: the connection or channel gone, a confirm late, an event returned or nacked
    (it waits until a subscriber's queue or the unrouted queue takes it)."""
    return isinstance(exc, _RETRIED_BROKER_ERRORS)


@dataclass(slots=True)
class _Item:
    message: AbstractIncomingMessage
    received_at: datetime
    normalized: Normalized | None = None
    rejection: Rejection | None = None
    failure: BaseException | None = None
    result: _Result = "stored"
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    transitions: list[str] = field(default_factory=list)


class Pipeline:
    """Processes batches; an input is acked only after its job write, its body's archive and its event's
    logged confirm. Batches write jobs one at a time, in order; the rest of their work overlaps."""

    def __init__(
        self,
        amqp: AmqpSettings,
        consumer: ConsumerSettings,
        limits: LimitsSettings,
        *,
        store: JobStore,
        publisher: EventPublisher,
        health: Health,
        first_poll_s: float = 60,
    ) -> None:
        self._providers = consumer.providers
        self._first_poll = timedelta(seconds=first_poll_s)
        self._max_deliveries = consumer.max_deliveries
        self._store = store
        self._publisher = publisher
        self._health = health
        self._limits = Limits.of(limits)
        self._exchange = amqp.inbound_exchange
        self._queue = consumer.inbound_queue
        self._lease = timedelta(seconds=amqp.publish_timeout_s * 3)
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
        trace = tracing.Batch(batch, queue=self._queue) if tracing.enabled else None
        items = [self._normalize(message, now) for message in batch]
        metrics.BATCH_SIZE.observe(len(items))
        try:
            await self._store_and_publish(items, trace)
        except Exception as exc:  # transient faults are retried inside; this is one message's problem
            if len(items) == 1:
                self._failed(items[0], exc)
            else:
                log.warning(
                    "batch failed (%s), retrying its %d messages one by one", error_name(exc), len(items)
                )
                for item in items:
                    await self._isolated(item, trace)
        await self._settle(items, started, multiple=oldest())
        if trace is not None:
            trace.end((i.message, i.result, i.rejection.reason if i.rejection else None) for i in items)

    async def _isolated(self, item: _Item, trace: tracing.Batch | None) -> None:
        try:
            await self._store_and_publish([item], trace)
        except Exception as exc:
            self._failed(item, exc)

    def _failed(self, item: _Item, exc: Exception) -> None:
        """A failure of one message: the database refusing what the body made is the input's fault and is
        dead-lettered now; anything else is redelivered up to the limit."""
        if isinstance(exc, InvalidDocument | DocumentTooLarge):
            reason: Reason = "too-large" if isinstance(exc, DocumentTooLarge) else "invalid-payload"
            item.rejection = Rejection(reason, f"the database refused the job: {error_name(exc)}")
            if item.normalized is not None:
                item.rejection.provider = item.normalized.provider
            return
        log.exception("message %s failed", item.message.message_id)
        item.failure = exc

    def _normalize(self, message: AbstractIncomingMessage, now: datetime) -> _Item:
        item = _Item(message, now)
        inbound = Inbound(message.body, message.routing_key or "", message.headers, message.content_type)
        try:
            item.normalized = normalize(inbound, enabled=self._providers, limits=self._limits)
        except Rejection as exc:
            item.rejection = exc.detached()
        except Exception as exc:  # a bug in an adapter: counted redeliveries, then dead-lettered
            log.exception("normalizing message %s failed", message.message_id)
            item.failure = exc
        return item

    async def _store_and_publish(self, items: Sequence[_Item], trace: tracing.Batch | None) -> None:
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
            write = self._retry("mongodb", lambda: self._timed_store(updates))
            if trace is not None:  # one span for the write, retries and all, linked to its messages
                write = trace.writing([item.message for item in owners], len(updates), write)
            outcomes = await write
        tracked = [(u.provider, u.task_id) for u, _, _ in updates if u.origin.channel == "track"]
        if tracked:
            now = datetime.now(UTC)
            due = now + self._first_poll
            await self._retry("mongodb", lambda: self._store.track(tracked, now=now, due_at=due))
        events: dict[str, tuple[str, OutboundEvent]] = {}
        orphans: set[str] = set()
        for item, outcome in zip(owners, outcomes, strict=True):
            self._account(item, outcome)
            event = outcome.event
            if event is None or event.event_id in events:
                continue
            duty = publishing_duty(
                event,
                delivery=item.token,
                redelivered=bool(item.message.redelivered),
                received_at=item.received_at,
                lease=self._lease,
            )
            if duty != "none":
                job = outcome.job
                traceparent = (
                    valid_traceparent(header_text(item.message.headers, TRACEPARENT))
                    if trace is None
                    else trace.traceparent(item.message)  # the event's PRODUCER span is its child
                )
                events[event.event_id] = (
                    job_key(job.provider, job.task_id),
                    OutboundEvent(event, job.provider, job.kind, traceparent),
                )
                if duty == "publish-unless-confirmed":
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
        # Kept to re-normalize the body later: the contract's headers, each as long as a valid one can be.
        headers = {
            h: v[:_KEPT_HEADER_CHARS]
            for h in INBOUND_HEADERS
            if (v := header_text(message.headers, h)) is not None
        }
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
                if deliveries < self._max_deliveries:
                    item.result = "requeued"
                    await _settle_one(message, "nack", message.nack(requeue=True))
                    continue
                item.rejection = Rejection(
                    "processing-failed",
                    f"{error_name(item.failure)} on each of {deliveries} deliveries",
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
            last = items[-1].message
            await _settle_one(last, "ack", last.ack(multiple=True))
        else:
            for item in unsettled:
                await _settle_one(item.message, "ack", item.message.ack())
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
            logs.outcome(log, f"message ignored: {normalized.ignored}", extra)
        else:
            logs.outcome(log, f"message {item.result}", extra)

    async def _retry(self, component: str, call: Callable[[], Awaitable[T]]) -> T:
        """Retry transient failures forever with backoff; readiness reports the component as degraded."""
        transient = transient_store_error if component == "mongodb" else transient_broker_error
        try:
            result = await call()
        except Exception as exc:
            if not transient(exc):
                raise
            self._degraded(component, exc)
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(transient),
                wait=wait_exponential_jitter(multiplier=0.2, max=15, jitter=1),
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
        if component == "broker":  # once per failed attempt: the alert's sign that publishing is stuck
            metrics.PUBLISH_FAILURES.inc()
        self._health.degrade(component, error_name(exc) if exc is not None else "unknown error")


_SETTLE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT, aiormq.exceptions.AMQPError)


async def _settle_one(message: AbstractIncomingMessage, verb: str, settle: Awaitable[None]) -> None:
    try:
        await settle
    except _SETTLE_ERRORS as exc:
        # The channel went away with the connection: the broker redelivers, and redeliveries are idempotent.
        log.warning(
            "could not %s message %s (%s), the broker will redeliver it",
            verb,
            message.message_id,
            error_name(exc),
            extra={"message_id": message.message_id, "delivery_tag": message.delivery_tag},
        )


def _deliveries(message: AbstractIncomingMessage) -> int:
    """This delivery's number: quorum queues count earlier deliveries in x-delivery-count."""
    count = message.headers.get(DELIVERY_COUNT)
    if isinstance(count, int):
        return count + 1
    return 2 if message.redelivered else 1
