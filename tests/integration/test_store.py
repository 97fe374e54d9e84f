"""MongoStore on the real database: batches fold correctly and concurrent writers never double-apply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumer.store import RawBody
from consumer.store.mongo import MongoStore
from schemas.job import JobStatus
from tests.conftest import make_update
from tests.integration.harness import Names, mongo

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUNNING, COMPLETED, FAILED = JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED


@pytest.fixture
async def store(names: Names) -> AsyncIterator[MongoStore]:
    store = MongoStore(mongo(), names.mongodb_database, raw_body_max_bytes=10)
    await store.setup()
    yield store
    await store.client.drop_database(names.mongodb_database)
    await store.close()


async def test_two_updates_of_one_task_in_one_batch_fold_into_one_write(store: MongoStore) -> None:
    outcomes = await store.apply(
        [
            (make_update(RUNNING, "ONGOING", results={"Transcription": "t"}), T0, "a"),
            (make_update(COMPLETED, "COMPLETED", results={"AutoChapters": "c"}), T0, "a"),
        ]
    )
    assert [o.kind for o in outcomes] == ["new", "transition"]
    doc = await store.jobs.find_one({"_id": "tingwu:t1"})
    assert doc is not None
    assert doc["version"] == 1
    assert doc["status"] == "completed"
    assert doc["results"] == {"Transcription": "t", "AutoChapters": "c"}
    assert [h["status"] for h in doc["history"]] == ["running", "completed"]
    assert doc["event"]["owner"] == "a"
    assert await store.published([doc["event"]["event_id"]]) == set()


async def test_duplicates_and_out_of_order_within_one_batch(store: MongoStore) -> None:
    outcomes = await store.apply(
        [
            (make_update(COMPLETED, "COMPLETED", task_id="x"), T0, "a"),
            (make_update(COMPLETED, "COMPLETED", task_id="x"), T0, "b"),
            (make_update(RUNNING, "ONGOING", task_id="x"), T0, "c"),
            (make_update(FAILED, "FAILED", task_id="y"), T0, "d"),
        ]
    )
    assert [o.kind for o in outcomes] == ["new", "duplicate", "late", "new"]
    events = {o.event.event_id for o in outcomes if o.event is not None}
    assert len(events) == 2
    doc = await store.jobs.find_one({"_id": "tingwu:x"})
    assert doc is not None
    assert doc["status"] == "completed"
    assert [(h["status"], h["applied"]) for h in doc["history"]] == [("completed", True), ("running", False)]


async def test_redelivered_batch_changes_nothing(store: MongoStore) -> None:
    batch = [(make_update(COMPLETED, task_id=f"t{i}"), T0, "a") for i in range(20)]
    await store.apply(batch)
    again = await store.apply([(u, T0 + timedelta(seconds=5), "b") for u, _, _ in batch])
    assert {o.kind for o in again} == {"duplicate"}
    assert all(not o.changed for o in again)
    assert await store.jobs.count_documents({"version": 1}) == 20


async def test_concurrent_writers_apply_each_transition_once(store: MongoStore, names: Names) -> None:
    others = [MongoStore(mongo(), names.mongodb_database) for _ in range(3)]
    tasks = [f"c{i}" for i in range(30)]

    async def writer(s: MongoStore, owner: str) -> list[str]:
        created: list[str] = []
        for status in (RUNNING, COMPLETED):
            outcomes = await s.apply([(make_update(status, task_id=t), T0, owner) for t in tasks])
            created += [o.event.event_id for o in outcomes if o.event is not None and o.event.owner == owner]
        return created

    results = await asyncio.gather(*(writer(s, f"w{i}") for i, s in enumerate([store, *others])))
    for other in others:
        await other.close()
    owned = [event for created in results for event in created]
    assert len(owned) == len(set(owned)) == len(tasks), "each completion created by exactly one writer"
    assert await store.jobs.count_documents({"status": "completed"}) == len(tasks)
    async for doc in store.jobs.find({}):
        assert [h["status"] for h in doc["history"]] == ["running", "completed"]


async def test_confirms_are_logged_once_beside_the_job(store: MongoStore) -> None:
    (outcome,) = await store.apply([(make_update(COMPLETED), T0, "a")])
    assert outcome.event is not None
    event_id = outcome.event.event_id
    await store.confirm([("tingwu:t1", event_id)], T0)
    # A second replica republishing the same event after a crash logs its confirm again.
    await store.confirm([("tingwu:t1", event_id), ("tingwu:t2", "other")], T0 + timedelta(seconds=1))
    logged = [doc async for doc in store.published_events.find({}).sort("_id", 1)]
    assert [(d["_id"], d["job_id"], d["confirmed_at"]) for d in logged] == sorted(
        [(event_id, "tingwu:t1", T0), ("other", "tingwu:t2", T0 + timedelta(seconds=1))]
    )
    assert await store.published([event_id, "unknown"]) == {event_id}
    doc = await store.jobs.find_one({"_id": "tingwu:t1"})
    assert doc is not None
    assert doc["version"] == 1, "a confirm does not rewrite the job"


async def test_raw_bodies_are_kept_once_with_a_size_cap(store: MongoStore) -> None:
    small = RawBody("a" * 64, b"tiny", "callback.tingwu", None, {}, "tingwu", ("t1",), T0)
    large = RawBody("b" * 64, b"x" * 100, "callback.tingwu", None, {}, "tingwu", ("t2",), T0)
    await store.save_raw([small, large, small])
    (chunk,) = [d async for d in store.raw.find({})]
    assert (chunk["received_at"], chunk["providers"], chunk["task_ids"]) == (T0, ["tingwu"], ["t1", "t2"])
    bodies = {b["sha256"]: b for b in chunk["bodies"]}
    assert len(chunk["bodies"]) == 2
    assert bodies["a" * 64]["body"] == b"tiny"
    assert bodies["b" * 64]["body"] is None
    assert bodies["b" * 64]["truncated"] is True
    assert bodies["b" * 64]["size"] == 100
    await store.save_raw([small])  # seen lately: not archived again
    assert await store.raw.count_documents({}) == 1
    indexes = await store.raw.index_information()
    assert indexes["retention"]["expireAfterSeconds"] == 30 * 86400


async def test_raw_bodies_read_back_oldest_first_filtered_and_each_once(
    store: MongoStore, names: Names
) -> None:
    def raw(sha: str, provider: str, tasks: tuple[str, ...], at: datetime, size: int = 4) -> RawBody:
        return RawBody(sha * 64, b"x" * size, f"callback.{provider}", None, {}, provider, tasks, at)

    t1 = T0 + timedelta(minutes=1)
    await store.save_raw([raw("b", "tencent-ci", ("j1", "j2"), t1), raw("c", "tingwu", ("t2",), t1)])
    await store.save_raw([raw("a", "tingwu", ("t1",), T0)])
    # Another replica archives a body this one already did: read back once all the same.
    other = MongoStore(mongo(), names.mongodb_database, raw_body_max_bytes=10)
    t2 = T0 + timedelta(minutes=2)
    await other.save_raw([raw("a", "tingwu", ("t1",), t2), raw("d", "tingwu", ("t1",), t2)])
    await other.close()

    async def shas(**selection: Any) -> list[str]:
        return [body["sha256"][0] async for body in store.raw_bodies(**selection)]

    assert await shas() == ["a", "b", "c", "d"]
    assert await shas(provider="tingwu") == ["a", "c", "d"]
    assert await shas(task_id="j2") == ["b"]
    assert await shas(task_id="t1") == ["a", "d"]
    assert await shas(since=t1) == ["b", "c", "a", "d"]
    assert await shas(provider="tencent-ci", since=t1, task_id="t2") == []


async def test_raw_chunks_stay_under_their_size_cap(names: Names) -> None:
    store = MongoStore(mongo(), names.mongodb_database, raw_chunk_max_bytes=10)
    bodies = [
        RawBody(str(i) * 64, b"x" * 4, "callback.tingwu", None, {}, "tingwu", (f"t{i}",), T0)
        for i in range(5)
    ]
    await store.save_raw(bodies)
    sizes = sorted([len(chunk["bodies"]) async for chunk in store.raw.find({})])
    await store.client.drop_database(names.mongodb_database)
    await store.close()
    assert sizes == [1, 2, 2]
