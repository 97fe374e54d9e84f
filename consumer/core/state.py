"""The pure job state machine: deduplication, one-way status, result merging and the event to publish."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import orjson
from pydantic import JsonValue

from schemas.event import JobEvent
from schemas.job import EventRecord, HistoryEntry, Job, JobStatus, JobUpdate

__all__ = [
    "HISTORY_MAX",
    "MAX_RESULTS",
    "RESULTS_MAX_BYTES",
    "Duty",
    "Outcome",
    "OutcomeKind",
    "apply",
    "event_id",
    "job_key",
    "publishing_duty",
]

# Fixed forever: event ids must stay stable across releases so subscribers can deduplicate.
_EVENT_NAMESPACE = uuid.UUID("5b0f7c1e-2f4a-4c8e-9d7a-53a7c2b1e0d4")

# A job's document must stay far below MongoDB's 16 MiB, or no write, not even its completion, gets through.
# The history keeps its first entry and the newest ones. Dropping the others is safe: status only moves
# forward by rank, so a forgotten lower or terminal state that comes again is recorded as not applied; a
# forgotten state of the same rank could move the job back, so once the history is full an unseen state of
# the current rank is recorded as not applied too (a higher rank, completion included, always applies).
HISTORY_MAX = 64
# Results merge across updates: each update's are bounded by normalize, their union by these. The results
# are stored twice (in the job and in its event's body).
RESULTS_MAX_BYTES = 4 << 20
MAX_RESULTS = 256  # Limits().max_results; callers with other limits pass theirs

OutcomeKind = Literal["new", "transition", "merged", "duplicate", "late", "conflict"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The job after one update, what happened, and the job's event, if it has one.

    Whether this delivery (re)publishes that event is the pipeline's call: it owns a new event, and
    may have to republish one whose owner is gone unless the store logged its confirm.
    """

    job: Job
    kind: OutcomeKind
    changed: bool
    event: EventRecord | None


Duty = Literal["publish", "publish-unless-confirmed", "none"]


def publishing_duty(
    event: EventRecord, *, delivery: str, redelivered: bool, received_at: datetime, lease: timedelta
) -> Duty:
    """Whether a delivery that met a job's event publishes it: the one rule for the worker and reprocess.

    The delivery whose write created the event owns it and publishes it. Any other delivery leaves it to
    the owner, which stays unacked until the confirm is logged, unless the owner may be gone: this
    delivery is a redelivery (perhaps of the owner itself, after a crash), or the event is older than
    the lease. Then it republishes, unless the store already logged the event's confirm.
    """
    if event.owner == delivery:
        return "publish"
    if redelivered or received_at - event.created_at > lease:
        return "publish-unless-confirmed"
    return "none"


def job_key(provider: str, task_id: str) -> str:
    return f"{provider}:{task_id}"


def event_id(provider: str, task_id: str, status: JobStatus) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{provider}\x1f{task_id}\x1f{status.value}"))


def apply(
    current: Job | None,
    update: JobUpdate,
    *,
    now: datetime,
    owner: str = "",
    max_results: int = MAX_RESULTS,
) -> Outcome:
    """Fold one update into a job.

    A state (status, provider_status) already in the history changes nothing; status only moves
    forward; the first terminal state wins and a conflicting one is only recorded; results merge, up to
    max_results entries and RESULTS_MAX_BYTES, the newer state's first.
    """
    entry = HistoryEntry(
        status=update.status,
        provider_status=update.provider_status,
        at=now,
        body_sha256=update.origin.body_sha256,
        channel=update.origin.channel,
        applied=True,
    )
    if current is None:
        job = _with_event(_new_job(update, entry, now, max_results), now, owner)
        return Outcome(job, "new", True, job.event)

    seen = any(
        h.status == update.status and h.provider_status == update.provider_status for h in current.history
    )
    forward = update.status.rank > current.status.rank or (
        update.status.rank == current.status.rank
        and not seen
        and not current.status.terminal
        and len(current.history) < HISTORY_MAX
    )
    if forward:
        job = current.model_copy(
            update={
                "status": update.status,
                "provider_status": update.provider_status,
                "source": update.source,
                "error": update.error,
                "results": _merged(current.results, update.results, max_results=max_results),
                "history": _recorded(current.history, entry),
                **_filled(current, update),
            }
        )
        job = _with_event(job, now, owner)
        kind: OutcomeKind = "transition"
    elif update.status.terminal and current.status.terminal and update.status != current.status:
        history = (
            current.history
            if seen
            else _recorded(current.history, entry.model_copy(update={"applied": False}))
        )
        job = current.model_copy(update={"history": history})
        kind = "conflict"
    else:
        # Same state again, or a late one: keep what is known, fill gaps. A late update never
        # overwrites a result a newer state already delivered.
        results = (
            _merged(current.results, update.results, max_results=max_results)
            if update.status.rank == current.status.rank
            else _merged(update.results, current.results, max_results=max_results)
        )
        history = (
            current.history
            if seen
            else _recorded(current.history, entry.model_copy(update={"applied": False}))
        )
        job = current.model_copy(
            update={
                "results": results,
                "history": history,
                "error": current.error or (update.error if update.status == current.status else None),
                **_filled(current, update),
            }
        )
        kind = "merged" if update.status.rank == current.status.rank else "late"
    if job == current:
        return Outcome(current, "duplicate", False, current.event)
    job = job.model_copy(update={"updated_at": now})
    return Outcome(job, kind, True, job.event)


