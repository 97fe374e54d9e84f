"""`events replay` against the real service, broker and database: the original events, to one queue."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from aio_pika.abc import AbstractIncomingMessage

from consumer.core.state import event_id
from schemas.job import JobStatus
from tests.conftest import fixture_bytes
from tests.integration.faults import tingwu_body
from tests.integration.harness import (
    DB,
    Bus,
    Cli,
    Names,
    Run,
    ServiceProcess,
    published_ids,
)

TENCENT_TASK = "j707f4864f86811ecb90d0b03267ce0e5"  # tests/fixtures/seeds/tencent_ci_tts_callback_case1.xml
COMPLETED_TASKS = range(1, 7)
FAILED_TASKS = range(7, 10)
RUNNING_TASKS = range(10, 12)


@dataclass
class Stored:
    """What the real pipeline stored and published: the original events by event id, and when."""

    originals: dict[str, AbstractIncomingMessage]
    before: datetime  # before the first batch
    between: datetime  # after the first batch was stored, before the second


async def _wait_for_events(db: DB, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(await published_ids(db)) < count:
        assert time.monotonic() < deadline, f"{len(await published_ids(db))} of {count} events confirmed"
        await asyncio.sleep(0.05)


@pytest.fixture
async def stored(service: ServiceProcess, bus: Bus, names: Names, db: DB) -> Stored:
    """Two batches through the real service: tingwu completed and running jobs, then tingwu failed ones and
    one Tencent CI job; the original events captured from the events exchange (its unrouted queue here)."""
    before = datetime.now(UTC)
    for task in COMPLETED_TASKS:
        await bus.publish(tingwu_body(task, "ONGOING"), "callback.tingwu")
        await bus.publish(tingwu_body(task, "COMPLETED"), "callback.tingwu")
    for task in RUNNING_TASKS:
        await bus.publish(tingwu_body(task, "ONGOING"), "callback.tingwu")
    await _wait_for_events(db, len(COMPLETED_TASKS))
    deadline = time.monotonic() + 20
    while await db.jobs.count_documents({}) < len(COMPLETED_TASKS) + len(RUNNING_TASKS):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.05)  # MongoDB keeps milliseconds: a clear gap between the batches
    between = datetime.now(UTC)
    await asyncio.sleep(0.05)
    for task in FAILED_TASKS:
        await bus.publish(tingwu_body(task, "FAILED"), "callback.tingwu")
    await bus.publish(fixture_bytes("seeds/tencent_ci_tts_callback_case1.xml"), "callback.tencent-ci")
    total = len(COMPLETED_TASKS) + len(FAILED_TASKS) + 1
    await _wait_for_events(db, total)
    messages = await bus.drain(names.events_queue, expect=total)
    originals = {message.message_id or "": message for message in messages}
    assert len(originals) == len(messages) == total
    return Stored(originals, before, between)


@pytest.fixture
async def subscriber(bus: Bus, names: Names) -> AsyncIterator[str]:
    """A fresh, unbound queue of the test's own: only a replay can put anything in it."""
    assert bus.connection is not None
    name = f"t.{names.suffix}.subscriber"
    channel = await bus.connection.channel()
    await channel.declare_queue(name, durable=True)
    yield name
    await channel.queue_delete(name)
    await channel.close()


def tingwu_event(task: int, status: JobStatus) -> str:
    return event_id("tingwu", f"task-{task:04d}", status)


def _summary(run: Run) -> str:
    return run.out.strip().splitlines()[-1]


