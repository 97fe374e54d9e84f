"""Start-up and topology: refused declarations, unrouted events, dead worker, durability."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from consumer.amqp.connection import TopologyError, connect_consumer, connect_producer
from consumer.amqp.publisher import publish_inbound
from consumer.core.contract import inbound
from consumer.settings import Settings, load_settings
from consumer.store.memory import MemoryStore
from consumer.worker.pipeline import Pipeline
from consumer.worker.service import EXIT_CONFIG, EXIT_CRASHED, Service
from tests.integration.faults import PrivateMongo, rabbitmqctl, tingwu_body
from tests.integration.harness import DB, Bus, Names, ServiceProcess


def settings_of(names: Names, **overrides: Any) -> Settings:
    env = {k.removeprefix("SPEECHJOBS_").lower(): v for k, v in names.env.items()}
    return load_settings(**(env | {"http_port": 0, "mongodb_url": None} | overrides))


async def connections_of_this_process() -> int:
    listing = await rabbitmqctl("list_connections", "-q", "--no-table-headers", "client_properties")
    return sum(f'pid {os.getpid()}"' in line for line in listing.splitlines())


async def test_a_refused_declaration_fails_fast_and_leaks_no_connection(bus: Bus, names: Names) -> None:
    assert bus.channel is not None
    # A classic queue where the service declares a quorum one: PRECONDITION_FAILED, which no retry fixes.
    await bus.channel.declare_queue(names.inbound_queue, durable=True)
    settings = settings_of(names)
    before = await connections_of_this_process()
    for _ in range(3):
        with pytest.raises(TopologyError, match="PRECONDITION_FAILED"):
            await connect_consumer(settings.amqp, settings.consumer)
    await asyncio.sleep(1)  # the broker lists a closed connection for a moment
    assert await connections_of_this_process() == before

    proc = ServiceProcess(names)
    started = time.monotonic()
    await proc.start(wait_ready=False)
    assert proc.proc is not None
    assert await asyncio.wait_for(proc.proc.wait(), 30) == EXIT_CONFIG
    assert time.monotonic() - started < 20
    (line,) = [line for line in proc.log_lines() if line["level"] == "error"]
    assert "PRECONDITION_FAILED" in line["msg"]
    assert names.inbound_queue in line["msg"]
    assert not [line for line in proc.log_lines() if "not reachable" in line["msg"]]


async def test_events_no_binding_matched_wait_in_a_bounded_queue(bus: Bus, names: Names, db: DB) -> None:
    assert bus.channel is not None
    proc = ServiceProcess(names, SPEECHJOBS_EVENTS_UNROUTED_MAX_LENGTH="5")
    await proc.start()
    try:
        # A subscriber that wants completions only.
        subscriber = await bus.channel.declare_queue(f"{names.events_queue}.sub", auto_delete=True)
        await subscriber.bind(names.events_exchange, "job.completed")
        await bus.publish(tingwu_body(1, "COMPLETED"), "callback.tingwu")
        for task in range(2, 10):
            await bus.publish(tingwu_body(task, "FAILED"), "callback.tingwu")
        got = await bus.drain(subscriber.name, expect=1, settle=1.0)
        assert [m.routing_key for m in got] == ["job.completed"]
        # Eight failures no binding matched; the unrouted queue keeps the newest five.
        for _ in range(100):
            if await db.jobs.count_documents({"status": "failed"}) == 8:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert await bus.queue_depth(names.events_queue) == 5
    finally:
        assert await proc.stop() == 0
    # A fresh process samples the queue at start: the gauge an alert watches.
    second = ServiceProcess(names, SPEECHJOBS_EVENTS_UNROUTED_MAX_LENGTH="5")
    await second.start()
    try:
        _, metrics = await second.http_get("/metrics")
        assert "speechjobs_events_unrouted 5.0" in metrics
    finally:
        assert await second.stop() == 0


async def test_a_producer_declares_only_the_inbound_exchange(bus: Bus, names: Names) -> None:
    settings = settings_of(names)
    producer = await connect_producer(settings.amqp, name="speechjobs-test-producer")
    try:
        message = inbound(b"{}", channel="callback", provider="tingwu", task_id="t-1")
        assert message.routing_key == "callback.tingwu"
        assert message.headers == {"x-provider": "tingwu", "x-task-id": "t-1"}
        assert bus.channel is not None
        queue = await bus.channel.declare_queue(f"{names.inbound_queue}.probe", auto_delete=True)
        await queue.bind(names.inbound_exchange, "#")
        await publish_inbound(producer, message, timeout=5)
        (got,) = await bus.drain(queue.name, expect=1)
        assert got.headers["x-task-id"] == "t-1"
    finally:
        await producer.close()
    listing = await rabbitmqctl("list_queues", "-q", "--no-table-headers", "name")
    assert names.inbound_queue not in listing.split()
    assert names.dead_letter_queue not in listing.split()


async def test_a_dead_worker_fails_readiness_and_exits_non_zero(
    bus: Bus, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Pipeline) -> None:
        raise RuntimeError("a bug in the batch loop")

    monkeypatch.setattr(Pipeline, "until_writer_idle", broken)
    service = Service(settings_of(names), store=MemoryStore())
    running = asyncio.create_task(service.run())
    await asyncio.sleep(1)
    await bus.publish(tingwu_body(1, "COMPLETED"), "callback.tingwu")
    assert await asyncio.wait_for(running, 20) == EXIT_CRASHED
    assert service.health.not_ready()  # readiness failed before the exit
    # The message was never acked: the broker hands it to the next replica.
    await asyncio.sleep(0.5)
    assert await bus.queue_depth(names.inbound_queue) == 1


async def test_every_acked_job_survives_the_database_being_killed(bus: Bus, names: Names) -> None:
    mongo = PrivateMongo()
    await mongo.start()
    proc = ServiceProcess(names, SPEECHJOBS_MONGODB_URL=mongo.url, SPEECHJOBS_MONGODB_TIMEOUT_MS="1000")
    await proc.start()
    tasks = 600
    try:

        async def stream() -> None:
            for task in range(tasks):
                await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu")
                await asyncio.sleep(0.003)

        publisher = asyncio.create_task(stream())
        await asyncio.sleep(0.8)
        await mongo.stop(signal.SIGKILL)  # mid-stream, with writes acknowledged and acks on their way
        await asyncio.sleep(2)
        await mongo.start()  # the same files
        await publisher
        events = await bus.drain(names.events_queue, expect=tasks, timeout=120, settle=2.0)
        assert len({e.message_id for e in events}) == tasks
        stored = {
            task_id
            for line in proc.log_lines()
            if line.get("outcome") == "stored"
            for task_id in line["task_ids"]
        }
        client = mongo.client()
        kept = {doc["task_id"] async for doc in client[names.mongodb_database].jobs.find({}, {"task_id": 1})}
        await client.close()
        assert stored - kept == set(), f"{len(stored - kept)} acked jobs lost"
        assert len(kept) == tasks
    finally:
        assert await proc.stop() == 0
        await mongo.stop()


async def test_deliveries_pause_over_the_byte_budget_and_resume(bus: Bus, names: Names) -> None:
    # A backlog of large bodies: the replica holds at most the budget plus what was already on its way
    # (at most a prefetch of deliveries), then resumes as it settles them.
    proc = ServiceProcess(names, SPEECHJOBS_MAX_BYTES_IN_FLIGHT=str(1 << 20), SPEECHJOBS_PREFETCH="4")
    await proc.start()
    await proc.stop()  # declares the topology; the backlog then waits for the next start
    body = b"x" * 600_000  # not JSON: dead-lettered, fast
    for index in range(40):
        await bus.publish(body, "callback.tingwu", message_id=f"big-{index}")
    proc = ServiceProcess(names, SPEECHJOBS_MAX_BYTES_IN_FLIGHT=str(1 << 20), SPEECHJOBS_PREFETCH="4")
    await proc.start()
    try:
        letters = await bus.drain(names.dead_letter_queue, expect=40, timeout=60, settle=1.0)
        assert sorted(m.message_id or "" for m in letters) == sorted(f"big-{i}" for i in range(40))
    finally:
        assert await proc.stop() == 0
    paused = [line for line in proc.log_lines() if line["msg"].startswith("paused deliveries")]
    resumed = [line for line in proc.log_lines() if line["msg"].startswith("resumed deliveries")]
    assert paused
    assert len(resumed) >= len(paused) - 1
    assert max(line["bytes_in_flight"] for line in paused) <= (1 << 20) + 4 * len(body)
