"""In-memory JobStore stand-in (benchmark only): the same state machine, no database round trips."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from consumer.core.state import MAX_RESULTS, Outcome, apply, job_key
from consumer.store import RawBody
from schemas.job import Job, JobUpdate, Provider

__all__ = ["MemoryStore"]


class MemoryStore:
    """Implements consumer.store.JobStore with dicts; one writer, so no version conflicts can happen.

    Jobs are kept serialized, as a database keeps them: a heap of live models would make the garbage
    collector, not the pipeline, set the latency.
    """

    def __init__(self, *, max_results: int = MAX_RESULTS) -> None:
        self._max_results = max_results
        self.jobs: dict[str, bytes] = {}
        self.raw: dict[str, tuple[RawBody, set[str]]] = {}
        self.confirmed: dict[str, datetime] = {}
        self.tracked: dict[str, datetime] = {}  # job key -> first poll due

    async def setup(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def track(self, jobs: Sequence[tuple[Provider, str]], *, now: datetime, due_at: datetime) -> None:
        for provider, task_id in jobs:
            self.tracked.setdefault(job_key(provider, task_id), due_at)

    async def apply(self, updates: Sequence[tuple[JobUpdate, datetime, str]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for update, now, owner in updates:
            key = job_key(update.provider, update.task_id)
            current = self._get(key)
            outcome = apply(current, update, now=now, owner=owner, max_results=self._max_results)
            if outcome.changed:
                version = current.version + 1 if current is not None else 1
                self.jobs[key] = (
                    outcome.job.model_copy(update={"version": version}).model_dump_json().encode()
                )
            outcomes.append(outcome)
        return outcomes

    async def confirm(self, events: Sequence[tuple[str, str]], now: datetime) -> None:
        for _, event_id in events:
            self.confirmed.setdefault(event_id, now)

    async def published(self, event_ids: Sequence[str]) -> set[str]:
        return {event_id for event_id in event_ids if event_id in self.confirmed}

    def _get(self, key: str) -> Job | None:
        raw = self.jobs.get(key)
        return Job.model_validate_json(raw) if raw is not None else None

    async def save_raw(self, bodies: Sequence[RawBody]) -> None:
        for raw in bodies:
            kept = self.raw.get(raw.sha256)
            if kept is None:
                self.raw[raw.sha256] = (raw, set(raw.task_ids))
            else:
                kept[1].update(raw.task_ids)
