"""Publish as the relay, observe MongoDB and the event stream: the service's promises end to end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from consumer.core.state import event_id
from schemas.event import JobEvent
from schemas.job import JobStatus
from tests.conftest import fixture_bytes
from tests.integration.faults import tingwu_body
from tests.integration.harness import DB, Bus, Names, ServiceProcess, published_ids

SEED_TASK = "e8adc0b3bc4b42d898fcadb0********"


async def wait_for_doc(db: DB, key: str, *, status: str | None = None, timeout: float = 15) -> dict[str, Any]:
    for _ in range(int(timeout / 0.05)):
        doc = await db.jobs.find_one({"_id": key})
        if (
            doc is not None
            and (status is None or doc["status"] == status)
            and (doc.get("event") is None or doc["event"]["event_id"] in await published_ids(db))
        ):
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"no job {key} with status {status}: {await db.jobs.find_one({'_id': key})}")


async def test_progressive_updates_to_one_job_and_one_event(
    service: ServiceProcess, bus: Bus, names: Names, db: DB
) -> None:
    await bus.publish(fixture_bytes("seeds/tingwu_callback_ongoing_partial.json"), "callback.tingwu")
    await wait_for_doc(db, f"tingwu:{SEED_TASK}", status="running")
    await bus.publish(
        fixture_bytes("seeds/tingwu_callback_completed.json"),
        "callback.tingwu",
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    doc = await wait_for_doc(db, f"tingwu:{SEED_TASK}", status="completed")
    assert doc["provider"] == "tingwu"
    assert doc["task_id"] == SEED_TASK
    assert doc["provider_status"] == "COMPLETED"
    assert doc["kind"] == "transcription"
    assert doc["task_key"] == "TingwuDemo"
    assert doc["error"] is None
    assert set(doc["results"]) == {"Transcription", "AutoChapters"}
    assert [(h["status"], h["applied"]) for h in doc["history"]] == [("running", True), ("completed", True)]
    assert await published_ids(db) == {doc["event"]["event_id"]}
    assert doc["created_at"] <= doc["updated_at"]

    events = await bus.drain(names.events_queue, expect=1)
    assert len(events) == 1
    message = events[0]
    assert message.routing_key == "job.completed"
    assert message.headers["provider"] == "tingwu"
    assert message.headers["kind"] == "transcription"
    assert message.headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert message.delivery_mode == 2
    event = JobEvent.model_validate_json(message.body)
    assert event.event_id == event_id("tingwu", SEED_TASK, JobStatus.COMPLETED) == message.message_id
    assert event.type == "job.completed"
    assert event.results == doc["results"]

    kept = [body async for chunk in db.raw_bodies.find({"task_ids": SEED_TASK}) for body in chunk["bodies"]]
    assert sorted(body["body"] for body in kept) == sorted(
        [
            fixture_bytes("seeds/tingwu_callback_ongoing_partial.json"),
            fixture_bytes("seeds/tingwu_callback_completed.json"),
        ]
    )
    assert {(body["routing_key"], body["provider"]) for body in kept} == {("callback.tingwu", "tingwu")}


async def test_duplicates_emit_one_event(service: ServiceProcess, bus: Bus, names: Names, db: DB) -> None:
    body = fixture_bytes("seeds/tingwu_callback_failed.json")
    for _ in range(3):
        await bus.publish(body, "callback.tingwu")
    doc = await wait_for_doc(db, f"tingwu:{SEED_TASK}", status="failed")
    events = await bus.drain(names.events_queue, expect=1, settle=1.0)
    assert [e.routing_key for e in events] == ["job.failed"]
    assert json.loads(events[0].body)["error"] == {
        "code": "TSC.AudioFileLink",
        "message": "Audio file link invalid.",
    }
    assert len(doc["history"]) == 1


async def test_out_of_order_stays_terminal(service: ServiceProcess, bus: Bus, names: Names, db: DB) -> None:
    await bus.publish(fixture_bytes("seeds/tingwu_callback_completed.json"), "callback.tingwu")
    await wait_for_doc(db, f"tingwu:{SEED_TASK}", status="completed")
    await bus.publish(fixture_bytes("seeds/tingwu_callback_ongoing_partial.json"), "callback.tingwu")
    await bus.publish(fixture_bytes("seeds/tingwu_callback_failed.json"), "callback.tingwu")
    doc: dict[str, Any] = {}
    for _ in range(100):
        doc = await db.jobs.find_one({"_id": f"tingwu:{SEED_TASK}"}) or {}
        if len(doc["history"]) == 3:
            break
        await asyncio.sleep(0.05)
    assert doc["status"] == "completed"
    assert [(h["provider_status"], h["applied"]) for h in doc["history"]] == [
        ("COMPLETED", True),
        ("ONGOING", False),
        ("FAILED", False),
    ]
    events = await bus.drain(names.events_queue, expect=1, settle=1.0)
    assert [e.routing_key for e in events] == ["job.completed"]


async def test_garbage_is_dead_lettered_with_reason_and_intact(
    service: ServiceProcess, bus: Bus, names: Names, db: DB
) -> None:
    garbage = b"\x00\x01 definitely not a vendor body"
    await bus.publish(
        garbage, "callback.tingwu", {"x-custom": "kept"}, content_type="application/json", message_id="m-1"
    )
    await bus.publish(b'{"Code":"0","Data":{"TaskStatus":"COMPLETED"}}', "callback.tingwu")
    await bus.publish(b"<Response><QueueList/></Response>", "callback.unknown")
    letters = await bus.drain(names.dead_letter_queue, expect=3)
    assert len(letters) == 3
    first = letters[0]
    assert first.body == garbage
    assert first.headers["x-speechjobs-reason"] == "malformed"
    assert first.headers["x-speechjobs-error"]
    assert first.headers["x-custom"] == "kept"
    assert first.headers["x-original-routing-key"] == "callback.tingwu"
    assert first.headers["x-original-exchange"] == names.inbound_exchange
    assert first.headers["x-speechjobs-provider"] == "tingwu"
    assert first.message_id == "m-1"
    assert first.content_type == "application/json"
    assert [m.headers["x-speechjobs-reason"] for m in letters[1:]] == ["missing-task-id", "unknown-format"]
    assert await db.jobs.count_documents({}) == 0
    assert await bus.queue_depth(names.inbound_queue) == 0


async def test_console_ping_is_acked_and_logged(
    service: ServiceProcess, bus: Bus, names: Names, db: DB
) -> None:
    await bus.publish(fixture_bytes("seeds/tingwu_callback_test_ping.json"), "callback.tingwu")
    await bus.publish(fixture_bytes("seeds/tingwu_callback_failed.json"), "callback.tingwu")
    await wait_for_doc(db, f"tingwu:{SEED_TASK}", status="failed")
    assert await bus.drain(names.dead_letter_queue, expect=0, settle=0.3) == []
    outcomes = [
        line.get("outcome") for line in service.log_lines() if line.get("logger") == "speechjobs.pipeline"
    ]
    assert outcomes == ["ignored", "stored"]


async def test_a_late_retry_republishes_only_an_event_whose_confirm_is_not_logged(
    bus: Bus, names: Names, db: DB
) -> None:
    # A 0.2 s publish timeout makes the lease (3x) short enough to outlive in a test.
    proc = ServiceProcess(names, SPEECHJOBS_PUBLISH_TIMEOUT_S="0.2")
    await proc.start()
    try:
        body = tingwu_body(3, "COMPLETED")
        await bus.publish(body, "callback.tingwu")
        (first,) = await bus.drain(names.events_queue, expect=1)
        await asyncio.sleep(0.7)
        await bus.publish(body, "callback.tingwu")  # the vendor's retry, after the lease
        assert await bus.drain(names.events_queue, expect=0, settle=1.5) == []

        # The confirm was lost (say the writer died between the broker's confirm and the log):
        # the next retry after the lease takes over the event and publishes it once more.
        assert (await db.published_events.delete_many({})).deleted_count == 1
        await bus.publish(body, "callback.tingwu")
        await bus.publish(body, "callback.tingwu")
        again = await bus.drain(names.events_queue, expect=1, settle=1.5)
        assert [e.message_id for e in again] == [first.message_id]
        assert await published_ids(db) == {first.message_id}
    finally:
        assert await proc.stop() == 0
    outcomes = [line["outcome"] for line in proc.log_lines() if "outcome" in line]
    assert outcomes == ["stored", "duplicate", "duplicate", "duplicate"]


async def test_the_standard_asyncio_loop_runs_the_service_too(bus: Bus, names: Names, db: DB) -> None:
    proc = ServiceProcess(names, SPEECHJOBS_EVENT_LOOP="asyncio")
    await proc.start()
    try:
        await bus.publish(tingwu_body(5, "COMPLETED"), "callback.tingwu")
        (event,) = await bus.drain(names.events_queue, expect=1)
        assert event.routing_key == "job.completed"
    finally:
        assert await proc.stop() == 0
    loops = [line["event_loop"] for line in proc.log_lines() if line.get("msg") == "consuming"]
    assert loops == ["asyncio"]


async def test_uvloop_is_the_default_loop(service: ServiceProcess) -> None:
    loops = [line["event_loop"] for line in service.log_lines() if line.get("msg") == "consuming"]
    assert loops == ["uvloop"]
