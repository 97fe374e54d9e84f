"""Tingwu bodies (seeds, samples, EventBridge CloudEvents) normalize field by field."""

from __future__ import annotations

import base64
import json

import pytest

from consumer.core.contract import Inbound
from consumer.core.errors import Rejection
from consumer.core.normalize import Normalized
from consumer.vendors import normalize
from schemas.job import JobError, JobStatus
from tests.conftest import fixture_bytes

SEED_TASK = "e8adc0b3bc4b42d898fcadb0********"
SAMPLE_TASK = "c5394c6ee0fb474899d42215a3925c7e"


def run(name: str, routing_key: str = "callback.tingwu", **headers: object) -> Normalized:
    return normalize(Inbound(fixture_bytes(name), routing_key, headers))


def test_poll_ongoing_without_results() -> None:
    (u,) = run("seeds/tingwu_poll_ongoing.json", "poll.tingwu").updates
    assert (u.provider, u.task_id, u.status, u.provider_status) == (
        "tingwu",
        SEED_TASK,
        JobStatus.RUNNING,
        "ONGOING",
    )
    assert (u.kind, u.source, u.task_key, u.error) == ("transcription", "tingwu.task", None, None)
    assert u.results == {}
    assert u.origin.channel == "poll"


def test_poll_ongoing_partial_results_are_unescaped() -> None:
    (u,) = run("seeds/tingwu_poll_ongoing_partial.json", "poll.tingwu").updates
    assert u.status is JobStatus.RUNNING
    assert set(u.results) == {"OutputMp3Path", "Transcription"}
    transcription = u.results["Transcription"]
    assert isinstance(transcription, str)
    assert "&amp;" not in transcription
    assert transcription.endswith(
        "?Expires=1698906034&OSSAcceLTAI4G4uXHLPwQHj6oX8****6oX8nt5S&Signature=********NJlqSEWJxfkMwjwsHCA%3D"
    )


@pytest.mark.parametrize("name", ["seeds/tingwu_poll_completed.json", "seeds/tingwu_callback_completed.json"])
def test_completed(name: str) -> None:
    (u,) = run(name).updates
    assert (u.task_id, u.status, u.provider_status, u.error) == (
        SEED_TASK,
        JobStatus.COMPLETED,
        "COMPLETED",
        None,
    )
    assert set(u.results) >= {"AutoChapters", "Transcription"}
    assert all("&amp;" not in str(v) for v in u.results.values())


def test_callback_completed_keeps_task_key() -> None:
    (u,) = run("seeds/tingwu_callback_completed.json").updates
    assert u.task_key == "TingwuDemo"
    assert set(u.results) == {"AutoChapters", "Transcription"}


@pytest.mark.parametrize(
    ("name", "task_id"),
    [
        ("seeds/tingwu_poll_failed.json", "b76389677b1441fa82165cb1********"),
        ("seeds/tingwu_callback_failed.json", SEED_TASK),
    ],
)
def test_failed_carries_the_error(name: str, task_id: str) -> None:
    (u,) = run(name).updates
    assert (u.task_id, u.status, u.provider_status) == (task_id, JobStatus.FAILED, "FAILED")
    assert u.error == JobError(code="TSC.AudioFileLink", message="Audio file link invalid.")
    assert u.results == {}


def test_callback_ongoing_partial() -> None:
    (u,) = run("seeds/tingwu_callback_ongoing_partial.json").updates
    assert (u.status, u.task_key) == (JobStatus.RUNNING, "TingwuDemo")
    assert list(u.results) == ["Transcription"]


def test_console_ping_is_ignored_not_dead_lettered() -> None:
    result = run("seeds/tingwu_callback_test_ping.json")
    assert result.updates == ()
    assert result.ignored == "Tingwu console test ping"
    assert result.provider == "tingwu"


