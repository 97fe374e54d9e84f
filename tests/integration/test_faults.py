"""Fault injection against the real service process: kills, database and broker outages, refused events."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from typing import Any

import pytest

from tests.integration.faults import PrivateMongo, close_connections_of, cpu_seconds, rss_kib_of, tingwu_body
from tests.integration.harness import DB, Bus, Names, ServiceProcess, jobs_with_published_event, published_ids


async def publish_stream(bus: Bus, tasks: int, *, retries: float = 0.2, pause: float = 0.002) -> int:
    """ONGOING then COMPLETED per task, with vendor retries of the completion; returns messages sent."""
    rng = random.Random(7)
    sent = 0
    for task in range(tasks):
        await bus.publish(tingwu_body(task, "ONGOING"), "callback.tingwu")
        await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu")
        sent += 2
        if rng.random() < retries:
            await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu")
            sent += 1
        await asyncio.sleep(pause)
    return sent


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def outage_lines(proc: ServiceProcess, component: str, level: str | None = None) -> list[dict[str, Any]]:
    return [
        line
        for line in proc.log_lines()
        if line.get("component") == component and (level is None or line["level"] == level)
    ]


def report(name: str, **figures: object) -> None:
    print(f"\nFIGURES {name} {json.dumps(figures)}")


async def check_all_completed(db: DB, bus: Bus, names: Names, tasks: int) -> tuple[int, int]:
    """Every task stored, completed, its event's confirm logged; returns (events received, distinct ids)."""
    events = await bus.drain(names.events_queue, expect=tasks, timeout=90, settle=2.0)
    ids = [e.message_id for e in events]
    assert len(set(ids)) == tasks, f"{tasks - len(set(ids))} events missing"
    assert await db.jobs.count_documents({}) == tasks
    assert await jobs_with_published_event(db, {"status": "completed"}) == tasks
    assert await bus.queue_depth(names.dead_letter_queue) == 0
    assert await bus.queue_depth(names.inbound_queue) == 0
    return len(ids), len(set(ids))


async def sigkill_run(bus: Bus, names: Names, db: DB, *, tasks: int, kills: int) -> None:
    env = {"SPEECHJOBS_PREFETCH": "64", "SPEECHJOBS_BATCH_SIZE": "16"}
    proc = ServiceProcess(names, **env)
    await proc.start()
    publisher = asyncio.create_task(publish_stream(bus, tasks))
    rng = random.Random(11)
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        assert await proc.stop(signal.SIGKILL) == -signal.SIGKILL
        proc = ServiceProcess(names, **env)
        await proc.start()
    sent = await publisher
    received, distinct = await check_all_completed(db, bus, names, tasks)
    assert await proc.stop() == 0
    duplicates = received - distinct
    # A duplicate event may only come from messages in flight at a kill: at most a prefetch window each.
    assert duplicates <= kills * 64
    report("sigkill", tasks=tasks, messages=sent, kills=kills, events=received, duplicate_events=duplicates)


async def test_sigkill_mid_stream_loses_nothing(bus: Bus, names: Names, db: DB) -> None:
    await sigkill_run(bus, names, db, tasks=300, kills=3)


@pytest.mark.soak
async def test_sigkill_soak(bus: Bus, names: Names, db: DB) -> None:
    await sigkill_run(bus, names, db, tasks=3000, kills=15)