async def test_replay_sends_exactly_the_matching_events_as_first_published(
    stored: Stored, bus: Bus, subscriber: str, cli: Cli
) -> None:
    run = await cli(
        "events",
        "replay",
        "--since",
        stored.before.isoformat(),
        "--provider",
        "tingwu",
        "--to-queue",
        subscriber,
    )
    assert run.code == 0, run.err
    expected = {tingwu_event(t, JobStatus.COMPLETED) for t in COMPLETED_TASKS}
    expected |= {tingwu_event(t, JobStatus.FAILED) for t in FAILED_TASKS}
    assert _summary(run).startswith(
        f"matched {len(expected)}, published {len(expected)}, skipped 0, failed 0 in "
    )
    assert "replaying 9/9" in run.err  # the progress line (a plain line when stderr is not a terminal)

    got = await bus.drain(subscriber, expect=len(expected), timeout=10)
    assert [m.message_id for m in got] == [json.loads(m.body)["event_id"] for m in got]
    assert {m.message_id for m in got} == expected
    assert len(got) == len(expected)  # each once
    for message in got:
        original = stored.originals[message.message_id or ""]
        assert message.body == original.body  # byte for byte: the stored event record, not a rebuilt one
        assert message.headers == original.headers == {"provider": "tingwu", "kind": "transcription"}
        assert (message.type, message.content_type, message.delivery_mode) == (
            original.type,
            "application/json",
            original.delivery_mode,
        )
        assert message.delivery_mode == 2
        assert (message.exchange, message.routing_key) == ("", subscriber)
        assert original.routing_key == json.loads(original.body)["type"]


async def test_replay_filters_by_status_and_since(
    stored: Stored, bus: Bus, subscriber: str, cli: Cli
) -> None:
    run = await cli(
        "events",
        "replay",
        "--since",
        stored.before.isoformat(),
        "--status",
        "failed",
        "--to-queue",
        subscriber,
    )
    assert run.code == 0, run.err
    got = await bus.drain(subscriber, expect=len(FAILED_TASKS), timeout=10)
    assert {m.message_id for m in got} == {tingwu_event(t, JobStatus.FAILED) for t in FAILED_TASKS}

    # Since the second batch: its failed jobs and the Tencent CI one, none of the first batch's.
    run = await cli("events", "replay", "--since", stored.between.isoformat(), "--to-queue", subscriber)
    assert run.code == 0, run.err
    got = await bus.drain(subscriber, expect=len(FAILED_TASKS) + 1, timeout=10)
    tencent = event_id("tencent-ci", TENCENT_TASK, JobStatus.COMPLETED)
    assert {m.message_id for m in got} == {tingwu_event(t, JobStatus.FAILED) for t in FAILED_TASKS} | {
        tencent
    }
    [message] = [m for m in got if m.message_id == tencent]
    assert message.body == stored.originals[tencent].body
    assert message.headers == {"provider": "tencent-ci", "kind": "tts"}

    # A relative time: everything stored in the last hour is in it.
    run = await cli("events", "replay", "--since", "1h", "--dry-run", "--to-queue", subscriber)
    assert _summary(run).startswith("dry run: matched 10, would publish 10, skipped 0, failed 0")


async def test_dry_run_shows_what_would_be_sent_and_sends_nothing(
    stored: Stored, bus: Bus, subscriber: str, cli: Cli
) -> None:
    run = await cli(
        "events",
        "replay",
        "--since",
        stored.before.isoformat(),
        "--status",
        "completed",
        "--provider",
        "tingwu",
        "--to-queue",
        subscriber,
        "--dry-run",
    )
    assert run.code == 0, run.err
    lines = run.out.strip().splitlines()
    assert lines[-1].startswith("dry run: matched 6, would publish 6, skipped 0, failed 0")
    shown = [line.split() for line in lines[:-1]]
    assert {line[0] for line in shown} == {tingwu_event(t, JobStatus.COMPLETED) for t in COMPLETED_TASKS}
    assert all(line[1:3] == ["job.completed", "tingwu"] for line in shown)
    await asyncio.sleep(0.3)
    assert await bus.queue_depth(subscriber) == 0


