"""The batch pipeline on the in-memory store and a recording publisher: folding, faults, order, settling."""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiormq.exceptions
import pytest
from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic

from consumer.amqp.memory import RecordingPublisher
from consumer.amqp.publisher import OutboundEvent
from consumer.core.state import Outcome, event_id
from consumer.runtime.health import Health
from consumer.settings import load_settings
from consumer.store.memory import MemoryStore
from consumer.worker.pipeline import Pipeline
from schemas.job import Job, JobStatus, JobUpdate
from tests.conftest import fixture_bytes
from tests.integration.faults import tingwu_body

RUNNING = JobStatus.RUNNING
COMPLETED = JobStatus.COMPLETED

_delivery_tags = itertools.count(1)


@dataclass
class FakeMessage:
    """What the pipeline reads of an aio-pika incoming message; records how the pipeline settled it."""

    body: bytes
    routing_key: str = "callback.tingwu"
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    content_type: str | None = None
    exchange: str = "speechjobs.inbound"
    delivery_tag: int = field(default_factory=lambda: next(_delivery_tags))
    message_id: str = ""
    settled: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.message_id = self.message_id or f"m-{self.delivery_tag}"

    async def ack(self, multiple: bool = False) -> None:
        self.settled.append("ack(multiple)" if multiple else "ack")

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        self.settled.append("nack(requeue)" if requeue else "nack")


class Store(MemoryStore):
    """A MemoryStore that records the task ids of each apply, and fails (ValueError, not transient)
    every apply that carries a poisoned task id."""

    def __init__(self, *poisoned: str) -> None:
        super().__init__()
        self.poisoned = set(poisoned)
        self.applied: list[list[str]] = []

    async def apply(self, updates: Sequence[tuple[JobUpdate, datetime, str]]) -> list[Outcome]:
        task_ids = [update.task_id for update, _, _ in updates]
        self.applied.append(task_ids)
        if self.poisoned & set(task_ids):
            raise ValueError("poisoned task")
        return await super().apply(updates)


class WatchedPublisher(RecordingPublisher):
    """A RecordingPublisher that notes the process's readiness at each publish_events call."""

    def __init__(self, health: Health) -> None:
        super().__init__()
        self.health = health
        self.readiness: list[list[str]] = []

    async def publish_events(self, events: Sequence[OutboundEvent]) -> None:
        self.readiness.append(self.health.not_ready())
        await super().publish_events(events)


@dataclass
class Rig:
    pipeline: Pipeline
    store: Store
    publisher: RecordingPublisher
    health: Health

    async def run(self, *batch: FakeMessage, oldest: bool = True) -> None:
        messages = cast(Sequence[AbstractIncomingMessage], batch)
        await self.pipeline.process(messages, oldest=lambda: oldest)

    def job(self, task: int) -> Job:
        return Job.model_validate_json(self.store.jobs[f"tingwu:{task_id(task)}"])

    def event_ids(self) -> list[str]:
        return [event.record.event_id for event in self.publisher.events]


def rig(
    store: Store | None = None,
    publisher: RecordingPublisher | None = None,
    health: Health | None = None,
    **settings: Any,
) -> Rig:
    """A pipeline that accepts Tingwu only, on a fresh store and publisher unless given ones."""
    loaded = load_settings(**({"providers": ("tingwu",)} | settings))
    health = health or Health(working=True)
    store = store or Store()
    publisher = publisher or RecordingPublisher()
    pipeline = Pipeline(
        loaded.amqp, loaded.consumer, loaded.limits, store=store, publisher=publisher, health=health
    )
    return Rig(pipeline, store, publisher, health)


def task_id(task: int) -> str:
    return f"task-{task:04d}"


def tingwu(task: int, status: str, **message: Any) -> FakeMessage:
    return FakeMessage(tingwu_body(task, status), **message)


def completed_event(task: int) -> str:
    return event_id("tingwu", task_id(task), COMPLETED)


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def settlements(batch: Sequence[FakeMessage]) -> list[list[str]]:
    """How each message was settled: its own acks and nacks, plus an ack(multiple) of a later message."""
    return [
        message.settled + [s for later in batch[i + 1 :] for s in later.settled if s == "ack(multiple)"]
        for i, message in enumerate(batch)
    ]


def logged(caplog: pytest.LogCaptureFixture) -> dict[str, dict[str, Any]]:
    """The pipeline's one log line per message, as its `extra` fields, by message id."""
    lines = [vars(r) for r in caplog.records if r.name == "speechjobs.pipeline" and "outcome" in vars(r)]
    return {line["message_id"]: line for line in lines}