async def test_mongodb_outage_pauses_and_resumes(bus: Bus, names: Names) -> None:
    mongo = PrivateMongo()
    await mongo.start()
    proc = ServiceProcess(names, SPEECHJOBS_MONGODB_URL=mongo.url, SPEECHJOBS_MONGODB_TIMEOUT_MS="1000")
    await proc.start()
    try:
        for task in range(20):
            await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu")
        assert len(await bus.drain(names.events_queue, expect=20, timeout=30)) == 20

        await mongo.stop()
        down_at = time.monotonic()
        for task in range(20, 60):
            await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu")

        async def not_ready() -> bool:
            status, body = await proc.http_get("/readyz")
            return status == 503 and "mongodb" in body

        await wait_until(not_ready, 15, "/readyz to report MongoDB")
        assert proc.proc is not None
        cpu_before = cpu_seconds(proc.proc.pid)
        await asyncio.sleep(15)  # tens of seconds of outage in all
        cpu_during = cpu_seconds(proc.proc.pid) - cpu_before
        assert cpu_during < 1.5, f"{cpu_during:.2f}s of CPU in 15s: a hot retry loop"
        assert await bus.queue_depth(names.dead_letter_queue) == 0
        assert await bus.drain(names.events_queue, expect=0, settle=0.2) == []

        await mongo.start()
        up_at = time.monotonic()
        events = await bus.drain(names.events_queue, expect=40, timeout=60)
        recovered_s = time.monotonic() - up_at
        assert len({e.message_id for e in events}) == 40

        async def ready() -> bool:
            return (await proc.http_get("/readyz"))[0] == 200

        await wait_until(ready, 15, "/readyz to recover")
        assert await bus.queue_depth(names.dead_letter_queue) == 0
        warnings = outage_lines(proc, "mongodb")
        # One warning when it began, one info line with its length when it ended; public names only.
        assert [line["level"] for line in warnings] == ["warning", "info"], warnings
        assert warnings[1]["outage_s"] > 10
        assert "_OperationCancelled" not in proc.logs()
        report(
            "mongodb-outage",
            outage_s=round(up_at - down_at, 1),
            cpu_s_during_15s=round(cpu_during, 2),
            recovered_after_restart_s=round(recovered_s, 1),
            degraded_log_lines=len(warnings),
        )
    finally:
        assert await proc.stop() == 0
        await mongo.stop()


async def test_broker_connections_closed_under_load(bus: Bus, names: Names, db: DB) -> None:
    proc = ServiceProcess(names)
    await proc.start()
    assert proc.proc is not None
    publisher = asyncio.create_task(publish_stream(bus, 300))
    closed = 0
    for _ in range(3):
        await asyncio.sleep(0.5)
        for _ in range(50):  # the previous close may still be reconnecting
            if found := await close_connections_of(proc.proc.pid):
                closed += found
                break
            await asyncio.sleep(0.2)
    sent = await publisher
    received, distinct = await check_all_completed(db, bus, names, 300)

    async def ready() -> bool:
        return (await proc.http_get("/readyz"))[0] == 200

    await wait_until(ready, 15, "/readyz after reconnects")
    assert closed == 3
    assert await proc.stop() == 0
    # Each cut is one warning and one info line of ours; the clients' own reconnect noise is not logged.
    lines = proc.log_lines()
    assert not [line for line in lines if line["level"] == "error"], [x["msg"] for x in lines][-20:]
    assert not [line for line in lines if line["logger"].startswith(("aio_pika", "aiormq"))]
    assert 1 <= len(outage_lines(proc, "broker", "warning")) <= 3
    assert len(outage_lines(proc, "broker", "info")) == len(outage_lines(proc, "broker", "warning"))
    report("broker-close", messages=sent, connections_closed=closed, duplicate_events=received - distinct)


