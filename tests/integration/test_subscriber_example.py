"""examples/subscriber.py run as users run it, against the real broker: each event_id processed once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from consumer.amqp.connection import declare_events
from consumer.amqp.publisher import OutboundEvent, Publisher
from consumer.core.state import event_id
from consumer.settings import AmqpSettings
from schemas.event import JobEvent
from schemas.job import EventRecord, JobStatus, Provider
from tests.integration.harness import AMQP_URL

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples/subscriber.py"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def outbound(provider: Provider, task_id: str, status: JobStatus) -> OutboundEvent:
    """A terminal event built as the consumer builds it (core/state.py), with its stored record."""
    event = JobEvent(
        event_id=event_id(provider, task_id, status),
        type="job.completed" if status is JobStatus.COMPLETED else "job.failed",
        occurred_at=datetime.now(UTC),
        provider=provider,
        task_id=task_id,
        status=status,
        provider_status=status.value.upper(),
        kind="transcription",
        results={"Transcription": f"https://example.com/{task_id}.json"},
    )
    record = EventRecord(
        event_id=event.event_id,
        routing_key=event.type,
        body=event.model_dump_json(),
        created_at=event.occurred_at,
    )
    return OutboundEvent(record, provider, event.kind, traceparent=TRACEPARENT)


@dataclass
class World:
    """This test's events exchange (declared as speechjobs declares it), queue names and SQLite file."""

    channel: AbstractChannel
    publisher: Publisher
    exchange: str
    queue: str
    db: Path

    @property
    def dead_letters(self) -> str:
        return f"{self.queue}.dead-letter"

    async def ready_count(self, queue: str) -> int:
        declared = await self.channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        assert count is not None
        return count

    def rows(self, sql: str) -> set[tuple[str, ...]]:
        with sqlite3.connect(self.db) as db:
            return set(db.execute(sql).fetchall())


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    suffix = uuid.uuid4().hex[:10]
    settings = AmqpSettings(
        events_exchange=f"t.{suffix}.events", events_unrouted=f"t.{suffix}.events.unrouted"
    )
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()  # publisher confirms on, as the service's publish channel
    events = await declare_events(channel, settings)
    publisher = Publisher(channel, events, None, timeout=10)
    yield World(channel, publisher, events.name, f"t.{suffix}.subscriber", tmp_path / "subscriber.sqlite3")
    cleanup = await connection.channel()  # a fresh one: a failed passive declare closes its channel
    for queue in (f"t.{suffix}.subscriber", f"t.{suffix}.subscriber.dead-letter", settings.events_unrouted):
        await cleanup.queue_delete(queue)
    for exchange in (
        f"t.{suffix}.subscriber.dead-letter",
        settings.events_exchange,
        settings.events_unrouted,
    ):
        await cleanup.exchange_delete(exchange)
    await connection.close()


class Example:
    """`python examples/subscriber.py` in a child process, configured by its SUBSCRIBER_* variables."""

    def __init__(self, world: World, log: Path) -> None:
        self.world = world
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, *, ready: bool = True) -> None:
        env = {
            **os.environ,
            "SUBSCRIBER_AMQP_URL": AMQP_URL,
            "SUBSCRIBER_EXCHANGE": self.world.exchange,
            "SUBSCRIBER_QUEUE": self.world.queue,
            "SUBSCRIBER_DB": str(self.world.db),
        }
        self.starts += 1
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(EXAMPLE), env=env, stdout=out, stderr=out
            )
        if ready:  # its queue is bound once it says it consumes; an event published before is unrouted
            await self.wait_for(lambda: self.text().count("consuming ") == self.starts)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc is not None
            assert self.proc.returncode is None, f"example exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"timed out; example's log:\n{self.text()}"
            await asyncio.sleep(0.05)

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def example(world: World, tmp_path: Path) -> AsyncIterator[Example]:
    example = Example(world, tmp_path / "subscriber.log")
    yield example
    example.kill()  # only if a failed test left it running
    if example.proc is not None:
        await example.proc.wait()


async def test_each_event_is_processed_once_duplicates_are_acked_bad_bodies_dead_lettered(
    world: World, example: Example
) -> None:
    await example.start()
    first, second = f"task-{uuid.uuid4().hex}", f"task-{uuid.uuid4().hex}"
    completed = outbound("tingwu", first, JobStatus.COMPLETED)
    failed = outbound("tencent-ci", second, JobStatus.FAILED)
    await world.publisher.publish_events([completed, failed])
    await world.publisher.publish_events([completed])  # the republish after a crash: the same event_id
    not_json = b"not json"
    # A body of a future schema version (and an unknown field): this JobEvent cannot read it.
    future = completed.record.body.replace('"schema_version":1', '"schema_version":2,"extra":true').encode()
    assert future != completed.record.body.encode()
    exchange = await world.channel.get_exchange(world.exchange)
    for body in (not_json, future):
        await exchange.publish(
            aio_pika.Message(body, content_type="application/json", message_id=str(uuid.uuid4())),
            routing_key="job.completed",
        )

    # One consumer, one message at a time, in order: the last rejection comes after everything else.
    await example.wait_for(lambda: example.text().count("rejected message") == 2)
    assert f"duplicate event {completed.record.event_id}" in example.text()
    assert await world.ready_count(world.queue) == 0
    assert await example.terminate() == 0, example.text()

    assert "stopped: processed 2, duplicates 1, rejected 2" in example.text()
    assert world.rows("SELECT provider, task_id, status, event_id FROM results") == {
        ("tingwu", first, "completed", completed.record.event_id),
        ("tencent-ci", second, "failed", failed.record.event_id),
    }
    assert world.rows("SELECT event_id FROM processed_events") == {
        (completed.record.event_id,),
        (failed.record.event_id,),
    }
    # Nothing was left unacked: the broker would have put it back in the queue when the example's channel
    # closed. The rejected bodies are in the example's own dead-letter queue, and nothing else is.
    assert await world.ready_count(world.queue) == 0
    parked = await world.channel.get_queue(world.dead_letters)
    bodies = set()
    while (message := await parked.get(no_ack=True, fail=False)) is not None:
        bodies.add(message.body)
    assert bodies == {not_json, future}


async def test_an_event_redelivered_after_a_restart_is_not_processed_again(
    world: World, example: Example
) -> None:
    event = outbound("huawei-metastudio", f"task-{uuid.uuid4().hex}", JobStatus.COMPLETED)
    await example.start()
    await world.publisher.publish_events([event])
    await example.wait_for(lambda: "processed job.completed" in example.text())
    assert await example.terminate() == 0

    # Events sent while it is down wait in its durable queue; a replay re-sends what it already had.
    await world.publisher.publish_events([event])
    await example.start()
    await example.wait_for(lambda: "duplicate event " + event.record.event_id in example.text())
    assert await example.terminate() == 0
    assert world.rows("SELECT event_id FROM results") == {(event.record.event_id,)}
    assert await world.ready_count(world.queue) == 0


async def test_without_the_events_exchange_it_says_so_and_exits_1(world: World, example: Example) -> None:
    world.exchange = f"{world.exchange}.missing"
    await example.start(ready=False)
    assert example.proc is not None
    assert await asyncio.wait_for(example.proc.wait(), 20) == 1
    assert f"exchange {world.exchange} does not exist: start speechjobs first" in example.text()
