"""The offline parts of the CLI: parse, schema, help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.cli.tools import event_schema_json
from schemas.event import JobEvent
from tests.conftest import FIXTURES


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
    assert committed == event_schema_json(), "regenerate: speechjobs schema > schemas/job-event.schema.json"
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


@pytest.mark.parametrize("command", [[], ["run"], ["parse"], ["send"], ["schema"], ["settings"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: speechjobs" in capsys.readouterr().out
