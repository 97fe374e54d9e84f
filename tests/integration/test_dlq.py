"""Dead-letter operations on the real broker and database: list, show, replay, purge, reprocess."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import FieldValue

from consumer.amqp.connection import declare_consumer_topology
from consumer.core.state import event_id
from consumer.settings import Settings, load_settings
from schemas.job import JobStatus
from tests.conftest import fixture_bytes
from tests.integration.harness import (
    AMQP_URL,
    DB,
    Bus,
    Cli,
    Names,
    ServiceProcess,
    mongodb_url,
    published_ids,
)

SEED_TASK = "e8adc0b3bc4b42d898fcadb0********"
POLL_FAILED_TASK = "b76389677b1441fa82165cb1********"
GARBAGE = b"\x00\x01 definitely not a vendor body"
NO_TASK = b'{"Code":"0","Data":{"TaskStatus":"COMPLETED"}}'
UNKNOWN_XML = b"<Response><QueueList/></Response>"


def settings(names: Names) -> Settings:
    return load_settings(**{k.removeprefix("SPEECHJOBS_").lower(): v for k, v in names.env.items()})


@pytest.fixture
async def topology(names: Names, bus: Bus) -> None:
    """The service's exchanges and queues, without a service consuming the inbound queue."""
    assert bus.connection is not None
    channel = await bus.connection.channel()
    config = settings(names)
    await declare_consumer_topology(channel, channel, config.amqp, config.consumer)
    await channel.close()


async def wait_depth(bus: Bus, queue: str, depth: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (current := await bus.queue_depth(queue)) != depth:
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue} holds {current} messages, expected {depth}")
        await asyncio.sleep(0.05)


async def wait_depth_at_least(bus: Bus, queue: str, depth: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while await bus.queue_depth(queue) < depth:
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue} never reached {depth} messages")
        await asyncio.sleep(0.02)