def test_sample_completed_with_error_code_is_still_completed() -> None:
    (u,) = run("samples/tingwu_gettaskinfo_completed_1.json", "").updates
    assert (u.task_id, u.status, u.task_key, u.error) == (
        SAMPLE_TASK,
        JobStatus.COMPLETED,
        "task_tingwu_123",
        None,
    )
    assert set(u.results) == {
        "OutputMp3Path", "OutputMp4Path", "OutputThumbnailPath", "OutputSpectrumPath",
        "Transcription", "AutoChapters", "MeetingAssistance", "Summarization", "Translation",
        "PptExtraction", "TextPolish",
    }  # fmt: skip
    assert u.results["MeetingAssistance"] == (
        "http://xxxx.com/tingwu/output/1738248324/094e964bf0e04e39/094e964bf0e04e39_MeetingAssistance_20231222101112"
        ".json?Expires=1706064016&OSSAccessKeyId=LTAI4t5S***&Signature=anNq72XSJxRYpQoTlprgnl***%3D"
    )


def test_realtime_create_is_a_running_meeting() -> None:
    (u,) = run("samples/tingwu_createtask_realtime_ongoing_1.json", "").updates
    assert (u.task_id, u.status, u.kind, u.task_key) == (
        SAMPLE_TASK,
        JobStatus.RUNNING,
        "meeting",
        "task_tingwu_123",
    )
    assert u.results == {}


@pytest.mark.parametrize(
    ("name", "status", "provider_status", "kind", "key"),
    [
        (
            "samples/tingwu_v1_createmeetingtrans_created_1.json",
            JobStatus.QUEUED,
            "NEW",
            "meeting",
            "meeting_123",
        ),
        (
            "samples/tingwu_v1_getmeetingtrans_completed_1.json",
            JobStatus.COMPLETED,
            "COMPLETED",
            "meeting",
            "meeting_123",
        ),
        (
            "samples/tingwu_v1_stopmeetingtrans_pre_complete_1.json",
            JobStatus.RUNNING,
            "PRE_COMPLETE",
            "meeting",
            "meeting_123",
        ),
        (
            "samples/tingwu_v1_getfiletrans_ongoing_1.json",
            JobStatus.RUNNING,
            "ONGOING",
            "transcription",
            "trans_123",
        ),
    ],
)
def test_v1_bodies(name: str, status: JobStatus, provider_status: str, kind: str, key: str) -> None:
    (u,) = run(name, "").updates
    assert (u.task_id, u.status, u.provider_status, u.kind, u.task_key) == (
        "f7de74778d94422283534102dfc0****",
        status,
        provider_status,
        kind,
        key,
    )
    assert u.source in ("tingwu.v1-meeting", "tingwu.v1-file-trans")


def test_structured_cloudevent_is_unwrapped() -> None:
    result = run("constructed/tingwu_eventbridge_cloudevent_completed.json", "mq.tingwu")
    (u,) = result.updates
    assert (u.task_id, u.status, u.task_key) == (SEED_TASK, JobStatus.COMPLETED, "TingwuDemo")
    assert u.origin.channel == "mq"
    assert u.origin.envelope == "cloudevents"


def test_cloudevent_provider_found_from_source_without_hints() -> None:
    result = run("constructed/tingwu_eventbridge_cloudevent_completed.json", "")
    assert result.provider == "tingwu"
    assert result.updates[0].origin.channel == "mq"


@pytest.mark.parametrize("source", ["acs.tingwu-lookalike", "my-tingwu", "acs.ice.tingwu", ""])
def test_cloudevent_source_must_be_a_known_one(source: str) -> None:
    # Only an exact, known source names the provider; anything else falls back to the body's shape,
    # which a Tencent CI body inside a CloudEvent claiming to be from "tingwu" does not fake.
    envelope = {
        "specversion": "1.0",
        "id": "1",
        "source": source,
        "type": "tingwu:Task:Completed",
        "data": {"Response": {"JobsDetail": {"JobId": "s1", "State": "Success", "Tag": "SpeechRecognition"}}},
    }
    result = normalize(Inbound(json.dumps(envelope).encode(), ""))
    assert result.provider == "tencent-ci"


