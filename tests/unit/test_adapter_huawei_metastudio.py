"""Huawei MetaStudio async TTS bodies (poll, callback, error) normalize field by field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumer.core.contract import Inbound
from consumer.core.errors import Rejection
from consumer.core.normalize import Normalized
from consumer.vendors import normalize
from consumer.vendors.huawei_metastudio import parse as huawei_metastudio
from schemas.job import JobError, JobStatus, JobUpdate
from tests.conftest import fixture_bytes, fixture_json, parsed_fixtures

JOB = "1742255d667f46b9816d3aed0174a3e1"
POLL_SOURCE = "huawei-metastudio.async-tts-job"
CALLBACK_SOURCE = "huawei-metastudio.callback"
SUCCEED_BODIES = [
    "samples/huawei_metastudio_showasyncttsjob_succeed_1.json",
    "seeds/huawei_metastudio_seed_succeed.json",
]


def run(name: str, routing_key: str = "", **headers: object) -> Normalized:
    return normalize(Inbound(fixture_bytes(name), routing_key, headers))


def run_json(body: dict[str, Any], routing_key: str = "", **headers: object) -> Normalized:
    return normalize(Inbound(json.dumps(body).encode(), routing_key, headers))


def single(result: Normalized) -> JobUpdate:
    assert result.provider == "huawei-metastudio"
    (update,) = result.updates
    assert update.provider == "huawei-metastudio"
    return update


def rejected(name_or_body: str | dict[str, Any], routing_key: str = "", **headers: object) -> Rejection:
    body = fixture_bytes(name_or_body) if isinstance(name_or_body, str) else json.dumps(name_or_body).encode()
    with pytest.raises(Rejection) as caught:
        normalize(Inbound(body, routing_key, headers))
    return caught.value


def assert_no_times(u: JobUpdate) -> None:
    # MetaStudio bodies carry no timestamps at all.
    assert (u.submitted_at, u.started_at, u.finished_at, u.reported_at) == (None, None, None, None)


# ShowAsyncTtsJob


@pytest.mark.parametrize("name", SUCCEED_BODIES)
def test_poll_without_task_id_or_header(name: str) -> None:
    exc = rejected(name)
    assert (exc.reason, exc.provider) == ("missing-task-id", "huawei-metastudio")
    assert exc.message == "MetaStudio ShowAsyncTtsJob body carries no job id; send it in the x-task-id header"


@pytest.mark.parametrize("name", SUCCEED_BODIES)
def test_poll_succeed_with_task_id_header(name: str) -> None:
    u = single(run(name, "poll.huawei-metastudio", **{"x-task-id": JOB}))
    assert u.task_id == JOB
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "SUCCEED"
    assert u.kind == "tts"
    assert u.source == POLL_SOURCE
    assert (u.task_key, u.user_data, u.error) == (None, None, None)
    assert u.results == {"audio_file_url": "https://xxx"}
    assert_no_times(u)
    assert u.origin.channel == "poll"


def test_job_id_in_the_body_wins_over_the_header() -> None:
    body = fixture_json("samples/huawei_metastudio_showasyncttsjob_succeed_1.json") | {
        "job_id": "relay-added"
    }
    u = single(run_json(body, **{"x-task-id": JOB}))
    assert (u.task_id, u.status) == ("relay-added", JobStatus.COMPLETED)
    assert single(run_json(body)).task_id == "relay-added"


def test_poll_failed_by_code_despite_succeed_state() -> None:
    u = single(run("constructed/huawei_metastudio_poll_failed_code.json", **{"x-task-id": JOB}))
    assert (u.task_id, u.status, u.provider_status) == (JOB, JobStatus.FAILED, "SUCCEED")
    assert (u.kind, u.source, u.user_data, u.results) == ("tts", POLL_SOURCE, None, {})
    assert u.error == JobError(code="MSS.000000002", message="internal error")
    assert_no_times(u)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("WAITING", JobStatus.QUEUED),
        ("PROCESSING", JobStatus.RUNNING),
        ("SUCCEED", JobStatus.COMPLETED),
        ("FAILED", JobStatus.FAILED),
    ],
)
@pytest.mark.parametrize("code", ["0", 0, ""])
def test_poll_states_with_success_code(state: str, status: JobStatus, code: object) -> None:
    u = single(run_json({"state": state, "code": code, "message": ""}, **{"x-task-id": JOB}))
    assert (u.status, u.provider_status, u.results) == (status, state, {})
    assert u.error == (JobError() if status is JobStatus.FAILED else None)


def test_poll_failed_state_keeps_its_message() -> None:
    u = single(
        run_json(
            {"state": "FAILED", "message": "text too long"},
            **{"x-task-id": JOB, "x-provider": "huawei-metastudio"},
        )
    )
    assert u.error == JobError(code=None, message="text too long")


def test_poll_all_urls() -> None:
    urls = {
        "audio_file_url": "https://x/a.wav",
        "audio_info_file_url": "https://x/a.json",
        "audio_srt_file_url": "https://x/a.srt",
        "audio_action_file_url": "https://x/a.act",
    }
    u = single(run_json({"state": "SUCCEED", "code": "0", "message": "", **urls}, **{"x-task-id": JOB}))
    assert (u.status, u.error) == (JobStatus.COMPLETED, None)
    assert u.results == urls


# Callback


def test_callback_finished() -> None:
    u = single(run("constructed/huawei_metastudio_callback_finished.json", "callback.huawei-metastudio"))
    assert (u.task_id, u.status, u.provider_status) == (JOB, JobStatus.COMPLETED, "FINISHED")
    assert (u.kind, u.source, u.user_data, u.error) == ("tts", CALLBACK_SOURCE, None, None)
    assert u.results == {
        "audio_file_download_url": "https://xxx/audio.wav",
        "subtitle_file_download_url": "https://xxx/audio.srt",
        "audio_duration": 12.5,
    }
    assert_no_times(u)
    assert u.origin.channel == "callback"


def test_callback_error_without_code() -> None:
    u = single(run("constructed/huawei_metastudio_callback_error.json"))
    assert (u.task_id, u.status, u.provider_status) == (JOB, JobStatus.FAILED, "ERROR")
    assert (u.kind, u.source, u.results) == ("tts", CALLBACK_SOURCE, {})
    assert u.error == JobError(code=None, message=None)
    assert_no_times(u)


def test_callback_error_with_code() -> None:
    body = fixture_json("constructed/huawei_metastudio_callback_error.json") | {
        "error_code": "MSS.000000001",
        "error_msg": "failed",
    }
    assert single(run_json(body)).error == JobError(code="MSS.000000001", message="failed")


def test_callback_waiting() -> None:
    u = single(run_json({"status": "WAITING", "job_id": JOB}))
    assert (u.status, u.provider_status, u.error, u.results) == (JobStatus.QUEUED, "WAITING", None, {})


def test_callback_without_job_id_takes_the_header() -> None:
    body = {"status": "FINISHED", "audio_duration": "3"}
    assert rejected(body, **{"x-provider": "huawei-metastudio"}).reason == "missing-task-id"
    u = single(run_json(body, **{"x-provider": "huawei-metastudio", "x-task-id": JOB}))
    assert (u.task_id, u.results) == (JOB, {"audio_duration": 3.0})


# Errors and invalid bodies


def test_error_400_is_a_vendor_error() -> None:
    exc = rejected("constructed/huawei_metastudio_error_400.json")
    assert (exc.reason, exc.provider) == ("vendor-error", "huawei-metastudio")
    assert exc.message == "MetaStudio error MSS.000000003: invalid parameter"


def test_error_from_the_gateway_needs_the_provider_header() -> None:
    body = {
        "error_code": "APIGW.0301",
        "error_msg": "Incorrect IAM authentication information",
        "request_id": "r",
    }
    assert rejected(body).reason == "unknown-format"
    exc = rejected(body, **{"x-provider": "huawei-metastudio"})
    assert (exc.reason, exc.message) == (
        "vendor-error",
        "MetaStudio error APIGW.0301: Incorrect IAM authentication information",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"state": ["SUCCEED"], "audio_file_url": "https://xxx"},
        {"state": "", "audio_file_url": "https://xxx"},
        {"state": "SUCCEED", "code": {"c": 1}},
        {"state": "SUCCEED", "audio_file_url": ["https://xxx"]},
        {"status": "FINISHED", "job_id": JOB, "audio_duration": "long"},
        {"status": None, "job_id": JOB},
        {"status": "", "job_id": JOB},
    ],
)
def test_wrong_types_and_missing_states(body: dict[str, Any]) -> None:
    exc = rejected(body, **{"x-task-id": JOB})
    assert (exc.reason, exc.provider) == ("invalid-payload", "huawei-metastudio")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"state": "DONE", "audio_file_url": "https://xxx"}, "MetaStudio state 'DONE' is not a known state"),
        ({"state": "DONE", "code": "MSS.000000002"}, "MetaStudio state 'DONE' is not a known state"),
        ({"status": "DONE", "job_id": JOB}, "MetaStudio callback status 'DONE' is not a known state"),
    ],
)
def test_unknown_state_is_dead_lettered_for_replay(body: dict[str, Any], message: str) -> None:
    exc = rejected(body, **{"x-task-id": JOB})
    assert (exc.reason, exc.provider, exc.message) == ("unknown-state", "huawei-metastudio", message)


def test_other_body_with_the_provider_header() -> None:
    exc = rejected({"hello": "world"}, **{"x-provider": "huawei-metastudio"})
    assert exc.reason == "unknown-format"


# Detection


@pytest.mark.parametrize(("name", "document"), parsed_fixtures("*/huawei_*.json"))
def test_detect_recognises_metastudio(name: str, document: Any) -> None:
    assert huawei_metastudio.detect(document), name


@pytest.mark.parametrize(
    ("name", "document"),
    parsed_fixtures("*/tingwu_*.json", "*/tencent_ci_*.xml", "*/tencent_ci_*.json", "*/ice_*", "*/aliyun_*"),
)
def test_detect_leaves_other_vendors_alone(name: str, document: Any) -> None:
    assert not huawei_metastudio.detect(document), name


def test_detect_needs_more_than_a_state() -> None:
    assert not huawei_metastudio.detect({"state": "WAITING"})
    assert rejected({"state": "WAITING"}).reason == "unknown-format"
    u = single(run_json({"state": "WAITING"}, **{"x-provider": "huawei-metastudio", "x-task-id": JOB}))
    assert (u.status, u.provider_status) == (JobStatus.QUEUED, "WAITING")