async def wait_job(db: DB, key: str, status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = await db.jobs.find_one({"_id": key})
        if (
            doc is not None
            and doc["status"] == status
            and (doc["event"] is None or doc["event"]["event_id"] in await published_ids(db))
        ):
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {status} job {key}: {await db.jobs.find_one({'_id': key})}")


async def dead_letter_via_service(
    service: ServiceProcess, bus: Bus, names: Names, messages: list[tuple[bytes, str, str]]
) -> None:
    """(body, routing key, message id) published as the relay would, dead-lettered by the real service."""
    before = await bus.queue_depth(names.dead_letter_queue)
    for body, routing_key, message_id in messages:
        await bus.publish(body, routing_key, message_id=message_id)
    await wait_depth(bus, names.dead_letter_queue, before + len(messages))


@asynccontextmanager
async def stopped_after(service: ServiceProcess) -> AsyncIterator[ServiceProcess]:
    await service.start()
    try:
        yield service
    finally:
        assert await service.stop() == 0, service.logs()[-3000:]


async def ids_in_order(cli: Cli, *args: str) -> list[str]:
    run = await cli("dlq", "list", "--json", *args)
    assert run.code == 0, run.err
    return [letter["id"] for letter in run.json_lines()]


async def test_list_shows_reasons_and_leaves_every_letter_in_place(
    service: ServiceProcess, bus: Bus, names: Names, cli: Cli
) -> None:
    await dead_letter_via_service(
        service,
        bus,
        names,
        [
            (GARBAGE, "callback.tingwu", "m-1"),
            (NO_TASK, "callback.tingwu", "m-2"),
            (UNKNOWN_XML, "callback.x", "m-3"),
        ],
    )

    run = await cli("dlq", "list", "--json")
    assert run.code == 0, run.err
    letters = run.json_lines()
    assert [(d["id"], d["reason"], d["provider"]) for d in letters] == [
        ("m-1", "malformed", "tingwu"),
        ("m-2", "missing-task-id", "tingwu"),
        ("m-3", "unknown-format", None),
    ]
    first = letters[0]
    assert first["routing_key"] == "callback.tingwu"
    assert first["size"] == len(GARBAGE)
    assert first["replays"] == 0
    assert datetime.fromisoformat(first["dead_lettered_at"]) <= datetime.now(UTC)
    assert first["target"] == {"exchange": names.inbound_exchange, "routing_key": "callback.tingwu"}

    await wait_depth(bus, names.dead_letter_queue, 3, timeout=2)
    assert await ids_in_order(cli) == ["m-1", "m-2", "m-3"]

    table = await cli("dlq", "list")
    assert table.out.splitlines()[0].split()[:2] == ["ID", "REASON"]
    assert [line.split()[:2] for line in table.out.splitlines()[1:]] == [
        ["m-1", "malformed"],
        ["m-2", "missing-task-id"],
        ["m-3", "unknown-format"],
    ]
    assert await ids_in_order(cli, "--reason", "missing-task-id") == ["m-2"]
    assert await ids_in_order(cli, "--provider", "tingwu", "--limit", "1") == ["m-1"]
    assert await ids_in_order(cli, "--since", "10m") == ["m-1", "m-2", "m-3"]
    assert await ids_in_order(cli, "--since", "2999-01-01") == []
    await wait_depth(bus, names.dead_letter_queue, 3, timeout=2)
    assert await ids_in_order(cli) == ["m-1", "m-2", "m-3"]


async def test_show_prints_headers_and_the_body(
    service: ServiceProcess, bus: Bus, names: Names, cli: Cli
) -> None:
    await dead_letter_via_service(
        service, bus, names, [(GARBAGE, "callback.tingwu", "m-1"), (NO_TASK, "callback.tingwu", "m-2")]
    )
    binary = await cli("dlq", "show", "m-1")
    assert binary.code == 0, binary.err
    assert "reason: malformed" in binary.out
    assert "  x-speechjobs-reason: malformed" in binary.out
    assert f"  x-original-exchange: {names.inbound_exchange}" in binary.out
    assert f"binary, {len(GARBAGE)} bytes" in binary.out
    assert "00000000  00 01 20 64" in binary.out

    text = await cli("dlq", "show", "m-2")
    assert "  x-speechjobs-reason: missing-task-id" in text.out
    assert text.out.rstrip().endswith(json.dumps(json.loads(NO_TASK), indent=2))

    missing = await cli("dlq", "show", "nope")
    assert missing.code == 1
    assert "no dead letter with ID nope" in missing.err
    await wait_depth(bus, names.dead_letter_queue, 2, timeout=2)


async def test_a_missing_dead_letter_queue_is_reported(cli: Cli) -> None:
    run = await cli("dlq", "list")
    assert run.code == 1
    assert "does not exist" in run.err


async def test_dry_run_replay_changes_nothing(bus: Bus, names: Names, cli: Cli) -> None:
    async with stopped_after(ServiceProcess(names)) as service:
        await dead_letter_via_service(
            service, bus, names, [(GARBAGE, "callback.tingwu", "m-1"), (NO_TASK, "callback.tingwu", "m-2")]
        )

    run = await cli("dlq", "replay", "--dry-run")
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        f"m-1  malformed  -> exchange {names.inbound_exchange} routing key callback.tingwu",
        f"m-2  missing-task-id  -> exchange {names.inbound_exchange} routing key callback.tingwu",
        "dry run: would replay 2, skip 0 (no known origin)",
    ]
    await wait_depth(bus, names.dead_letter_queue, 2, timeout=2)
    assert await bus.queue_depth(names.inbound_queue) == 0
    assert await ids_in_order(cli) == ["m-1", "m-2"]


