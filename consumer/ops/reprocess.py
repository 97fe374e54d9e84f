"""Reprocess stored raw bodies after a parser fix, through the same dedup and state rules as the service."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.amqp.connection import declare_events, open_connection
from consumer.amqp.publisher import OutboundEvent, Publisher
from consumer.core.contract import TRACEPARENT, Inbound, header_text
from consumer.core.errors import Rejection
from consumer.core.normalize import Limits
from consumer.core.state import Outcome, apply, job_key, publishing_duty
from consumer.settings import Settings
from consumer.store.mongo import MongoStore
from consumer.vendors import normalize
from schemas.job import Job, JobUpdate

__all__ = ["ReprocessReport", "reprocess"]


@dataclass(slots=True)
class ReprocessReport:
    bodies: int = 0
    updates: int = 0
    transitions: int = 0
    events: int = 0
    rejected: int = 0
    ignored: int = 0
    not_kept: int = 0


async def reprocess(
    settings: Settings,
    *,
    provider: str | None = None,
    since: datetime | None = None,
    task_id: str | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> ReprocessReport:
    """Re-normalize stored raw bodies, oldest first, through the same state rules as the service."""
    store = MongoStore.from_settings(settings.mongodb, settings.consumer, settings.limits)
    connection = None
    try:
        publisher = None
        if not dry_run:
            connection = await open_connection(settings.amqp, name="speechjobs-reprocess")
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            events = await declare_events(channel, settings.amqp)
            publisher = Publisher(channel, events, None, timeout=settings.amqp.publish_timeout_s)
        run = _Reprocess(settings, store, publisher, say)
        async for doc in store.raw_bodies(provider=provider, since=since, task_id=task_id):
            await run.body(doc)
        return run.report
    finally:
        if connection is not None:
            await connection.close()
        await store.close()


class _Reprocess:
    """One pass; without a publisher it is a dry run that folds updates into an in-memory copy."""

    def __init__(
        self, settings: Settings, store: MongoStore, publisher: Publisher | None, say: Callable[[str], None]
    ) -> None:
        self._providers = settings.consumer.providers
        self._store = store
        self._publisher = publisher
        self._say = say
        self._limits = Limits.of(settings.limits)
        self._lease = timedelta(seconds=settings.amqp.publish_timeout_s * 3)
        self._simulated: dict[str, Job | None] = {}
        self.report = ReprocessReport()

    async def body(self, doc: Mapping[str, Any]) -> None:
        report = self.report
        report.bodies += 1
        name = f"{str(doc['sha256'])[:12]} ({doc.get('provider')})"
        if doc.get("body") is None:
            report.not_kept += 1
            self._say(f"{name}: body over the size cap was not kept, skipped")
            return
        headers = doc.get("headers") or {}
        inbound = Inbound(bytes(doc["body"]), doc.get("routing_key") or "", headers, doc.get("content_type"))
        try:
            normalized = normalize(inbound, enabled=self._providers, limits=self._limits)
        except Rejection as exc:
            report.rejected += 1
            self._say(f"{name}: rejected: {exc.reason}: {exc.message}")
            return
        if normalized.ignored:
            report.ignored += 1
            return
        token = uuid.uuid4().hex
        now: datetime = doc["received_at"]  # the client is tz_aware
        updates = [(update, now, token) for update in normalized.updates]
        keys = list(dict.fromkeys(job_key(u.provider, u.task_id) for u in normalized.updates))
        before = await self._statuses(keys)
        if self._publisher is None:
            outcomes = self._simulate(updates)
        else:
            outcomes = await self._store.apply(updates)
        # Per job: its last changed outcome and, for a new transition, the one event it owes.
        changed: dict[str, Outcome] = {}
        events: dict[str, OutboundEvent] = {}
        orphans: dict[str, str] = {}  # event id -> job key, for events another delivery created
        for outcome in outcomes:
            job = outcome.job
            key = job_key(job.provider, job.task_id)
            if outcome.changed:
                report.updates += 1
                changed[key] = outcome
            if outcome.kind in ("new", "transition"):
                report.transitions += 1
            event = outcome.event
            if event is None:
                continue
            duty = publishing_duty(
                event, delivery=token, redelivered=False, received_at=now, lease=self._lease
            )
            if duty != "none":
                traceparent = header_text(headers, TRACEPARENT)
                events[key] = OutboundEvent(event, job.provider, job.kind, traceparent)
                if duty == "publish-unless-confirmed":
                    orphans[event.event_id] = key
        if orphans:
            for event_id in await self._store.published(list(orphans)):
                events.pop(orphans[event_id], None)
        verb = "would update" if self._publisher is None else "updated"
        for key, outcome in changed.items():
            note = f" (event {events[key].record.routing_key})" if key in events else ""
            self._say(f"{verb} {key}: {before.get(key) or 'new'} -> {outcome.job.status.value}{note}")
        await self._publish(events)

    async def _statuses(self, keys: list[str]) -> dict[str, str]:
        if self._publisher is None:
            await self._load(keys)
            return {k: job.status.value for k in keys if (job := self._simulated[k]) is not None}
        return {key: job.status.value for key, job in (await self._store.jobs_by_key(keys)).items()}

    async def _load(self, keys: list[str]) -> None:
        missing = [k for k in keys if k not in self._simulated]
        found = await self._store.jobs_by_key(missing)
        for key in missing:
            self._simulated[key] = found.get(key)

    def _simulate(self, updates: list[tuple[JobUpdate, datetime, str]]) -> list[Outcome]:
        outcomes = []
        for update, now, owner in updates:
            key = job_key(update.provider, update.task_id)
            outcome = apply(
                self._simulated[key], update, now=now, owner=owner, max_results=self._limits.max_results
            )
            self._simulated[key] = outcome.job
            outcomes.append(outcome)
        return outcomes

    async def _publish(self, events: dict[str, OutboundEvent]) -> None:
        if not events:
            return
        if self._publisher is not None:
            await self._publisher.publish_events(list(events.values()))
            confirmed = [(key, event.record.event_id) for key, event in events.items()]
            await self._store.confirm(confirmed, datetime.now(UTC))
        self.report.events += len(events)
