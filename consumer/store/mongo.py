"""MongoDB job store (pymongo's async API): optimistic versioned writes make dedup hold across replicas."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient, IndexModel, InsertOne, ReplaceOne, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from consumer.core.state import MAX_RESULTS, Outcome, apply, job_key
from consumer.settings import ConsumerSettings, LimitsSettings, MongoSettings
from consumer.store.base import RawBody, StoreConflict
from consumer.store.polls import track_operations
from schemas.job import Job, JobUpdate, Provider

__all__ = [
    "DURABLE",
    "MongoStore",
    "NotConfigured",
    "job_document",
    "job_from_document",
    "listing_query",
    "mongo_client",
]

log = logging.getLogger("speechjobs.store")

_DUPLICATE_KEY = 11000

DURABLE = WriteConcern(w="majority", j=True)


class NotConfigured(Exception):
    """The store cannot be built from these settings."""


_RECENT_RAW = 10_000


class MongoStore:
    """Jobs keyed by "provider:task_id"; every write is conditional on the version it read."""

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        database: str,
        *,
        raw_body_max_bytes: int = 262_144,
        raw_retention: timedelta = timedelta(days=30),
        max_attempts: int = 20,
        raw_chunk_max_bytes: int = 8 << 20,  # of kept bodies: well under MongoDB's 16 MiB document limit
        write_concern: WriteConcern = DURABLE,
        max_results: int = MAX_RESULTS,
    ) -> None:
        self.client = client
        # Every write an ack depends on waits for the journal: a server that acknowledged a write only
        # in memory loses it when it dies, after the message was acked.
        db = client.get_database(database, write_concern=write_concern)
        self.jobs: AsyncCollection[dict[str, Any]] = db["jobs"]
        self.raw: AsyncCollection[dict[str, Any]] = db["raw_bodies"]
        # Confirms are inserted into a log of their own, not set on the job: an insert of a small
        # document costs a fraction of rewriting the job, and never races the job's versioned writes.
        self.published_events: AsyncCollection[dict[str, Any]] = db["published_events"]
        self.polls: AsyncCollection[dict[str, Any]] = db["polls"]
        self._raw_max = raw_body_max_bytes
        self._chunk_max = raw_chunk_max_bytes
        self._retention = raw_retention
        self._max_attempts = max_attempts
        self._max_results = max_results
        self._recent_raw: dict[str, None] = {}  # insertion-ordered: the oldest goes first

    @classmethod
    def from_settings(
        cls, mongodb: MongoSettings, consumer: ConsumerSettings, limits: LimitsSettings
    ) -> MongoStore:
        return cls(
            mongo_client(mongodb),
            mongodb.mongodb_database,
            raw_body_max_bytes=consumer.raw_body_max_bytes,
            raw_retention=timedelta(days=consumer.raw_retention_days),
            write_concern=WriteConcern(w=mongodb.write_concern_w(), j=mongodb.mongodb_journal),
            max_results=limits.max_results,
        )

    async def close(self) -> None:
        await self.client.close()

    async def setup(self) -> None:
        # No index on (provider, task_id): the _id "provider:task_id" is already unique and finds a job,
        # and every index costs each job write.
        await self.jobs.create_indexes(
            [
                IndexModel([("status", 1), ("updated_at", -1)], name="status_updated"),
                # `jobs list` and `events replay` page in (updated_at, _id) order: with this index a page
                # reads only its own documents, where without it every page would sort the whole collection.
                IndexModel([("updated_at", 1), ("_id", 1)], name="updated"),
            ]
        )
        # A reprocess by provider walks `retention` by time and filters; one by task uses `task_ids`.
        await self.raw.create_indexes(
            [
                IndexModel(
                    [("received_at", 1)],
                    name="retention",
                    expireAfterSeconds=int(self._retention.total_seconds()),
                ),
                IndexModel([("task_ids", 1)], name="task_ids"),
            ]
        )

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def track(self, jobs: Sequence[tuple[Provider, str]], *, now: datetime, due_at: datetime) -> None:
        if jobs:
            await self.polls.bulk_write(track_operations(jobs, reason="tracked", now=now, due_at=due_at))

    async def apply(self, updates: Sequence[tuple[JobUpdate, datetime, str]]) -> list[Outcome]:
        """Apply (update, received_at, owner) in order; one job's updates in a batch fold into one write."""
        groups: dict[str, list[int]] = {}
        for index, (update, _, _) in enumerate(updates):
            groups.setdefault(job_key(update.provider, update.task_id), []).append(index)
        outcomes: list[Outcome | None] = [None] * len(updates)
        pending = list(groups)
        for _ in range(self._max_attempts):
            current = {doc["_id"]: doc async for doc in self.jobs.find({"_id": {"$in": pending}})}
            ops: list[InsertOne[dict[str, Any]] | ReplaceOne[dict[str, Any]]] = []
            op_keys: list[str] = []
            for key in pending:
                doc = current.get(key)
                before = job_from_document(doc) if doc is not None else None
                job = before
                for index in groups[key]:
                    update, now, owner = updates[index]
                    outcome = apply(job, update, now=now, owner=owner, max_results=self._max_results)
                    outcomes[index] = outcome
                    job = outcome.job
                if job is None or job is before:
                    continue
                if before is None:
                    ops.append(InsertOne(job_document(key, job.model_copy(update={"version": 1}))))
                else:
                    new = job.model_copy(update={"version": before.version + 1})
                    # upsert turns "someone else wrote first" into a duplicate-key error on this op.
                    ops.append(
                        ReplaceOne(
                            {"_id": key, "version": before.version}, job_document(key, new), upsert=True
                        )
                    )
                op_keys.append(key)
            pending = await self._write(ops, op_keys)
            if not pending:
                return [o for o in outcomes if o is not None]
            log.debug("version conflict on %d job(s), retrying", len(pending))
        raise StoreConflict(f"{len(pending)} job(s) still conflicting after {self._max_attempts} attempts")

    async def _write(self, ops: Sequence[InsertOne[Any] | ReplaceOne[Any]], keys: Sequence[str]) -> list[str]:
        if not ops:
            return []
        return [keys[index] for index in await _write_first_wins(self.jobs, ops)]

    async def jobs_by_key(self, keys: Sequence[str]) -> dict[str, Job]:
        """The stored jobs among `keys` ("provider:task_id")."""
        cursor = self.jobs.find({"_id": {"$in": list(keys)}})
        return {doc["_id"]: job_from_document(doc) async for doc in cursor}

    async def confirm(self, events: Sequence[tuple[str, str]], now: datetime) -> None:
        """Log the broker's confirm of (job key, event id) pairs; an event confirmed twice is logged once."""
        if not events:
            return
        docs = [{"_id": event_id, "job_id": key, "confirmed_at": now} for key, event_id in events]
        await _write_first_wins(self.published_events, [InsertOne(doc) for doc in docs])

    async def published(self, event_ids: Sequence[str]) -> set[str]:
        """The ids among `event_ids` whose confirm is logged."""
        if not event_ids:
            return set()
        cursor = self.published_events.find({"_id": {"$in": list(event_ids)}}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}

    async def confirmations(self, event_ids: Sequence[str]) -> dict[str, datetime]:
        """When the broker's confirm of each of `event_ids` was logged, for those whose confirm is."""
        if not event_ids:
            return {}
        cursor = self.published_events.find({"_id": {"$in": list(event_ids)}}, {"confirmed_at": 1})
        return {doc["_id"]: doc["confirmed_at"] async for doc in cursor}

    async def job_page(
        self,
        *,
        provider: str | None = None,
        statuses: Sequence[str] = (),
        since: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int,
    ) -> list[Job]:
        """Up to `limit` matching jobs in (updated_at, key) order, after the (updated_at, key) cursor."""
        cursor = self.jobs.find(listing_query(provider, statuses, since, after)).sort(_LISTING_ORDER)
        return [job_from_document(doc) async for doc in cursor.limit(limit)]

    async def job_keys(
        self, *, provider: str | None = None, statuses: Sequence[str] = (), since: datetime | None = None
    ) -> list[str]:
        """The keys of every matching job, in (updated_at, key) order."""
        cursor = self.jobs.find(listing_query(provider, statuses, since, None), {"_id": 1})
        return [doc["_id"] async for doc in cursor.sort(_LISTING_ORDER)]

    async def save_raw(self, bodies: Sequence[RawBody]) -> None:
        """Archive the bodies not seen lately, a batch's bodies in one document (a chunk).

        One document a batch rather than one a body: the indexes are paid once per chunk, which
        matters on the hottest insert there is. A vendor's identical retry (same sha256) is skipped.
        """
        fresh = {b.sha256: b for b in bodies if b.sha256 not in self._recent_raw}
        if not fresh:
            return
        chunks: list[list[RawBody]] = [[]]
        size = 0
        for raw in fresh.values():
            kept = len(raw.body) if len(raw.body) <= self._raw_max else 0
            if chunks[-1] and size + kept > self._chunk_max:
                chunks.append([])
                size = 0
            chunks[-1].append(raw)
            size += kept
        # Chunks are keyed by content: one already there (a retried insert) is not an error.
        await _write_first_wins(self.raw, [InsertOne(self._chunk_doc(chunk)) for chunk in chunks])
        for sha in fresh:
            self._recent_raw[sha] = None
        while len(self._recent_raw) > _RECENT_RAW:
            del self._recent_raw[next(iter(self._recent_raw))]

    def _chunk_doc(self, chunk: Sequence[RawBody]) -> dict[str, Any]:
        return {
            # From its bodies, so that a retried insert of the same chunk is a no-op.
            "_id": hashlib.sha256("".join(raw.sha256 for raw in chunk).encode()).hexdigest(),
            "received_at": min(raw.received_at for raw in chunk),
            "providers": sorted({raw.provider for raw in chunk}),
            "task_ids": sorted({task for raw in chunk for task in raw.task_ids}),
            "bodies": [self._body_entry(raw) for raw in chunk],
        }

    def _body_entry(self, raw: RawBody) -> dict[str, Any]:
        kept = len(raw.body) <= self._raw_max
        return {
            "sha256": raw.sha256,
            "body": raw.body if kept else None,
            "truncated": not kept,
            "size": len(raw.body),
            "routing_key": raw.routing_key,
            "content_type": raw.content_type,
            "headers": raw.headers,
            "provider": raw.provider,
            "task_ids": list(raw.task_ids),
            "received_at": raw.received_at,
        }

    async def raw_bodies(
        self, *, provider: str | None = None, since: datetime | None = None, task_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The archived bodies that match, oldest first, each distinct body once."""
        query: dict[str, Any] = {}
        if provider is not None:
            query["providers"] = provider
        if since is not None:
            query["received_at"] = {"$gte": since}
        if task_id is not None:
            query["task_ids"] = task_id
        seen: set[str] = set()
        async for chunk in self.raw.find(query).sort("received_at", 1):
            for body in chunk["bodies"]:
                if (
                    body["sha256"] in seen
                    or (provider is not None and body["provider"] != provider)
                    or (task_id is not None and task_id not in body["task_ids"])
                    or (since is not None and body["received_at"] < since)
                ):
                    continue
                seen.add(body["sha256"])
                yield body


async def _write_first_wins(
    collection: AsyncCollection[dict[str, Any]], ops: Sequence[InsertOne[Any] | ReplaceOne[Any]]
) -> list[int]:
    """An unordered bulk write; the indexes of the ops another writer beat to the key (duplicate key).

    Any other error raises.
    """
    try:
        await collection.bulk_write(list(ops), ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != _DUPLICATE_KEY for e in errors) or exc.details.get("writeConcernErrors"):
            raise
        return [e["index"] for e in errors]
    return []


_LISTING_ORDER = [("updated_at", 1), ("_id", 1)]


def listing_query(
    provider: str | None,
    statuses: Sequence[str],
    since: datetime | None,
    after: tuple[datetime, str] | None,
) -> dict[str, Any]:
    """The filter of a listing in (updated_at, _id) order; `after` is the last (updated_at, key) seen.

    The cursor is a range on updated_at plus a tie-break on _id, so that the "updated" index bounds the
    scan and pages neither repeat nor skip jobs that share an updated_at.
    """
    query: dict[str, Any] = {}
    if provider is not None:
        query["provider"] = provider
    if statuses:
        query["status"] = {"$in": list(statuses)}
    lower = [when for when in (since, after[0] if after else None) if when is not None]
    if lower:
        query["updated_at"] = {"$gte": max(lower)}
    if after is not None:
        at, key = after
        query["$or"] = [{"updated_at": {"$gt": at}}, {"_id": {"$gt": key}}]
    return query


def mongo_client(mongodb: MongoSettings) -> AsyncMongoClient[dict[str, Any]]:
    if mongodb.mongodb_url is None:
        raise NotConfigured("SPEECHJOBS_MONGODB_URL is not set (scripts/run-local starts a local one)")
    return AsyncMongoClient(
        mongodb.mongodb_url.get_secret_value(),
        tz_aware=True,
        appname="speechjobs",
        serverSelectionTimeoutMS=mongodb.mongodb_timeout_ms,
        connectTimeoutMS=mongodb.mongodb_timeout_ms,
    )


def job_document(key: str, job: Job) -> dict[str, Any]:
    """The BSON-ready document stored for a job."""
    doc = job.model_dump()
    doc["_id"] = key
    doc["status"] = job.status.value
    doc["history"] = [{**h, "status": h["status"].value} for h in doc["history"]]
    return doc


def job_from_document(doc: dict[str, Any]) -> Job:
    # The client is tz_aware, so dates come back as aware UTC datetimes.
    return Job.model_validate({k: v for k, v in doc.items() if k != "_id"})