async def test_provider_roll_out_enable_then_replay_its_dead_letters(
    names: Names, bus: Bus, db: DB, cli: Cli
) -> None:
    disabled = ServiceProcess(names, SPEECHJOBS_PROVIDERS="tencent-ci")
    await disabled.start()
    try:
        for name, routing_key in [
            ("seeds/tingwu_callback_ongoing_partial.json", "callback.tingwu"),
            ("seeds/tingwu_callback_completed.json", "callback.tingwu"),
            ("seeds/tingwu_poll_failed.json", "poll.tingwu"),
        ]:
            await bus.publish(fixture_bytes(name), routing_key)
        await wait_depth(bus, names.dead_letter_queue, 3)
    finally:
        assert await disabled.stop() == 0
    listed = (await cli("dlq", "list", "--json")).json_lines()
    assert [(d["reason"], d["provider"]) for d in listed] == [("unsupported-provider", "tingwu")] * 3
    assert await db.jobs.count_documents({}) == 0

    enabled = ServiceProcess(names, SPEECHJOBS_PROVIDERS="all")
    await enabled.start()
    try:
        run = await cli("dlq", "replay", "--provider", "tingwu")
        assert run.code == 0, run.err
        assert run.out.strip() == "replayed 3, skipped 0, failed 0; 0 not selected"
        completed = await wait_job(db, f"tingwu:{SEED_TASK}", "completed")
        failed = await wait_job(db, f"tingwu:{POLL_FAILED_TASK}", "failed")
        events = await bus.drain(names.events_queue, expect=2, settle=1.0)
    finally:
        assert await enabled.stop() == 0
    assert [h["status"] for h in completed["history"]] == ["running", "completed"]
    assert failed["error"]["code"] == "TSC.AudioFileLink"
    assert sorted((e.routing_key, e.message_id) for e in events) == [
        ("job.completed", event_id("tingwu", SEED_TASK, JobStatus.COMPLETED)),
        ("job.failed", event_id("tingwu", POLL_FAILED_TASK, JobStatus.FAILED)),
    ]
    assert await bus.queue_depth(names.dead_letter_queue) == 0


async def test_replayed_garbage_returns_to_the_dead_letters_counted(
    service: ServiceProcess, bus: Bus, names: Names, cli: Cli
) -> None:
    ids = [f"g-{i}" for i in range(3)]
    await dead_letter_via_service(
        service, bus, names, [(GARBAGE + i.encode(), "callback.tingwu", i) for i in ids]
    )

    run = await cli("dlq", "replay")
    assert run.code == 0, run.err
    assert run.out.strip() == "replayed 3, skipped 0, failed 0; 0 not selected"

    # Each replay reaches the service again and is dead-lettered again, behind the others.
    deadline = time.monotonic() + 20
    letters: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        letters = (await cli("dlq", "list", "--json")).json_lines()
        if [d["replays"] for d in letters] == [1, 1, 1]:
            break
        await asyncio.sleep(0.1)
    assert [(d["id"], d["reason"], d["replays"]) for d in letters] == [(i, "malformed", 1) for i in ids]
    assert await bus.queue_depth(names.inbound_queue) == 0
    shown = await cli("dlq", "show", "g-0")
    assert "  x-speechjobs-replays: 1" in shown.out


async def test_broker_dead_letters_replay_by_their_x_death(
    topology: None, bus: Bus, names: Names, cli: Cli
) -> None:
    await bus.publish(
        NO_TASK, "callback.tingwu", {"x-task-id": "t-1"}, content_type="application/json", message_id="b-1"
    )
    assert bus.channel is not None
    inbound = await bus.channel.get_queue(names.inbound_queue)
    message = await inbound.get(no_ack=False, timeout=5)
    await message.reject(requeue=False)
    await wait_depth(bus, names.dead_letter_queue, 1)

    (letter,) = (await cli("dlq", "list", "--json")).json_lines()
    assert (letter["id"], letter["reason"], letter["task_id"]) == ("b-1", "broker:rejected", "t-1")
    assert letter["target"] == {"exchange": names.inbound_exchange, "routing_key": "callback.tingwu"}

    run = await cli("dlq", "replay")
    assert run.code == 0, run.err
    (replayed,) = await bus.drain(names.inbound_queue, expect=1)
    assert replayed.body == NO_TASK
    assert (replayed.message_id, replayed.content_type) == ("b-1", "application/json")
    assert replayed.headers["x-task-id"] == "t-1"
    assert replayed.headers["x-speechjobs-replays"] == 1
    assert not any(h.startswith(("x-death", "x-first-death")) for h in replayed.headers)
    assert await bus.queue_depth(names.dead_letter_queue) == 0