def _new_job(update: JobUpdate, entry: HistoryEntry, now: datetime, max_results: int) -> Job:
    job = Job(
        **update.model_dump(exclude={"origin"}),
        history=(entry,),
        created_at=now,
        updated_at=now,
    )
    if len(job.results) > max_results:
        job = job.model_copy(update={"results": _merged({}, job.results, max_results=max_results)})
    return job


def _recorded(history: tuple[HistoryEntry, ...], entry: HistoryEntry) -> tuple[HistoryEntry, ...]:
    """The history with `entry` added: the first entry and the newest, HISTORY_MAX in all."""
    if len(history) < HISTORY_MAX:
        return (*history, entry)
    return (history[0], *history[len(history) - HISTORY_MAX + 2 :], entry)


def _merged(
    base: dict[str, JsonValue], winner: dict[str, JsonValue], *, max_results: int
) -> dict[str, JsonValue]:
    """{**base, **winner} within max_results entries and RESULTS_MAX_BYTES: the winner's entries are kept
    first, then the base's in order."""
    merged = {**base, **winner}
    # One side alone is one update's results (bounded by normalize) or what is stored: only a count to check.
    if len(merged) <= max_results and (not base or not winner or _size(merged) <= RESULTS_MAX_BYTES):
        return merged
    budget = RESULTS_MAX_BYTES
    kept: set[str] = set()
    for key in (*winner, *(key for key in base if key not in winner)):
        size = len(key) + _size(merged[key])
        if size <= budget:
            kept.add(key)
            budget -= size
            if len(kept) == max_results:
                break
    return {key: value for key, value in merged.items() if key in kept}


def _size(value: JsonValue | Mapping[str, JsonValue]) -> int:
    return len(orjson.dumps(value))


def _filled(current: Job, update: JobUpdate) -> dict[str, object]:
    """Fields that only ever go from unknown to known."""
    filled: dict[str, object] = {}
    for name in ("task_key", "submitted_at", "started_at", "finished_at"):
        if getattr(current, name) is None and getattr(update, name) is not None:
            filled[name] = getattr(update, name)
    if current.user_data is None and update.user_data is not None:
        filled["user_data"] = update.user_data
    if update.reported_at and (current.reported_at is None or update.reported_at > current.reported_at):
        filled["reported_at"] = update.reported_at
    return filled


def _with_event(job: Job, now: datetime, owner: str) -> Job:
    """Attach the terminal event the first time a job becomes terminal."""
    if not job.status.terminal or job.event is not None:
        return job
    event_type: Literal["job.completed", "job.failed"] = (
        "job.completed" if job.status is JobStatus.COMPLETED else "job.failed"
    )
    results: dict[str, JsonValue] = dict(job.results)
    event = JobEvent(
        event_id=event_id(job.provider, job.task_id, job.status),
        type=event_type,
        occurred_at=now,
        provider=job.provider,
        task_id=job.task_id,
        status=job.status,
        provider_status=job.provider_status,
        kind=job.kind,
        task_key=job.task_key,
        user_data=job.user_data,
        error=job.error,
        results=results,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
    record = EventRecord(
        event_id=event.event_id,
        routing_key=event_type,
        body=event.model_dump_json(),
        created_at=now,
        owner=owner,
    )
    return job.model_copy(update={"event": record})
