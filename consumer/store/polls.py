"""The poller's schedule in MongoDB: which jobs are polled, when next, and who holds each one's lease."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from consumer.core.state import job_key
from schemas.job import JobStatus, Provider

__all__ = ["HISTORY_KEPT", "NON_TERMINAL", "Claim", "PollStore", "Stopped", "track_operations"]

# Why a job is no longer polled (None while it is).
Stopped = Literal["terminal", "not-found", "max-age"]
NON_TERMINAL = [s.value for s in JobStatus if not s.terminal]
HISTORY_KEPT = 20  # the last polls of a job, for `speechjobs jobs --stuck` and an operator's questions


@dataclass(frozen=True, slots=True)
class Claim:
    """A due job this replica holds the lease of, with what the schedule knows about it."""

    key: str
    provider: Provider
    task_id: str
    reason: str  # "tracked" or "silent"
    since: datetime
    interval_s: float | None  # None before the first poll
    misses: int  # "no such job" answers in a row
    last_status: str | None  # the vendor's state at the last poll


def track_operations(
    jobs: Sequence[tuple[Provider, str]], *, reason: str, now: datetime, due_at: datetime
) -> list[UpdateOne]:
    """Upserts that put jobs on the schedule; a job already on it keeps its schedule and its reason."""
    return [
        UpdateOne(
            {"_id": job_key(provider, task_id)},
            {
                "$setOnInsert": {
                    "provider": provider,
                    "task_id": task_id,
                    "reason": reason,
                    "since": now,
                    "due_at": due_at,
                    "interval_s": None,
                    "misses": 0,
                    "polls": 0,
                    "last_status": None,
                    "stopped": None,
                    "history": [],
                }
            },
            upsert=True,
        )
        for provider, task_id in dict.fromkeys(jobs)
    ]


class PollStore:
    """The `polls` collection beside `jobs`: the poller writes only here; job state is the consumer's."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.polls: AsyncCollection[dict[str, Any]] = db["polls"]
        self.jobs: AsyncCollection[dict[str, Any]] = db["jobs"]

    async def setup(self) -> None:
        # Claims look for the earliest due job of a provider; stopped jobs have no due time.
        await self.polls.create_indexes(
            [IndexModel([("provider", ASCENDING), ("due_at", ASCENDING)], name="provider_due")]
        )

    async def reconcile(
        self, provider: Provider, *, silent_before: datetime, now: datetime, limit: int
    ) -> int:
        """Put this provider's non-terminal jobs without an update since `silent_before` on the schedule,
        due now; return how many were new to it."""
        cursor = self.jobs.find(
            {"provider": provider, "status": {"$in": NON_TERMINAL}, "updated_at": {"$lt": silent_before}},
            {"task_id": 1},
            limit=limit,
        )
        silent = [(provider, doc["task_id"]) async for doc in cursor]
        if not silent:
            return 0
        result = await self.polls.bulk_write(
            track_operations(silent, reason="silent", now=now, due_at=now), ordered=False
        )
        return result.upserted_count

    async def claim(self, provider: Provider, *, owner: str, now: datetime, lease_s: float) -> Claim | None:
        """The earliest due job of the provider whose lease is free, now leased to `owner`; None if none."""
        doc = await self.polls.find_one_and_update(
            {
                "provider": provider,
                "due_at": {"$lte": now},
                "stopped": None,
                "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
            },
            {"$set": {"lease_owner": owner, "lease_until": now + timedelta(seconds=lease_s)}},
            sort=[("due_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        return Claim(
            key=doc["_id"],
            provider=doc["provider"],
            task_id=doc["task_id"],
            reason=doc.get("reason", "tracked"),
            since=doc["since"],
            interval_s=doc.get("interval_s"),
            misses=doc.get("misses", 0),
            last_status=doc.get("last_status"),
        )

    async def next_due(self, provider: Provider) -> datetime | None:
        """When this provider's next job is due (a lease may still hold it then)."""
        doc = await self.polls.find_one(
            {"provider": provider, "stopped": None, "due_at": {"$ne": None}},
            {"due_at": 1},
            sort=[("due_at", ASCENDING)],
        )
        return doc["due_at"] if doc is not None else None

    async def job(self, key: str) -> dict[str, Any] | None:
        """The stored job's status and age, as the consumer last wrote them."""
        return await self.jobs.find_one({"_id": key}, {"status": 1, "created_at": 1})

    async def finish(
        self,
        claim: Claim,
        *,
        owner: str,
        now: datetime,
        due_at: datetime | None,
        interval_s: float | None,
        verdict: str,
        detail: str = "",
        status: str | None = None,
        misses: int = 0,
        stopped: Stopped | None = None,
        polled: bool = True,
    ) -> bool:
        """Record a poll (or a decision not to poll) and free the lease; False if the lease was lost."""
        entry = {"at": now, "verdict": verdict, "detail": detail[:200], "status": status}
        update: dict[str, Any] = {
            "$set": {
                "due_at": None if stopped else due_at,
                "interval_s": interval_s,
                "misses": misses,
                "last_status": status if status is not None else claim.last_status,
                "stopped": stopped,
                "lease_owner": None,
                "lease_until": None,
            },
            "$push": {"history": {"$each": [entry], "$slice": -HISTORY_KEPT}},
        }
        if polled:
            update["$set"]["last_polled_at"] = now
            update["$inc"] = {"polls": 1}
        result = await self.polls.update_one({"_id": claim.key, "lease_owner": owner}, update)
        return result.modified_count == 1

    async def release(self, claim: Claim, *, owner: str, due_at: datetime) -> None:
        """Give a claimed job back unpolled (its vendor is paused), due again at `due_at`."""
        await self.polls.update_one(
            {"_id": claim.key, "lease_owner": owner},
            {"$set": {"due_at": due_at, "lease_owner": None, "lease_until": None}},
        )

    async def stuck(self, *, limit: int) -> list[dict[str, Any]]:
        """Non-terminal jobs, oldest first, each with its schedule entry (or None): `jobs --stuck`."""
        jobs = [
            doc
            async for doc in self.jobs.find(
                {"status": {"$in": NON_TERMINAL}},
                {"provider": 1, "task_id": 1, "status": 1, "created_at": 1, "updated_at": 1},
                sort=[("created_at", ASCENDING)],
                limit=limit,
            )
        ]
        entries = {
            doc["_id"]: doc
            async for doc in self.polls.find({"_id": {"$in": [d["_id"] for d in jobs]}}, {"history": 0})
        }
        return [{**job, "poll": entries.get(job["_id"])} for job in jobs]