async def test_replay_leaves_in_place_what_it_cannot_deliver(
    topology: None, bus: Bus, names: Names, cli: Cli
) -> None:
    assert bus.channel is not None
    lonely = await bus.channel.declare_exchange(f"t.{names.suffix}.lonely", aio_pika.ExchangeType.TOPIC)
    dead_letter = await bus.channel.get_exchange(names.dead_letter_exchange)
    origins = {
        "missing-exchange": {"x-original-exchange": "t.nowhere", "x-original-routing-key": "callback.tingwu"},
        "unroutable": {"x-original-exchange": lonely.name, "x-original-routing-key": "callback.tingwu"},
        "no-origin": {},
        "fine": {"x-original-exchange": names.inbound_exchange, "x-original-routing-key": "callback.tingwu"},
    }
    try:
        for message_id, origin in origins.items():
            headers: dict[str, FieldValue] = {"x-speechjobs-reason": "malformed", **origin}
            await dead_letter.publish(aio_pika.Message(b"{}", headers=headers, message_id=message_id), "")
        await wait_depth(bus, names.dead_letter_queue, 4)

        run = await cli("dlq", "replay")
        assert run.code == 1
        assert run.out.strip() == "replayed 1, skipped 1, failed 2; 0 not selected"
        await wait_depth(bus, names.dead_letter_queue, 3, timeout=2)
        assert await ids_in_order(cli) == ["missing-exchange", "unroutable", "no-origin"]
        assert [m.message_id for m in await bus.drain(names.inbound_queue, expect=1)] == ["fine"]
    finally:
        await lonely.delete()


