"""The pure state machine: dedup, one-way status, result merging, the terminal event."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta

import pytest

from consumer.core.normalize import Limits
from consumer.core.state import HISTORY_MAX, RESULTS_MAX_BYTES, apply, event_id, publishing_duty
from schemas.event import JobEvent
from schemas.job import EventRecord, JobError, JobStatus
from tests.conftest import make_update

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
T2 = T0 + timedelta(seconds=2)

RUNNING = JobStatus.RUNNING
COMPLETED = JobStatus.COMPLETED
FAILED = JobStatus.FAILED


def test_first_update_creates_the_job_with_one_history_entry() -> None:
    outcome = apply(None, make_update(RUNNING, "ONGOING", task_key="k"), now=T0)
    assert outcome.kind == "new"
    assert outcome.changed
    assert outcome.event is None
    job = outcome.job
    assert (job.status, job.provider_status, job.task_key) == (RUNNING, "ONGOING", "k")
    assert [(h.status, h.provider_status, h.applied) for h in job.history] == [(RUNNING, "ONGOING", True)]
    assert job.created_at == job.updated_at == T0


def test_redelivery_changes_nothing_and_emits_nothing() -> None:
    first = apply(None, make_update(RUNNING, "ONGOING"), now=T0).job
    again = apply(first, make_update(RUNNING, "ONGOING"), now=T1)
    assert again.kind == "duplicate"
    assert not again.changed
    assert again.job is first
    assert again.event is None


def test_completion_creates_one_event_with_deterministic_id() -> None:
    running = apply(None, make_update(RUNNING, "ONGOING"), now=T0).job
    done = apply(running, make_update(COMPLETED, "COMPLETED", results={"Transcription": "u"}), now=T1)
    assert done.kind == "transition"
    assert done.event is not None
    assert done.event.event_id == event_id("tingwu", "t1", COMPLETED)
    assert done.event.routing_key == "job.completed"
    body = JobEvent.model_validate_json(done.event.body)
    assert body.type == "job.completed"
    assert body.occurred_at == T1
    assert body.results == {"Transcription": "u"}
    assert body.status is COMPLETED


def test_event_id_differs_by_status_and_task() -> None:
    ids = {
        event_id("tingwu", "a", COMPLETED),
        event_id("tingwu", "a", FAILED),
        event_id("tingwu", "b", COMPLETED),
        event_id("tencent-ci", "a", COMPLETED),
    }
    assert len(ids) == 4
    assert event_id("tingwu", "a", COMPLETED) == event_id("tingwu", "a", COMPLETED)


def test_late_ongoing_never_undoes_completed_but_is_recorded() -> None:
    done = apply(None, make_update(COMPLETED, "COMPLETED", results={"A": "final"}), now=T0).job
    late = apply(done, make_update(RUNNING, "ONGOING", results={"A": "partial", "B": "extra"}), now=T1)
    assert late.kind == "late"
    assert late.job.status is COMPLETED
    assert late.job.results == {"A": "final", "B": "extra"}
    assert [(h.provider_status, h.applied) for h in late.job.history] == [
        ("COMPLETED", True),
        ("ONGOING", False),
    ]
    # the event stays the one from the completion (still pending until confirmed)
    assert late.event is not None
    assert late.event.event_id == event_id("tingwu", "t1", COMPLETED)


def test_first_terminal_state_wins_and_conflict_is_history_only() -> None:
    done = apply(None, make_update(COMPLETED, "COMPLETED"), now=T0).job
    conflict = apply(done, make_update(FAILED, "FAILED", error=JobError(code="E", message="m")), now=T1)
    assert conflict.kind == "conflict"
    assert conflict.job.status is COMPLETED
    assert conflict.job.error is None
    assert conflict.job.history[-1].status is FAILED
    assert conflict.job.history[-1].applied is False
    assert conflict.job.event == done.event
    # the same conflicting state again is a duplicate
    assert apply(conflict.job, make_update(FAILED, "FAILED"), now=T2).kind == "duplicate"


def test_progressive_partial_results_merge() -> None:
    one = apply(None, make_update(RUNNING, "ONGOING", results={"Transcription": "t"}), now=T0).job
    two = apply(one, make_update(RUNNING, "ONGOING", results={"AutoChapters": "c"}), now=T1)
    assert two.kind == "merged"
    assert two.job.results == {"Transcription": "t", "AutoChapters": "c"}
    assert two.job.updated_at == T1
    assert len(two.job.history) == 1


def test_same_rank_new_state_moves_and_old_one_does_not_come_back() -> None:
    running = apply(None, make_update(RUNNING, "ONGOING"), now=T0).job
    paused = apply(running, make_update(JobStatus.PAUSED, "PAUSED"), now=T1)
    assert paused.kind == "transition"
    assert paused.job.status is JobStatus.PAUSED
    again = apply(paused.job, make_update(RUNNING, "ONGOING"), now=T2)
    assert again.job.status is JobStatus.PAUSED
    assert again.kind == "duplicate"


def test_queued_after_running_is_late() -> None:
    running = apply(None, make_update(RUNNING, "Running", provider="tencent-ci"), now=T0).job
    late = apply(running, make_update(JobStatus.QUEUED, "Submitted", provider="tencent-ci"), now=T1)
    assert late.job.status is RUNNING
    assert late.kind == "late"


def test_failed_event_carries_the_error_and_routes_as_job_failed() -> None:
    out = apply(
        None, make_update(FAILED, "FAILED", error=JobError(code="TSC.AudioFileLink", message="bad")), now=T0
    )
    assert out.event is not None
    assert out.event.routing_key == "job.failed"
    body = json.loads(out.event.body)
    assert body["error"] == {"code": "TSC.AudioFileLink", "message": "bad"}
    assert body["type"] == "job.failed"


def test_cancelled_publishes_job_failed() -> None:
    out = apply(None, make_update(JobStatus.CANCELLED, "Cancel", provider="tencent-ci"), now=T0)
    assert out.event is not None
    assert out.event.routing_key == "job.failed"


def test_a_duplicate_completion_carries_the_event_of_its_first_owner() -> None:
    done = apply(None, make_update(COMPLETED), now=T0, owner="first").job
    again = apply(done, make_update(COMPLETED), now=T1, owner="second")
    assert again.kind == "duplicate"
    assert again.event is done.event
    assert again.event is not None
    assert (again.event.owner, again.event.created_at) == ("first", T0)


def test_fields_fill_in_but_are_not_overwritten() -> None:
    first = apply(None, make_update(RUNNING, task_key=None, started_at=T0), now=T0).job
    second = apply(
        first, make_update(COMPLETED, task_key="late-key", started_at=T1, finished_at=T2), now=T2
    ).job
    assert second.task_key == "late-key"
    assert second.started_at == T0
    assert second.finished_at == T2


def _event(owner: str, created_at: datetime) -> EventRecord:
    return EventRecord(
        event_id="e1", routing_key="job.completed", body="{}", created_at=created_at, owner=owner
    )


@pytest.mark.parametrize(
    ("delivery", "redelivered", "age_s", "duty"),
    [
        ("owner", False, 0, "publish"),  # the delivery whose write created the event
        ("owner", True, 999, "publish"),
        ("other", False, 1, "none"),  # a fresh duplicate leaves it to the owner, still unacked
        ("other", True, 1, "publish-unless-confirmed"),  # perhaps the owner itself, after a crash
        ("other", False, 31, "publish-unless-confirmed"),  # past the lease: the owner is gone
    ],
)
def test_publishing_duty_is_one_rule(delivery: str, redelivered: bool, age_s: int, duty: str) -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    event = _event("owner", created)
    received = created + timedelta(seconds=age_s)
    assert (
        publishing_duty(
            event,
            delivery=delivery,
            redelivered=redelivered,
            received_at=received,
            lease=timedelta(seconds=30),
        )
        == duty
    )


# --- Bounds: no input can grow a job until no write, not even its completion, fits ---------------------


def test_the_default_results_cap_is_the_limits_default() -> None:
    assert inspect.signature(apply).parameters["max_results"].default == Limits().max_results


def test_100_distinct_running_states_then_completed_still_completes_and_publishes() -> None:
    job = None
    for i in range(100):
        results: dict[str, object] = {f"r{i}-{j}": f"u{i}" for j in range(3)}
        job = apply(job, make_update(RUNNING, f"STATE_{i}", results=results), now=T0 + timedelta(i)).job
        assert len(job.history) <= HISTORY_MAX
        assert len(job.results) <= Limits().max_results
    assert job is not None
    done = apply(job, make_update(COMPLETED, "COMPLETED", results={"Transcription": "final"}), now=T2)
    assert done.kind == "transition"
    assert done.job.status is COMPLETED
    assert done.event is not None
    assert done.event.event_id == event_id("tingwu", "t1", COMPLETED)
    assert done.job.history[0].provider_status == "STATE_0"  # the first entry is kept
    assert done.job.history[-1].provider_status == "COMPLETED"
    assert len(done.job.history) == HISTORY_MAX
    assert len(done.job.results) == Limits().max_results
    assert done.job.results["Transcription"] == "final"  # the newer state's results are kept first
    assert len(JobEvent.model_validate_json(done.event.body).results) == Limits().max_results


def test_the_history_keeps_its_first_entry_and_the_newest() -> None:
    job = apply(None, make_update(RUNNING, "S0"), now=T0).job
    for i in range(1, 80):
        job = apply(job, make_update(JobStatus.QUEUED, f"Q{i}"), now=T0).job  # late: recorded, not applied
    assert len(job.history) == HISTORY_MAX
    assert [h.provider_status for h in job.history[:2]] == ["S0", f"Q{80 - HISTORY_MAX + 1}"]
    assert job.history[-1].provider_status == "Q79"
    assert job.status is RUNNING


def test_a_forgotten_state_only_records_again_as_not_applied() -> None:
    """Status is monotonic; once the history is full, an unseen state of the same rank does not move it."""
    job = apply(None, make_update(RUNNING, "S0"), now=T0).job
    for i in range(1, 70):
        job = apply(job, make_update(RUNNING, f"S{i}"), now=T0).job
    assert len(job.history) == HISTORY_MAX
    forgotten = "S1"
    assert forgotten not in {h.provider_status for h in job.history}
    again = apply(job, make_update(RUNNING, forgotten), now=T1)
    assert again.job.provider_status != forgotten
    assert (again.job.history[-1].provider_status, again.job.history[-1].applied) == (forgotten, False)
    assert apply(again.job, make_update(COMPLETED), now=T2).job.status is COMPLETED


def test_merged_results_keep_at_most_max_results_the_newer_state_first() -> None:
    running = apply(None, make_update(RUNNING, results={f"old{i}": i for i in range(4)}), now=T0).job
    newer = make_update(COMPLETED, results={"new0": 0, "new1": 1, "new2": 2})
    done = apply(running, newer, now=T1, max_results=5).job
    assert done.results == {"old0": 0, "old1": 1, "new0": 0, "new1": 1, "new2": 2}
    late = apply(done, make_update(RUNNING, "LATE", results={"late": 0, "old0": "x"}), now=T2, max_results=5)
    assert late.job.results == done.results  # the completed state's results win, and fill the cap


def test_merged_results_stay_within_their_byte_budget() -> None:
    big = "x" * 1_000_000
    job = None
    for i in range(8):  # 8 MB of results in all, each update's 1 MB
        job = apply(job, make_update(RUNNING, f"S{i}", results={f"r{i}": big}), now=T0).job
    assert job is not None
    assert sum(len(str(v)) for v in job.results.values()) <= RESULTS_MAX_BYTES
    assert "r7" in job.results  # the newest kept
    done = apply(job, make_update(COMPLETED, results={"final": "u"}), now=T1)
    assert done.event is not None
    assert done.job.results["final"] == "u"
    assert len(done.event.body) < 2 * RESULTS_MAX_BYTES


def test_a_stored_job_beyond_the_bounds_is_trimmed_by_its_next_update() -> None:
    job = apply(None, make_update(RUNNING, "S0", results={f"r{i}": i for i in range(300)}), now=T0).job
    assert len(job.results) == Limits().max_results
    entries = tuple(job.history[0].model_copy(update={"provider_status": f"S{i}"}) for i in range(100))
    stored = job.model_copy(update={"history": entries, "results": {f"r{i}": i for i in range(300)}})
    after = apply(stored, make_update(COMPLETED), now=T1).job
    assert len(after.history) == HISTORY_MAX
    assert len(after.results) == Limits().max_results
    assert after.status is COMPLETED