def test_cloudevent_data_base64() -> None:
    data = fixture_bytes("seeds/tingwu_callback_failed.json")
    envelope = {
        "specversion": "1.0",
        "id": "1",
        "source": "acs.tingwu",
        "type": "t",
        "data_base64": base64.b64encode(data).decode(),
    }
    (u,) = normalize(Inbound(json.dumps(envelope).encode(), "mq.tingwu")).updates
    assert u.status is JobStatus.FAILED
    assert u.origin.envelope == "cloudevents"


def test_cloudevent_data_as_json_string() -> None:
    data = fixture_bytes("seeds/tingwu_callback_ongoing_partial.json").decode()
    envelope = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": data}
    (u,) = normalize(Inbound(json.dumps(envelope).encode(), "mq.tingwu")).updates
    assert u.status is JobStatus.RUNNING


@pytest.mark.parametrize("prefix", ["cloudEvents:", "cloudEvents_"])
def test_binary_mode_cloudevent(prefix: str) -> None:
    headers = {
        f"{prefix}specversion": "1.0",
        f"{prefix}id": "x",
        f"{prefix}source": "acs.tingwu",
        f"{prefix}type": "t",
    }
    result = normalize(Inbound(fixture_bytes("seeds/tingwu_callback_completed.json"), "", headers))
    assert result.provider == "tingwu"
    (u,) = result.updates
    assert (u.status, u.origin.envelope, u.origin.channel) == (JobStatus.COMPLETED, "cloudevents", "mq")


def test_api_error_body_is_a_vendor_error() -> None:
    body = b'{"Code":"TSC.TaskNotFound","Message":"task not found","RequestId":"r"}'
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, "callback.tingwu"))
    assert err.value.reason == "vendor-error"
    assert "TSC.TaskNotFound" in err.value.message
    assert err.value.provider == "tingwu"


def test_missing_task_id() -> None:
    body = b'{"Code":"0","Data":{"TaskStatus":"COMPLETED"}}'
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, "callback.tingwu"))
    assert err.value.reason == "missing-task-id"


def test_task_id_from_header_when_the_body_has_none() -> None:
    body = b'{"Code":"0","Data":{"TaskStatus":"COMPLETED"}}'
    (u,) = normalize(Inbound(body, "callback.tingwu", {"x-task-id": "abc"})).updates
    assert u.task_id == "abc"


def test_numbers_where_strings_belong_are_accepted() -> None:
    body = b'{"Code":0,"Data":{"TaskId":12345,"TaskStatus":"ONGOING"}}'
    (u,) = normalize(Inbound(body, "callback.tingwu")).updates
    assert u.task_id == "12345"


def test_wrong_type_is_invalid_payload() -> None:
    body = b'{"Code":"0","Data":{"TaskId":"a","TaskStatus":["ONGOING"]}}'
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, "callback.tingwu"))
    assert err.value.reason == "invalid-payload"
    assert "Data.TaskStatus" in err.value.message


@pytest.mark.parametrize(
    "data",
    [
        {"TaskId": "a", "TaskStatus": "SOMETHING_NEW"},
        {"MeetingId": "m", "MeetingStatus": "SOMETHING_NEW"},
        {"TransId": "f", "TransStatus": "SOMETHING_NEW"},
    ],
)
def test_unknown_status_is_dead_lettered_for_replay(data: dict[str, str]) -> None:
    body = json.dumps({"Code": "0", "Data": data}).encode()
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, "callback.tingwu"))
    assert (err.value.reason, err.value.provider) == ("unknown-state", "tingwu")
    assert err.value.message == "Tingwu task status 'SOMETHING_NEW' is not a known state"


@pytest.mark.parametrize("data", [{"TaskId": "a"}, {"TaskId": "a", "TaskStatus": ""}, {"TransId": "f"}])
def test_missing_status_is_invalid_payload(data: dict[str, str]) -> None:
    body = json.dumps({"Code": "0", "Data": data}).encode()
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, "callback.tingwu"))
    assert (err.value.reason, err.value.provider) == ("invalid-payload", "tingwu")
