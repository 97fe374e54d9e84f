"""The offline parts of the CLI: parse, schema, help, and the pure helpers of jobs and events."""

from __future__ import annotations

import argparse
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.cli.events import queue_name
from consumer.cli.jobs import (
    TerminalTransition,
    decode_cursor,
    encode_cursor,
    job_json,
    job_text,
    terminal_transitions,
)
from consumer.cli.tools import event_schema_json
from consumer.core.state import apply, event_id
from consumer.store.mongo import listing_query
from schemas.event import JobEvent
from schemas.job import Job, JobStatus, JobUpdate
from tests.conftest import FIXTURES, make_update


def test_parse_prints_one_json_line_per_update(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["parse", str(FIXTURES / "seeds/tingwu_callback_completed.json")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(out) == 1
    update = json.loads(out[0])
    assert (update["provider"], update["status"], update["task_key"]) == ("tingwu", "completed", "TingwuDemo")


def test_parse_exits_non_zero_with_the_reason_for_a_dead_letter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{oops")
    code = main(["parse", str(bad), str(FIXTURES / "seeds/tingwu_callback_failed.json")])
    captured = capsys.readouterr()
    assert code == 1
    assert "bad.json: dead-letter: malformed: invalid JSON" in captured.err
    assert len(captured.out.splitlines()) == 1


def test_parse_task_id_and_provider_options(capsys: pytest.CaptureFixture[str]) -> None:
    body = FIXTURES / "samples/huawei_metastudio_showasyncttsjob_succeed_1.json"
    assert main(["parse", str(body)]) == 1
    assert "missing-task-id" in capsys.readouterr().err
    assert main(["parse", str(body), "--provider", "huawei-metastudio", "--task-id", "job-1"]) == 0
    update = json.loads(capsys.readouterr().out)
    assert (update["task_id"], update["status"]) == ("job-1", "completed")


def test_parse_reports_a_ping_as_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", str(FIXTURES / "seeds/tingwu_callback_test_ping.json")]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ignored: Tingwu console test ping" in captured.err


def test_committed_event_schema_matches_the_model() -> None:
    committed = (Path(__file__).parents[2] / "schemas/job-event.schema.json").read_text()
    regenerate = "speechjobs schema --event > schemas/job-event.schema.json"
    assert committed == event_schema_json(), f"regenerate: {regenerate}"
    schema = json.loads(committed)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"event_id", "type", "occurred_at", "provider", "task_id", "status"}
    assert JobEvent.model_json_schema(mode="serialization") == schema


def test_run_without_a_database_url_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SPEECHJOBS_MONGODB_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    assert main(["run"]) == 2
    assert "SPEECHJOBS_MONGODB_URL is not set" in capsys.readouterr().err


def test_settings_prints_the_configuration_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "`SPEECHJOBS_MONGODB_JOURNAL` | `True` |" in out
    assert "## Consumer" in out


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["parse"],
        ["send"],
        ["schema"],
        ["settings"],
        ["jobs"],
        ["jobs", "show"],
        ["jobs", "list"],
        ["jobs", "stuck"],
        ["events", "replay"],
    ],
)
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: speechjobs" in capsys.readouterr().out


T0 = datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)


def _job(*steps: tuple[JobStatus, datetime], **fields: object) -> Job:
    job = None
    for status, at in steps:
        update = make_update(status, task_id='t|1 "é"')
        update = JobUpdate.model_validate({**update.model_dump(), **fields})  # fields validated as they come
        job = apply(job, update, now=at, owner="d").job
    assert job is not None
    return job


def test_a_cursor_gives_back_exactly_where_the_page_ended() -> None:
    job = _job((JobStatus.RUNNING, T0))
    cursor = encode_cursor(job)
    assert cursor.isascii()
    assert " " not in cursor
    assert decode_cursor(cursor) == (T0, 'tingwu:t|1 "é"')
    assert decode_cursor(f"  {cursor}\n") == (T0, 'tingwu:t|1 "é"')


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not-a-cursor",
        _b64(["2026-01-01T00:00:00", "tingwu:x"]),  # no offset: not one of ours
        _b64(["2026-01-01T00:00:00+00:00"]),
        _b64(["2026-01-01T00:00:00+00:00", 7]),
        _b64({"at": "2026-01-01T00:00:00+00:00"}),
        _b64(["yesterday", "tingwu:x"]),
    ],
)
def test_a_bad_cursor_is_a_value_error_that_names_it(text: str) -> None:
    with pytest.raises(ValueError, match="not a cursor printed by `jobs list`"):
        decode_cursor(text)


def test_terminal_transitions_name_the_event_of_the_first_terminal_state_only() -> None:
    job = _job(
        (JobStatus.RUNNING, T0),
        (JobStatus.COMPLETED, T0 + timedelta(seconds=1)),
        (JobStatus.FAILED, T0 + timedelta(seconds=2)),  # conflicting: recorded, not applied
    )
    assert [h.applied for h in job.history] == [True, True, False]
    assert terminal_transitions(job) == [
        TerminalTransition(
            event_id("tingwu", 't|1 "é"', JobStatus.COMPLETED),
            JobStatus.COMPLETED,
            T0 + timedelta(seconds=1),
            stored=True,
        )
    ]
    assert terminal_transitions(_job((JobStatus.RUNNING, T0))) == []


def test_shown_jobs_mask_signatures_in_results_user_data_and_errors() -> None:
    secret = "https://b.example.com/r.json?Expires=9&Signature=abc123&OSSAccessKeyId=AK9"
    job = _job(
        (JobStatus.FAILED, T0),
        results={"Result": secret},
        user_data={"callback": secret},
        error={"code": "E", "message": f"fetch {secret} failed"},
    )
    shown = job_json(job, {})
    text = job_text(job, {})
    for out in (json.dumps(shown), text):
        assert "abc123" not in out
        assert "AK9" not in out
    assert shown["results"] == {
        "Result": "https://b.example.com/r.json?Expires=9&Signature=***&OSSAccessKeyId=***"
    }
    assert shown["events"][0]["confirmed"] is False
    assert "error      E: fetch https://b.example.com/r.json?Expires=9&Signature=***" in text


def test_the_listing_query_bounds_updated_at_and_breaks_ties_by_key() -> None:
    assert listing_query(None, (), None, None) == {}
    since, at = T0, T0 + timedelta(minutes=5)
    assert listing_query("tingwu", ["completed", "failed"], since, (at, "tingwu:k")) == {
        "provider": "tingwu",
        "status": {"$in": ["completed", "failed"]},
        "updated_at": {"$gte": at},  # the later of since and the cursor
        "$or": [{"updated_at": {"$gt": at}}, {"_id": {"$gt": "tingwu:k"}}],
    }
    assert listing_query(None, (), at, (since, "k"))["updated_at"] == {"$gte": at}


@pytest.mark.parametrize("name", ["", "   ", "q" * 256, "é" * 128])
def test_a_queue_name_amqp_cannot_carry_is_refused(name: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a queue name"):
        queue_name(name)
    assert queue_name("billing.speech-jobs") == "billing.speech-jobs"