async def test_updates_of_one_task_in_a_batch_fold_into_one_job_and_one_event() -> None:
    r = rig()
    batch = [tingwu(1, "ONGOING"), tingwu(1, "COMPLETED")]
    await r.run(*batch)
    assert list(r.store.jobs) == [f"tingwu:{task_id(1)}"]
    assert r.store.applied == [[task_id(1), task_id(1)]]  # one round trip for the whole batch
    job = r.job(1)
    assert job.status is COMPLETED
    assert [(h.status, h.applied) for h in job.history] == [(RUNNING, True), (COMPLETED, True)]
    assert r.event_ids() == [completed_event(1)]
    assert settlements(batch) == [["ack(multiple)"], ["ack(multiple)"]]


async def test_duplicates_in_a_batch_publish_one_event_and_log_as_duplicates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="speechjobs.pipeline")
    r = rig()
    batch = [tingwu(1, "COMPLETED", message_id=name) for name in ("first", "second", "third")]
    await r.run(*batch)
    assert r.event_ids() == [completed_event(1)]
    assert len(r.job(1).history) == 1
    lines = logged(caplog)
    assert {name: line["outcome"] for name, line in lines.items()} == {
        "first": "stored",
        "second": "duplicate",
        "third": "duplicate",
    }
    assert lines["first"]["task_ids"] == lines["third"]["task_ids"] == [task_id(1)]
    assert lines["first"]["transitions"] == [f"{task_id(1)}:completed"]
    assert lines["third"]["transitions"] == []


@pytest.mark.parametrize("oldest", [True, False], ids=["oldest", "behind-another"])
async def test_bad_messages_in_a_batch_are_dead_lettered_and_the_rest_stored(oldest: bool) -> None:
    r = rig()  # tingwu only
    garbage = FakeMessage(b"not json")
    tencent = FakeMessage(
        fixture_bytes("seeds/tencent_ci_tts_callback_case1.xml"), routing_key="callback.tencent-ci"
    )
    batch = [tingwu(1, "COMPLETED"), garbage, tencent, tingwu(2, "COMPLETED")]
    await r.run(*batch, oldest=oldest)
    letters = [(d.message_id, d.body, d.rejection.reason) for d in r.publisher.dead_letters]
    assert letters == [
        (garbage.message_id, garbage.body, "malformed"),
        (tencent.message_id, tencent.body, "unsupported-provider"),
    ]
    assert sorted(r.store.jobs) == [f"tingwu:{task_id(1)}", f"tingwu:{task_id(2)}"]
    assert r.event_ids() == [completed_event(1), completed_event(2)]
    assert all(len(settled) == 1 and settled[0].startswith("ack") for settled in settlements(batch))


async def test_a_late_update_in_a_later_batch_leaves_the_job_terminal() -> None:
    r = rig()
    await r.run(tingwu(1, "COMPLETED"))
    late = tingwu(1, "ONGOING")
    await r.run(late)
    job = r.job(1)
    assert job.status is COMPLETED
    assert [(h.status, h.applied) for h in job.history] == [(COMPLETED, True), (RUNNING, False)]
    assert r.event_ids() == [completed_event(1)]
    assert late.settled == ["ack(multiple)"]


async def test_the_oldest_batch_is_acked_by_one_multiple_ack_on_its_last_message() -> None:
    r = rig()
    batch = [tingwu(1, "ONGOING"), tingwu(2, "ONGOING"), tingwu(3, "ONGOING")]
    await r.run(*batch, oldest=True)
    assert [m.settled for m in batch] == [[], [], ["ack(multiple)"]]


async def test_a_batch_behind_an_unsettled_one_acks_each_message_singly() -> None:
    r = rig()
    batch = [tingwu(1, "ONGOING"), tingwu(2, "ONGOING"), tingwu(3, "ONGOING")]
    await r.run(*batch, oldest=False)
    assert [m.settled for m in batch] == [["ack"], ["ack"], ["ack"]]


async def test_a_failing_message_is_requeued_and_the_rest_of_its_batch_stored_one_by_one() -> None:
    r = rig(Store(task_id(2)), max_deliveries=2)
    batch = [
        tingwu(1, "COMPLETED"),
        tingwu(2, "COMPLETED", headers={"x-delivery-count": 0}),
        tingwu(3, "COMPLETED"),
    ]
    await r.run(*batch, oldest=True)
    assert r.store.applied == [[task_id(1), task_id(2), task_id(3)], [task_id(1)], [task_id(2)], [task_id(3)]]
    assert sorted(r.store.jobs) == [f"tingwu:{task_id(1)}", f"tingwu:{task_id(3)}"]
    assert r.event_ids() == [completed_event(1), completed_event(3)]
    assert [m.settled for m in batch] == [["ack"], ["nack(requeue)"], ["ack"]]
    assert r.publisher.dead_letters == []


