"""Every fixture through the running service, and two replicas sharing one queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

from consumer.core.contract import Inbound
from consumer.core.errors import Rejection
from consumer.vendors import normalize
from tests.conftest import FIXTURES
from tests.integration.faults import tingwu_body
from tests.integration.harness import DB, Bus, Names, ServiceProcess, jobs_with_published_event


def all_fixtures() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".json", ".xml"))


def headers_for(path: Path) -> dict[str, str]:
    # MetaStudio poll bodies name no job: the relay passes the id it polled.
    return {"x-task-id": f"job-{path.stem}"} if path.name.startswith("huawei") else {}


async def test_every_fixture_is_stored_or_dead_lettered_none_lost(
    service: ServiceProcess, bus: Bus, names: Names, db: DB
) -> None:
    expected_jobs: set[str] = set()
    expected_letters: dict[str, str] = {}
    for path in all_fixtures():
        body, headers = path.read_bytes(), headers_for(path)
        try:
            result = normalize(Inbound(body, "", headers))
        except Rejection as exc:
            expected_letters[path.name] = exc.reason
        else:
            expected_jobs |= {f"{u.provider}:{u.task_id}" for u in result.updates}
        await bus.publish(body, "", headers, message_id=path.name)
    assert len(expected_jobs) >= 25
    assert len(expected_letters) >= 5

    letters = await bus.drain(names.dead_letter_queue, expect=len(expected_letters), timeout=30)
    assert {m.message_id: m.headers["x-speechjobs-reason"] for m in letters} == expected_letters
    for _ in range(200):
        stored = {doc["_id"] async for doc in db.jobs.find({}, {"_id": 1})}
        if stored >= expected_jobs:
            break
        await asyncio.sleep(0.05)
    assert stored == expected_jobs
    assert await bus.queue_depth(names.inbound_queue) == 0


async def test_two_replicas_on_one_queue_publish_one_event_per_transition(
    bus: Bus, names: Names, db: DB
) -> None:
    replicas = [ServiceProcess(names, SPEECHJOBS_PREFETCH="8", SPEECHJOBS_BATCH_SIZE="4") for _ in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        tasks = range(60)
        for task in tasks:
            await bus.publish(tingwu_body(task, "ONGOING"), "callback.tingwu")
            for _ in range(3):  # the vendor retries its completion callback
                await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu")
        events = await bus.drain(names.events_queue, expect=len(tasks), timeout=60, settle=1.5)
    finally:
        codes = [await replica.stop() for replica in replicas]
    assert codes == [0, 0]
    ids = [e.message_id for e in events]
    assert len(set(ids)) == len(tasks)
    assert len(ids) == len(tasks), f"{len(ids) - len(set(ids))} duplicate events"
    assert await jobs_with_published_event(db, {"status": "completed"}) == len(tasks)
    handled = [
        sum(1 for line in r.log_lines() if line.get("logger") == "speechjobs.pipeline") for r in replicas
    ]
    assert sum(handled) == len(tasks) * 4
    assert all(count > 0 for count in handled), handled


async def test_batches_in_flight_ack_everything_exactly_once(bus: Bus, names: Names, db: DB) -> None:
    proc = ServiceProcess(names, SPEECHJOBS_BATCHES_IN_FLIGHT="3", SPEECHJOBS_BATCH_SIZE="4")
    await proc.start()
    try:
        for task in range(150):
            await bus.publish(tingwu_body(task, "ONGOING"), "callback.tingwu")
            await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu")
        events = await bus.drain(names.events_queue, expect=150, timeout=60, settle=1.0)
    finally:
        assert await proc.stop() == 0
    assert len(events) == len({e.message_id for e in events}) == 150
    assert await jobs_with_published_event(db, {"status": "completed"}) == 150
    # Batches write jobs in the order they were cut: each ONGOING was applied before its COMPLETED.
    histories = {tuple((h["status"], h["applied"]) for h in doc["history"]) async for doc in db.jobs.find({})}
    assert histories == {(("running", True), ("completed", True))}
    # Nothing left unacked: a stopped consumer's unacked messages would be back in the queue.
    assert await bus.queue_depth(names.inbound_queue) == 0
    outcomes = [line["outcome"] for line in proc.log_lines() if "outcome" in line]
    assert len(outcomes) == 300