async def test_rate_spaces_the_events(stored: Stored, bus: Bus, subscriber: str, cli: Cli) -> None:
    run = await cli(
        "events",
        "replay",
        "--since",
        stored.before.isoformat(),
        "--status",
        "completed",
        "--to-queue",
        subscriber,
        "--rate",
        "4",
    )
    assert run.code == 0, run.err
    # 7 events (6 Tingwu, 1 Tencent CI) at 4 a second: the last starts 6/4 s after the first.
    assert run.seconds >= 1.4, run.seconds
    assert run.seconds < 10, run.seconds
    reported = float(_summary(run).rsplit(" in ", 1)[1].removesuffix(" s"))
    assert reported >= 1.4
    assert len(await bus.drain(subscriber, expect=7, timeout=10)) == 7


async def test_a_missing_queue_fails_clearly_and_publishes_nothing(
    stored: Stored, names: Names, cli: Cli
) -> None:
    missing = f"t.{names.suffix}.nobody-{uuid.uuid4().hex[:6]}"
    run = await cli("events", "replay", "--since", stored.before.isoformat(), "--to-queue", missing)
    assert run.code == 1
    assert run.out == ""
    assert f"speechjobs: queue {missing} does not exist" in run.err
    assert "Traceback" not in run.err


async def test_a_queue_deleted_during_the_replay_stops_it(
    stored: Stored, bus: Bus, names: Names, cli: Cli
) -> None:
    assert bus.connection is not None
    queue = f"t.{names.suffix}.short-lived"
    channel = await bus.connection.channel()
    await channel.declare_queue(queue)
    args = ("events", "replay", "--since", stored.before.isoformat(), "--to-queue", queue, "--rate", "2")
    replay = asyncio.ensure_future(cli(*args))
    await asyncio.sleep(1.2)  # 10 events at 2 a second: some sent, most not yet
    await channel.queue_delete(queue)
    run = await replay
    await channel.close()
    assert run.code == 1
    summary = _summary(run)
    assert f"returned: queue {queue} no longer exists" in summary
    published = int(summary.split("published ")[1].split(",")[0])
    failed = int(summary.split("failed ")[1].split(" ")[0])
    assert 1 <= published <= 5
    assert failed == 1  # the returned one; nothing was sent after it
    assert run.seconds < 4  # stopped, not paced through all ten


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday", "--to-queue", "q"], "argument --since: not an ISO time or a duration"),
        (["--to-queue", "q"], "the following arguments are required: --since"),
        (["--since", "1h"], "the following arguments are required: --to-queue"),
        (["--since", "1h", "--to-queue", "q", "--rate", "0"], "argument --rate: not a positive number: '0'"),
        (["--since", "1h", "--to-queue", "q", "--status", "running"], "argument --status: invalid choice"),
        (
            ["--since", "1h", "--to-queue", "x" * 256],
            "argument --to-queue: not a queue name (1 to 255 bytes)",
        ),
    ],
)
async def test_bad_arguments_are_refused_clearly(cli: Cli, args: list[str], message: str) -> None:
    run = await cli("events", "replay", *args)
    assert run.code == 2
    assert message in run.err
    assert "Traceback" not in run.err


async def test_an_unreachable_broker_is_one_clear_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECHJOBS_AMQP_URL", "amqp://replayer:pa55word@127.0.0.1:1/")
    run = await cli("events", "replay", "--since", "1h", "--to-queue", "q")
    assert run.code == 1
    assert "speechjobs: cannot reach the broker: " in run.err
    assert "pa55word" not in run.err


async def test_since_after_every_update_matches_nothing(
    stored: Stored, bus: Bus, subscriber: str, cli: Cli
) -> None:
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    run = await cli("events", "replay", "--since", later, "--to-queue", subscriber)
    assert run.code == 0, run.err
    assert _summary(run).startswith("matched 0, published 0, skipped 0, failed 0 in ")
    await asyncio.sleep(0.2)
    assert await bus.queue_depth(subscriber) == 0