async def test_interrupted_replay_loses_nothing(bus: Bus, names: Names) -> None:
    ids = [f"k-{i:03}" for i in range(100)]
    # Stopped before the replay: replays stay in the inbound queue where the test can count them.
    async with stopped_after(ServiceProcess(names)) as service:
        letters = [(GARBAGE + i.encode(), "callback.tingwu", i) for i in ids]
        await dead_letter_via_service(service, bus, names, letters)

    env = {
        **os.environ,
        **names.env,
        "SPEECHJOBS_AMQP_URL": AMQP_URL,
        "SPEECHJOBS_MONGODB_URL": mongodb_url(),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "dlq",
        "replay",
        "--rate",
        "20",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_depth_at_least(bus, names.inbound_queue, 10)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    # The broker hands back whatever the killed replay still held once it sees the connection drop.
    deadline = time.monotonic() + 20
    while await bus.queue_depth(names.dead_letter_queue) + await bus.queue_depth(names.inbound_queue) < 100:
        assert time.monotonic() < deadline, "messages missing after the interrupted replay"
        await asyncio.sleep(0.05)
    dead = await bus.drain(names.dead_letter_queue, expect=1, settle=0.5)
    replayed = await bus.drain(names.inbound_queue, expect=1, settle=0.5)
    assert 0 < len(dead) < 100
    assert len(dead) + len(replayed) >= 100
    assert {m.message_id for m in dead} | {m.message_id for m in replayed} == set(ids)
    assert all(m.headers["x-speechjobs-replays"] == 1 for m in replayed)


async def test_purge_needs_yes_and_deletes_only_the_selection(
    service: ServiceProcess, bus: Bus, names: Names, cli: Cli
) -> None:
    await dead_letter_via_service(
        service,
        bus,
        names,
        [
            (GARBAGE, "callback.tingwu", "m-1"),
            (UNKNOWN_XML, "callback.x", "u-1"),
            (GARBAGE, "callback.tingwu", "m-2"),
            (UNKNOWN_XML, "callback.x", "u-2"),
        ],
    )
    refused = await cli("dlq", "purge")
    assert refused.code == 2
    assert "would delete 4 dead letter(s)" in refused.err
    await wait_depth(bus, names.dead_letter_queue, 4, timeout=2)

    purged = await cli("dlq", "purge", "--reason", "unknown-format", "--yes")
    assert purged.code == 0, purged.err
    assert purged.out.strip() == "deleted 2 dead letter(s)"
    await wait_depth(bus, names.dead_letter_queue, 2, timeout=2)
    assert await ids_in_order(cli) == ["m-1", "m-2"]


async def test_reprocess_publishes_only_new_transitions(
    service: ServiceProcess, bus: Bus, names: Names, db: DB, cli: Cli
) -> None:
    for name in ("seeds/tingwu_callback_ongoing_partial.json", "seeds/tingwu_callback_completed.json"):
        await bus.publish(fixture_bytes(name), "callback.tingwu")
    known = await wait_job(db, f"tingwu:{SEED_TASK}", "completed")
    assert len(await bus.drain(names.events_queue, expect=1, settle=0.5)) == 1
    assert sum([len(chunk["bodies"]) async for chunk in db.raw_bodies.find({})]) == 2

    unchanged = await cli("reprocess")
    assert unchanged.code == 0, unchanged.err
    assert unchanged.out.splitlines()[-1].startswith(
        "bodies read 2, updates applied 0, transitions 0, events published 0, rejected 0"
    )
    assert await db.jobs.find_one({"_id": f"tingwu:{SEED_TASK}"}) == known

    # A body the service stored but that only now yields a job (as after a parser fix).
    body = fixture_bytes("seeds/tingwu_poll_failed.json")
    now = datetime.now(UTC)
    entry = {
        "sha256": hashlib.sha256(body).hexdigest(),
        "body": body,
        "truncated": False,
        "size": len(body),
        "routing_key": "poll.tingwu",
        "content_type": "application/json",
        "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "provider": "tingwu",
        "task_ids": [POLL_FAILED_TASK],
        "received_at": now,
    }
    chunk = {"_id": "manual", "received_at": now, "providers": ["tingwu"], "task_ids": [POLL_FAILED_TASK]}
    await db.raw_bodies.insert_one({**chunk, "bodies": [entry]})
    key = f"tingwu:{POLL_FAILED_TASK}"
    dry = await cli("reprocess", "--dry-run")
    assert dry.code == 0, dry.err
    assert f"would update {key}: new -> failed (event job.failed)" in dry.out
    assert dry.out.splitlines()[-1].startswith(
        "dry run: bodies read 3, updates would be applied 1, transitions 1, events would be published 1"
    )
    assert await db.jobs.find_one({"_id": key}) is None

    run = await cli("reprocess", "--provider", "tingwu", "--since", "1h")
    assert run.code == 0, run.err
    assert f"updated {key}: new -> failed (event job.failed)" in run.out
    assert run.out.splitlines()[-1].startswith(
        "bodies read 3, updates applied 1, transitions 1, events published 1, rejected 0"
    )
    doc = await db.jobs.find_one({"_id": key})
    assert doc is not None
    assert doc["status"] == "failed"
    assert doc["event"]["event_id"] in await published_ids(db)

    again = await cli("reprocess", "--task-id", POLL_FAILED_TASK)
    assert again.out.splitlines()[-1].startswith(
        "bodies read 1, updates applied 0, transitions 0, events published 0"
    )
    events = await bus.drain(names.events_queue, expect=1, settle=1.0)
    assert [(e.routing_key, e.message_id) for e in events] == [
        ("job.failed", event_id("tingwu", POLL_FAILED_TASK, JobStatus.FAILED))
    ]
    assert events[0].headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_reprocess_counts_bodies_that_now_reject(
    service: ServiceProcess, bus: Bus, names: Names, db: DB, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bus.publish(fixture_bytes("seeds/tingwu_callback_failed.json"), "callback.tingwu")
    await wait_job(db, f"tingwu:{SEED_TASK}", "failed")
    monkeypatch.setenv("SPEECHJOBS_PROVIDERS", "tencent-ci")
    run = await cli("reprocess")
    assert run.code == 0, run.err
    assert "rejected: unsupported-provider" in run.out
    assert run.out.splitlines()[-1].startswith(
        "bodies read 1, updates applied 0, transitions 0, events published 0, rejected 1"
    )
    assert await bus.queue_depth(names.dead_letter_queue) == 0