@pytest.mark.parametrize(
    "redelivery",
    [{"headers": {"x-delivery-count": 1}}, {"redelivered": True}],
    ids=["quorum-count", "classic-redelivered"],
)
async def test_a_message_failing_on_its_last_delivery_is_dead_lettered(redelivery: dict[str, Any]) -> None:
    r = rig(Store(task_id(2)), max_deliveries=2)
    failing = tingwu(2, "COMPLETED", **redelivery)
    batch = [tingwu(1, "COMPLETED"), failing]
    await r.run(*batch, oldest=False)
    (letter,) = r.publisher.dead_letters
    assert (letter.message_id, letter.rejection.reason, letter.deliveries) == (
        failing.message_id,
        "processing-failed",
        2,
    )
    assert letter.rejection.message == "ValueError on each of 2 deliveries"
    assert list(r.store.jobs) == [f"tingwu:{task_id(1)}"]
    assert [m.settled for m in batch] == [["ack"], ["ack"]]


@pytest.mark.parametrize(
    ("fault", "name"),
    [
        (ConnectionError("connection reset"), "ConnectionError"),
        (aiormq.exceptions.DeliveryError(None, Basic.Nack()), "DeliveryError"),
    ],
    ids=["connection-lost", "nacked"],
)
async def test_a_transient_publish_failure_is_retried_and_publishes_once(
    fault: BaseException, name: str
) -> None:
    health = Health(working=True)
    publisher = WatchedPublisher(health)
    publisher.fail_next(1, fault)
    r = rig(publisher=publisher, health=health)
    message = tingwu(1, "COMPLETED")
    await r.run(message)
    assert r.event_ids() == [completed_event(1)]
    assert publisher.calls == 2
    assert publisher.readiness == [[], [f"broker unavailable: {name}"]]
    assert health.not_ready() == []
    assert set(r.store.confirmed) == {completed_event(1)}
    assert message.settled == ["ack(multiple)"]


@pytest.mark.parametrize(
    ("redelivered", "confirm_logged", "published"),
    [(False, False, 1), (False, True, 1), (True, True, 1), (True, False, 2)],
    ids=["fresh-unconfirmed", "fresh-confirmed", "redelivered-confirmed", "redelivered-unconfirmed"],
)
async def test_only_a_redelivered_duplicate_republishes_and_only_an_unconfirmed_event(
    redelivered: bool, confirm_logged: bool, published: int
) -> None:
    r = rig()
    await r.run(tingwu(1, "COMPLETED"))
    if not confirm_logged:  # the owner is still publishing, or died before logging the confirm
        r.store.confirmed.clear()
    duplicate = tingwu(1, "COMPLETED", redelivered=redelivered)
    await r.run(duplicate)
    assert r.event_ids() == [completed_event(1)] * published
    assert duplicate.settled == ["ack(multiple)"]


async def test_the_raw_archive_keeps_one_entry_per_distinct_body() -> None:
    r = rig()
    ongoing, completed = tingwu_body(1, "ONGOING"), tingwu_body(1, "COMPLETED")
    other = tingwu_body(2, "ONGOING")
    await r.run(FakeMessage(ongoing), FakeMessage(ongoing), FakeMessage(completed), FakeMessage(b"not json"))
    await r.run(FakeMessage(completed), FakeMessage(other))
    assert sorted(r.store.raw) == sorted(sha256(body) for body in (ongoing, completed, other))
    kept, task_ids = r.store.raw[sha256(completed)]
    assert (kept.body, kept.routing_key, kept.provider, task_ids) == (
        completed,
        "callback.tingwu",
        "tingwu",
        {task_id(1)},
    )


# Tracking: `track.<provider>` messages put a job on the poller's schedule -------------------------------


async def test_a_tracked_job_is_stored_queued_and_put_on_the_schedule() -> None:
    r = rig()
    before = datetime.now(UTC)
    message = FakeMessage(b'{"task_id": "task-0001"}', routing_key="track.tingwu")
    await r.run(message)
    assert message.settled == ["ack(multiple)"]
    job = r.job(1)
    assert (job.status, job.provider_status, job.source) == (JobStatus.QUEUED, "TRACKED", "speechjobs.track")
    due = r.store.tracked["tingwu:task-0001"]
    assert before + timedelta(seconds=59) <= due <= datetime.now(UTC) + timedelta(seconds=61)
    assert r.event_ids() == []  # queued is no transition a subscriber hears of


async def test_tracking_a_running_job_changes_nothing_but_the_schedule() -> None:
    r = rig()
    await r.run(tingwu(1, "ONGOING"))
    await r.run(FakeMessage(b'{"task_id": "task-0001"}', routing_key="track.tingwu"))
    assert r.job(1).status == RUNNING
    assert "tingwu:task-0001" in r.store.tracked


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"task_id": ""}',
        b'{"task_id": 42}',
        b'{"taskId": "x"}',
        b'["task-1"]',
        b'{"task_id": "' + b"x" * 300 + b'"}',
    ],
)
async def test_a_bad_track_body_is_dead_lettered_as_invalid(body: bytes) -> None:
    r = rig()
    message = FakeMessage(body, routing_key="track.tingwu")
    await r.run(message)
    assert [letter.rejection.reason for letter in r.publisher.dead_letters] == ["invalid-payload"]
    assert r.store.tracked == {}