async def test_refused_event_holds_the_input_until_confirmed(bus: Bus, names: Names, db: DB) -> None:
    # No alternate exchange and no queue bound: events come back unroutable.
    proc = ServiceProcess(names, SPEECHJOBS_EVENTS_UNROUTED="")
    await proc.start()
    try:
        await bus.publish(tingwu_body(1, "COMPLETED"), "callback.tingwu")

        async def written() -> bool:
            return await db.jobs.find_one({"event": {"$ne": None}}) is not None

        await wait_until(written, 10, "the job write")

        async def degraded() -> bool:
            status, body = await proc.http_get("/readyz")
            return status == 503 and "broker" in body

        await wait_until(degraded, 10, "/readyz to report the publish failures")
        assert bus.channel is not None
        events = await bus.channel.get_exchange(names.events_exchange)
        # A full queue that rejects publishes: the broker nacks the event.
        full = await bus.channel.declare_queue(
            f"{names.events_queue}.full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        await full.bind(events, "#")
        await asyncio.sleep(3)
        assert await published_ids(db) == set()
        assert not [line for line in proc.log_lines() if line.get("outcome") == "stored"], "acked too early"

        await full.delete(if_unused=False, if_empty=False)
        sink = await bus.channel.declare_queue(names.events_queue, durable=True)
        await sink.bind(events, "#")
        received = await bus.drain(names.events_queue, expect=1, timeout=30)
        assert [m.routing_key for m in received] == ["job.completed"]

        async def acked() -> bool:
            return any(line.get("outcome") == "stored" for line in proc.log_lines())

        await wait_until(acked, 10, "the input to be acked")
        assert await jobs_with_published_event(db) == 1
        assert await bus.queue_depth(names.inbound_queue) == 0
    finally:
        assert await proc.stop() == 0


async def test_sigterm_finishes_or_hands_back_in_flight_work(bus: Bus, names: Names, db: DB) -> None:
    proc = ServiceProcess(names, SPEECHJOBS_SHUTDOWN_GRACE_S="5")
    await proc.start()
    for task in range(400):
        await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu")

    async def started() -> bool:
        return await db.jobs.count_documents({}) > 0

    await wait_until(started, 15, "processing to start")
    began = time.monotonic()
    assert await proc.stop(signal.SIGTERM) == 0
    stopped_s = time.monotonic() - began
    assert stopped_s < 5 + 3
    assert any(line.get("msg") == "stopped" for line in proc.log_lines())
    replacement = ServiceProcess(names)
    await replacement.start()
    await check_all_completed(db, bus, names, 400)
    assert await replacement.stop() == 0
    report("sigterm", stop_s=round(stopped_s, 2))


async def test_repeated_processing_failure_is_dead_lettered_after_the_limit(
    bus: Bus, names: Names, db: DB
) -> None:
    # A stored document this version cannot read (a future schema, a manual edit): processing its
    # updates fails for a reason that is not the input's fault.
    await db.jobs.insert_one({"_id": "tingwu:task-0000", "provider": "tingwu", "status": "from-the-future"})
    proc = ServiceProcess(names, SPEECHJOBS_MAX_DELIVERIES="3")
    await proc.start()
    try:
        for task in range(6):
            await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu", message_id=f"m{task}")
        letters = await bus.drain(names.dead_letter_queue, expect=1, timeout=30)
        assert [m.message_id for m in letters] == ["m0"]
        assert letters[0].headers["x-speechjobs-reason"] == "processing-failed"
        assert letters[0].headers["x-speechjobs-deliveries"] == 3
        events = await bus.drain(names.events_queue, expect=5, timeout=30)
        assert len({e.message_id for e in events}) == 5
        outcomes = [line["outcome"] for line in proc.log_lines() if line.get("message_id") == "m0"]
        assert outcomes == ["requeued", "requeued", "dead-lettered"]
        assert await bus.queue_depth(names.inbound_queue) == 0
    finally:
        assert await proc.stop() == 0


async def test_no_secrets_in_logs_or_dead_letters(bus: Bus, names: Names, db: DB) -> None:
    proc = ServiceProcess(names)
    await proc.start()
    try:
        await bus.publish(tingwu_body(1, "COMPLETED"), "callback.tingwu", {"X-ICE-SIGNATURE": "icesig123"})
        bad = b'{"Code":"E1","Message":"fetch http://b/x?OSSAccessKeyId=LTAIkey&Signature=ossSig","RequestId":"r"}'
        await bus.publish(
            bad, "callback.tingwu", {"X-ICE-SIGNATURE": "icesig456", "x-note": "u?q-signature=cosSig"}
        )
        await bus.publish(b"<x>&nope;</x>", "callback.tencent-ci", {"Authorization": "q-ak=AKIDsecret"})
        letters = await bus.drain(names.dead_letter_queue, expect=2, timeout=20)
        assert len(letters) == 2
        await bus.drain(names.events_queue, expect=1, timeout=20)
    finally:
        assert await proc.stop() == 0
    dumped = proc.logs() + "".join(json.dumps(m.headers, default=str) for m in letters)
    for secret in (
        "icesig123",
        "icesig456",
        "LTAIkey",
        "ossSig",
        "cosSig",
        "AKIDsecret",
        "s3cr3t1",
        "guest:guest",
    ):
        assert secret not in dumped, secret
    assert letters[0].headers["X-ICE-SIGNATURE"] == "***"
    assert "vendor-error" in [m.headers["x-speechjobs-reason"] for m in letters]


async def test_hostile_stream_never_kills_the_consumer(bus: Bus, names: Names, db: DB) -> None:
    from tests.integration.test_fixtures_and_replicas import all_fixtures

    rng = random.Random(5)
    fixtures = [p.read_bytes() for p in all_fixtures()]
    bodies: list[bytes] = [
        b"<!DOCTYPE x [<!ENTITY a 'a'>]><x>&a;</x>",
        b"[" * 5000 + b"]" * 5000,
        b"<a>" * 5000 + b"</a>" * 5000,
        b"\xff\xfe" * 100,
        '{"Code":"0","Data":{"TaskId":"gbk","TaskStatus":"完成"}}'.encode("gbk"),
        b"x" * 2_000_000,
    ]
    for _ in range(300):
        mutated = bytearray(rng.choice(fixtures))
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        bodies.append(bytes(mutated))
    proc = ServiceProcess(names, SPEECHJOBS_MAX_BODY_BYTES="1048576")
    await proc.start()
    assert proc.proc is not None
    try:
        for index, body in enumerate(bodies):
            await bus.publish(
                body, rng.choice(["", "callback.tingwu", "callback.tencent-ci"]), message_id=str(index)
            )

        async def all_settled() -> bool:
            return sum(1 for line in proc.log_lines() if "outcome" in line) >= len(bodies)

        await wait_until(all_settled, 60, "every hostile message to be settled")
        status, _ = await proc.http_get("/healthz")
        assert status == 200
        rss_kib = rss_kib_of(proc.proc.pid)
        assert rss_kib < 400_000, f"RSS {rss_kib} KiB"
        outcomes = [line["outcome"] for line in proc.log_lines() if "outcome" in line]
        assert len(outcomes) == len(bodies)
        letters = await bus.queue_depth(names.dead_letter_queue)
        assert letters == outcomes.count("dead-lettered")
        assert await bus.queue_depth(names.inbound_queue) == 0
        report("hostile", messages=len(bodies), dead_lettered=letters, rss_kib=rss_kib)
    finally:
        assert await proc.stop() == 0


async def test_crash_between_write_and_confirm_republishes_on_redelivery(
    bus: Bus, names: Names, db: DB
) -> None:
    # Unroutable events keep the first process between its job write and the event's confirm.
    first = ServiceProcess(names, SPEECHJOBS_EVENTS_UNROUTED="")
    await first.start()
    await bus.publish(tingwu_body(7, "COMPLETED"), "callback.tingwu")

    async def written() -> bool:
        return await db.jobs.find_one({"event": {"$ne": None}}) is not None

    await wait_until(written, 10, "the job write")
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL

    assert bus.channel is not None
    sink = await bus.channel.declare_queue(names.events_queue, durable=True)
    await sink.bind(names.events_exchange, "#")  # a subscriber appears: events are routable again
    second = ServiceProcess(names, SPEECHJOBS_EVENTS_UNROUTED="")
    await second.start()
    try:
        events = await bus.drain(names.events_queue, expect=1, timeout=30, settle=1.0)
        assert [e.routing_key for e in events] == ["job.completed"]
        doc = await db.jobs.find_one({"_id": "tingwu:task-0007"})
        assert doc is not None
        assert await published_ids(db) == {doc["event"]["event_id"]}
        assert len(doc["history"]) == 1
        assert [line["outcome"] for line in second.log_lines() if "outcome" in line] == ["duplicate"]
        assert await bus.queue_depth(names.inbound_queue) == 0
    finally:
        assert await second.stop() == 0
