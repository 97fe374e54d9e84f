"""Tencent Cloud CI adapter, driven through the core so that decoding and detection are covered too.

Every XML sample has a JSON form in fixtures/constructed (CallBackFormat=JSON, or an API answer requested as
JSON), built by the rules in tests/fixtures/README.md. Where FORMATS.md is silent they are assumptions:
callbacks have no <Response> root and JobsDetail is always an array (the vendor's one JSON example, seed
tencent_ci_tts_callback_case3_workflow.json); other repeated elements are arrays, a single one an object;
values stay text; an empty element is null. API answers keep the Response root (the docs' container node);
the parser accepts them without it too, which test_json_api_answer_without_response_root checks.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.core.contract import Inbound
from consumer.core.errors import Rejection
from consumer.vendors import normalize
from schemas.job import JobError, JobStatus, JobUpdate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ROUTED = "callback.tencent-ci"

TTS_OUTPUT_FILE = {
    "Bucket": "test-123456789",
    "Region": "ap-chongqing",
    "ObjectName": ["/output/aixiaonan.mp3"],
    "Md5Info": [{"Md5": "5b2ca33cd7357abb1e0ea29f57544df9", "ObjectName": "/output/aixiaonan.mp3"}],
}
TTS_OUTPUT = {"Bucket": "test-123456789", "Object": "output/aixiaonan.mp3", "Region": "ap-chongqing"}
ASR_OUTPUT = {"Bucket": "test005-1251704708", "Object": "1.txt", "Region": "ap-chongqing"}
API_ANSWERS = [
    "tencent_ci_speechrecognition_describe_success_1",
    "tencent_ci_speechrecognition_list_success_1",
    "tencent_ci_speechrecognition_submit_submitted_1",
]
CALLBACKS = [
    "tencent_ci_tts_callback_success_1",
    "tencent_ci_soundhound_callback_success_1",
    "tencent_ci_vocalscore_callback_success_1",
    "tencent_ci_noisereduction_callback_success_1",
    "tencent_ci_extractdigitalwatermark_callback_success_1",
    "tencent_ci_translation_callback_success_1",
    "tencent_ci_picprocess_callback_success_masked_1",
    "tencent_ci_imageinspect_callback_success_1",
    "tencent_ci_superresolution_workflow_callback_success_1",
    "tencent_ci_workflowfinish_callback_success_1",
    "tencent_ci_workflowfinish_callback_success_2",
]


def run(body: bytes, routing_key: str = ROUTED) -> tuple[JobUpdate, ...]:
    result = normalize(Inbound(body=body, routing_key=routing_key, headers={}))
    assert result.provider == "tencent-ci"
    return result.updates


def updates(fixture: str, routing_key: str = ROUTED) -> tuple[JobUpdate, ...]:
    return run((FIXTURES / fixture).read_bytes(), routing_key)


def only(fixture: str) -> JobUpdate:
    (update,) = updates(fixture)
    return update


def rejected(body: bytes, routing_key: str = ROUTED) -> Rejection:
    with pytest.raises(Rejection) as caught:
        normalize(Inbound(body=body, routing_key=routing_key, headers={}))
    return caught.value


def iso(value: datetime | None) -> str | None:
    # isoformat shows the offset, so "+00:00" proves the value was converted to UTC, not just equal to it.
    return None if value is None else value.isoformat()


def both(stem: str) -> list[str]:
    """The vendor's XML sample and its JSON form."""
    return [f"samples/{stem}.xml", f"constructed/{stem}.json"]


def job_body(**job: Any) -> bytes:
    detail = {"JobId": "j1", "State": "Success", "Tag": "Tts"} | job
    return orjson.dumps({"EventName": "TaskFinish", "JobsDetail": [detail]})


# --- TaskFinish callbacks (samples) ---


@pytest.mark.parametrize("fixture", both("tencent_ci_tts_callback_success_1"))
def test_tts_callback(fixture: str) -> None:
    u = only(fixture)
    assert u.provider == "tencent-ci"
    assert u.task_id == "j707f4864f86811ecb90d0b03267ce0e5"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "tts"
    assert u.source == "tencent-ci.task-finish"
    assert u.task_key is None
    assert iso(u.submitted_at) == "2022-06-30T11:33:18+00:00"
    assert iso(u.started_at) == "2022-06-30T11:33:19+00:00"
    assert iso(u.finished_at) == "2022-06-30T11:33:24+00:00"
    assert u.results == {"OutputFile": TTS_OUTPUT_FILE, "Output": TTS_OUTPUT}
    assert u.error is None
    assert u.user_data is None
    assert u.origin.channel == "callback"


@pytest.mark.parametrize("fixture", both("tencent_ci_soundhound_callback_success_1"))
def test_soundhound_callback(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "sb6b64de84ece11eda7ff3f95cf53fd82"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "sound-hound"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2022-10-18T10:22:05+00:00"
    assert iso(u.started_at) == "2022-10-18T10:22:06+00:00"
    assert iso(u.finished_at) == "2022-10-18T10:22:10+00:00"
    assert u.results == {
        "SoundHoundResult": {"SongList": {"Inlier": "0.98", "SingerName": "周杰伦", "SongName": "青花瓷"}}
    }
    assert u.error is None
    assert u.user_data == "This is my SoundHound job."


@pytest.mark.parametrize("fixture", both("tencent_ci_vocalscore_callback_success_1"))
def test_vocalscore_callback(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "s229aa658254311eeaf90856735d7e87d"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "vocal-score"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2023-07-18T08:14:36+00:00"
    assert iso(u.started_at) == "2023-07-18T08:14:37+00:00"
    assert iso(u.finished_at) == "2023-07-18T08:15:54+00:00"
    sentences = [
        {"EndTime": "200.811", "Score": "100", "StartTime": "0.572727"},
        {"EndTime": "210.4", "Score": "100", "StartTime": "200.811"},
    ]
    score = {"SentenceScores": sentences, "TotalScore": "100"}
    assert u.results == {"VocalScoreResult": {"PitchScore": score, "RhythemScore": score}}
    assert u.error is None
    assert u.user_data is None


@pytest.mark.parametrize("fixture", both("tencent_ci_noisereduction_callback_success_1"))
def test_noisereduction_callback(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "j035aca66f86211ec8a5a87e016101404"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "noise-reduction"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2022-06-30T10:47:18+00:00"
    assert iso(u.started_at) == "2022-06-30T10:47:20+00:00"
    assert iso(u.finished_at) == "2022-06-30T10:47:30+00:00"
    assert u.results == {
        "Output": {"Bucket": "test-123456789", "Object": "output/nr.wav", "Region": "ap-chongqing"}
    }
    assert u.error is None
    assert u.user_data == "This is my NoiseReduction job."


@pytest.mark.parametrize("fixture", both("tencent_ci_extractdigitalwatermark_callback_success_1"))
def test_extract_digital_watermark_callback(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "j515a494af86111ecb8546d80f2baf56f"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "extract-digital-watermark"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2022-06-30T10:42:20+00:00"
    assert iso(u.started_at) == "2022-06-30T10:42:21+00:00"
    assert iso(u.finished_at) == "2022-06-30T10:42:54+00:00"
    assert u.results == {
        "ExtractDigitalWatermark": {"Message": "123456789ab", "Type": "Text", "Version": "V1"}
    }
    assert u.error is None  # Message "done" on a Success job is not an error
    assert u.user_data == "This is my ExtractDigitalWatermark job."


@pytest.mark.parametrize("fixture", both("tencent_ci_translation_callback_success_1"))
def test_translation_callback(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "ac34be3aa0bf411ed9ce39d7cc972e427"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "translation"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2022-07-25T08:35:39+00:00"
    assert iso(u.started_at) == "2022-07-25T08:35:39+00:00"
    assert iso(u.finished_at) == "2022-07-25T08:35:43+00:00"
    assert u.results == {
        "Output": {"Region": "ap-chongqing", "Bucket": "test-123456789", "Object": "output/zh.pdf"}
    }
    assert u.error is None
    assert u.user_data == "This is my Translation job."


@pytest.mark.parametrize("fixture", both("tencent_ci_picprocess_callback_success_masked_1"))
def test_picprocess_callback_masked(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "c93984**********2084"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "pic-process"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2022-07-18T07:16:43+00:00"
    assert iso(u.started_at) == "2022-07-18T07:16:44+00:00"
    assert iso(u.finished_at) == "2022-07-18T07:16:44+00:00"
    assert set(u.results) == {"Output", "PicProcessResult"}
    assert u.results["Output"] == {
        "Bucket": "test-1234567890",
        "Object": "output/out.jpg",
        "Region": "ap-chongqing",
    }
    pic = u.results["PicProcessResult"]
    assert isinstance(pic, dict)
    assert pic["ObjectName"] == "output/out.jpg"
    assert pic["OriginalInfo"] == {
        "Etag": '"d5a491cd3d8d071e3212c3478e8e35a1"',
        "ImageInfo": {
            "Ave": "0xc64847",
            "Format": "JPEG",
            "Height": "417",
            "Orientation": "0",
            "Quality": "68",
            "Width": "500",
        },
    }
    assert pic["ProcessResult"] == {
        "Etag": None,
        "Format": "JPEG",
        "Height": "500",
        "Quality": "68",
        "Size": "24911",
        "Width": "417",
    }
    assert u.error is None
    assert u.user_data == "This is my PicProcess job."


@pytest.mark.parametrize("fixture", both("tencent_ci_imageinspect_callback_success_1"))
def test_imageinspect_callback_keeps_the_nested_result(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "cda071f3af9e011ed8f900133752da9af"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "image-inspect"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2023-05-24T03:12:44+00:00"
    assert iso(u.started_at) == "2023-05-24T03:12:45+00:00"
    assert iso(u.finished_at) == "2023-05-24T03:12:45+00:00"
    inspect = u.results["ImageInspectResult"]
    assert isinstance(inspect, dict)
    assert inspect["Code"] == "Success"
    assert inspect["State"] == "Success"
    assert inspect["InputObjectUrl"] == "https://.cos.ap-chongqing.myqcloud.com/test.png"
    process = inspect["ProcessResult"]
    assert isinstance(process, dict)
    assert process["SuspiciousType"] == "MPEG-TS"
    assert process["AutoProcessResult"] == {"Code": "Success", "Message": "Success"}
    assert u.error is None
    assert u.user_data is None


@pytest.mark.parametrize("fixture", both("tencent_ci_superresolution_workflow_callback_success_1"))
def test_workflow_triggered_job_ignores_sub_result_failure(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "j06668dc0f86811ecb90d0b03267ce0e5"
    # DigitalWatermark/State is Failed inside, but the job's own State decides.
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.error is None
    assert u.kind == "super-resolution"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2022-06-30T11:30:20+00:00"
    assert iso(u.started_at) == "2022-06-30T11:30:21+00:00"
    assert iso(u.finished_at) == "2022-06-30T11:31:56+00:00"
    assert u.results == {
        "OutputFile": {
            "Bucket": "test-123456789",
            "Region": "ap-chongqing",
            "ObjectName": ["output/super_resolution.mp4"],
            "Md5Info": [
                {"Md5": "852883012a6ba726e6ed8d9b984edfdf", "ObjectName": "output/super_resolution.mp4"}
            ],
        },
        "Output": {
            "Bucket": "test-123456789",
            "Object": "output/super_resolution.${ext}",
            "Region": "ap-chongqing",
        },
    }
    assert u.user_data == "This is my SuperResolution job."


# --- WorkflowFinish ---


@pytest.mark.parametrize("fixture", both("tencent_ci_workflowfinish_callback_success_1"))
def test_workflowfinish_one_task(fixture: str) -> None:
    run_update, task = updates(fixture)
    assert run_update.task_id == "i70ae991a152911ecb184525400a8700f"
    assert run_update.status is JobStatus.COMPLETED
    assert run_update.provider_status == "Success"
    assert run_update.kind == "workflow"
    assert run_update.source == "tencent-ci.workflow-finish"
    assert iso(run_update.submitted_at) == "2021-09-14T07:00:26+00:00"
    assert run_update.started_at is None
    assert run_update.finished_at is None
    assert run_update.results == {
        "Tasks": [
            {
                "Type": "Transcode",
                "CreateTime": "2021-09-14 15:00:27+0800",
                "EndTime": "2021-09-14 15:00:42+0800",
                "State": "Success",
                "JobId": "j70bab192152911ecab79bba409874f7f",
                "Name": "Transcode_1607323983818",
                "TemplateId": "t088613dea8d564a9ba7e6b02cbd5de877",
                "TemplateName": "HLS-FHD",
            }
        ]
    }
    assert run_update.error is None
    assert run_update.user_data is None

    assert task.task_id == "j70bab192152911ecab79bba409874f7f"
    assert task.status is JobStatus.COMPLETED
    assert task.provider_status == "Success"
    assert task.kind == "transcode"
    assert task.source == "tencent-ci.workflow-finish"
    assert iso(task.submitted_at) == "2021-09-14T07:00:27+00:00"
    assert iso(task.started_at) == "2021-09-14T07:00:27+00:00"
    assert iso(task.finished_at) == "2021-09-14T07:00:42+00:00"
    assert task.results == {}
    assert task.error is None
    assert task.user_data is None


@pytest.mark.parametrize("fixture", both("tencent_ci_workflowfinish_callback_success_2"))
def test_workflowfinish_two_tasks_gives_three_updates(fixture: str) -> None:
    run_update, snapshot, transcode = updates(fixture)
    assert run_update.task_id == "i166ee19017b011eda8a5525400c540df"
    assert run_update.kind == "workflow"
    assert run_update.status is JobStatus.COMPLETED
    assert run_update.provider_status == "Success"
    assert run_update.source == "tencent-ci.workflow-finish"
    assert iso(run_update.submitted_at) == "2022-08-09T06:54:17+00:00"
    tasks = run_update.results["Tasks"]
    assert isinstance(tasks, list)
    assert [t["JobId"] for t in tasks if isinstance(t, dict)] == [
        "j23c11e1e17b011edaab4ab15ec33d076",
        "j168668b217b011ed8efb27bb229e2d11",
    ]
    assert isinstance(tasks[0], dict)
    assert tasks[0]["TemplateName"] == "snapshot_1280*720_3"
    assert run_update.error is None

    assert snapshot.task_id == "j23c11e1e17b011edaab4ab15ec33d076"
    assert snapshot.kind == "snapshot"
    assert snapshot.status is JobStatus.COMPLETED
    assert snapshot.provider_status == "Success"
    assert iso(snapshot.submitted_at) == "2022-08-09T06:54:40+00:00"
    assert iso(snapshot.started_at) == "2022-08-09T06:54:40+00:00"
    assert iso(snapshot.finished_at) == "2022-08-09T06:54:42+00:00"

    assert transcode.task_id == "j168668b217b011ed8efb27bb229e2d11"
    assert transcode.kind == "transcode"
    assert transcode.source == "tencent-ci.workflow-finish"
    assert iso(transcode.started_at) == "2022-08-09T06:54:18+00:00"
    assert iso(transcode.finished_at) == "2022-08-09T06:54:39+00:00"


def test_workflowfinish_failed_task() -> None:
    body = orjson.dumps(
        {
            "EventName": "WorkflowFinish",
            "WorkflowExecution": {
                "RunId": "i1",
                "State": "Failed",
                "CreateTime": "2021-09-14 15:00:26+0800",
                "Tasks": {"Type": "Transcode", "JobId": "j1", "State": "Failed", "EndTime": "-"},
            },
        }
    )
    run_update, task = run(body)
    assert run_update.status is JobStatus.FAILED
    assert run_update.error == JobError()
    assert task.status is JobStatus.FAILED
    assert task.finished_at is None


# --- Speech-job API responses ---


@pytest.mark.parametrize("fixture", both("tencent_ci_speechrecognition_describe_success_1"))
def test_describe_speech_job_keeps_result_verbatim(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "s8988119ee2c911eab2cdd3817d4d5e64"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "transcription"
    assert u.source == "tencent-ci.job-listing"
    assert iso(u.submitted_at) == "2020-08-20T09:43:01+00:00"
    assert u.started_at is None
    assert iso(u.finished_at) == "2020-08-20T09:43:25+00:00"
    assert u.results == {
        "AudioTime": 30.12,
        "Result": "[0:0.000,0:30.080]  这是一条语音测试信息，展示的是识别后的文本内容",  # noqa: RUF001 (two spaces, as sent)
        "Output": ASR_OUTPUT,
    }
    assert u.error is None
    assert u.user_data is None


@pytest.mark.parametrize("fixture", both("tencent_ci_speechrecognition_list_success_1"))
def test_describe_speech_jobs_list(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "s8988119ee2c911eab2cdd3817d4d5e64"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "transcription"
    assert u.source == "tencent-ci.job-listing"
    assert iso(u.submitted_at) == "2020-08-20T09:43:01+00:00"
    assert u.started_at is None
    assert iso(u.finished_at) == "2020-08-20T09:43:25+00:00"
    assert u.results == {
        "AudioTime": 30.12,
        "Result": "[0:0.000,0:30.080] 这是一条语音测试信息，展示的是识别后的文本内容",  # noqa: RUF001
        "Output": ASR_OUTPUT,
    }
    assert u.error is None
    assert u.user_data is None


@pytest.mark.parametrize("fixture", both("tencent_ci_speechrecognition_submit_submitted_1"))
def test_create_speech_jobs_submitted(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "s716d8c8ee2c811ea94a0b170ddb38f60"
    assert u.status is JobStatus.QUEUED
    assert u.provider_status == "Submitted"
    assert u.kind == "transcription"
    assert u.source == "tencent-ci.job-listing"
    assert iso(u.submitted_at) == "2020-08-20T09:35:11+00:00"
    assert u.started_at is None
    assert u.finished_at is None  # <EndTime>-</EndTime>
    assert u.results == {"Output": ASR_OUTPUT}
    assert u.error is None
    assert u.user_data is None


# --- Seeds ---


def test_seed_describe_speech_jobs_response() -> None:
    u = only("seeds/tencent_ci_describe_speech_jobs_response.xml")
    assert u.task_id == "s8988119ee2c911eab2cdd3817d4d5e64"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "transcription"
    assert u.source == "tencent-ci.job-listing"
    assert iso(u.submitted_at) == "2020-08-20T09:43:01+00:00"
    assert u.started_at is None
    assert iso(u.finished_at) == "2020-08-20T09:43:25+00:00"
    assert u.results == {
        "AudioTime": 30.12,
        "Result": "[0:0.000,0:30.080] 这是一条语音测试信息,展示的是识别后的文本内容",
        "Output": ASR_OUTPUT,
    }
    assert u.error is None
    assert u.user_data is None


@pytest.mark.parametrize(
    "fixture",
    [
        "seeds/tencent_ci_describe_speech_jobs_response_empty.xml",
        "constructed/tencent_ci_describe_speech_jobs_response_empty.json",
    ],
)
def test_seed_describe_speech_jobs_empty_listing_has_no_job(fixture: str) -> None:
    exc = rejected((FIXTURES / fixture).read_bytes())
    assert exc.reason == "unknown-format"
    assert exc.provider == "tencent-ci"


@pytest.mark.parametrize("routing_key", [ROUTED, ""])
def test_seed_describe_speech_jobs_request_is_not_a_notification(routing_key: str) -> None:
    exc = rejected((FIXTURES / "seeds/tencent_ci_describe_speech_jobs_request.xml").read_bytes(), routing_key)
    assert exc.reason == "unknown-format"


@pytest.mark.parametrize(
    "fixture", ["seeds/tencent_ci_tts_callback_case1.xml", "seeds/tencent_ci_tts_callback_case2_workflow.xml"]
)
def test_seed_tts_callback_xml(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "j707f4864f86811ecb90d0b03267ce0e5"
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Success"
    assert u.kind == "tts"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2022-06-30T11:33:18+00:00"
    assert iso(u.started_at) == "2022-06-30T11:33:19+00:00"
    assert iso(u.finished_at) == "2022-06-30T11:33:24+00:00"
    assert u.results == {"OutputFile": TTS_OUTPUT_FILE, "Output": TTS_OUTPUT}
    assert u.error is None
    assert u.user_data is None


def test_seed_tts_callback_json_equals_xml() -> None:
    xml = only("seeds/tencent_ci_tts_callback_case2_workflow.xml")
    json = only("seeds/tencent_ci_tts_callback_case3_workflow.json")
    assert json.model_dump(exclude={"origin"}) == xml.model_dump(exclude={"origin"})
    assert json.task_id == "j707f4864f86811ecb90d0b03267ce0e5"
    assert json.results == {"OutputFile": TTS_OUTPUT_FILE, "Output": TTS_OUTPUT}
    assert json.origin.body_sha256 != xml.origin.body_sha256


# --- Constructed ---


@pytest.mark.parametrize(
    "fixture",
    ["constructed/tencent_ci_taskfinish_failed.xml", "constructed/tencent_ci_taskfinish_failed.json"],
)
def test_failed_job_carries_code_and_message(fixture: str) -> None:
    u = only(fixture)
    assert u.task_id == "s0f3c1e2a2a6611ed847a618901112dcf"
    assert u.status is JobStatus.FAILED
    assert u.provider_status == "Failed"
    assert u.kind == "transcription"
    assert u.source == "tencent-ci.task-finish"
    assert iso(u.submitted_at) == "2022-09-02T02:25:38+00:00"
    assert iso(u.started_at) == "2022-09-02T02:25:39+00:00"
    assert iso(u.finished_at) == "2022-09-02T02:25:40+00:00"
    assert u.error == JobError(code="InvalidInput", message="input file not found")
    assert u.results == {
        "Output": {"Bucket": "test-1234567890", "Object": "/missing.txt", "Region": "ap-chongqing"}
    }
    assert u.user_data == "order-42"


@pytest.mark.parametrize(
    "fixture",
    ["constructed/tencent_ci_taskfinish_two_jobs.json", "constructed/tencent_ci_taskfinish_two_jobs.xml"],
)
def test_two_jobs_in_one_callback(fixture: str) -> None:
    asr, tts = updates(fixture)
    assert asr.task_id == "s886c0a7c2a6611ed847a618901112dcf"
    assert asr.status is JobStatus.COMPLETED
    assert asr.provider_status == "Success"
    assert asr.kind == "transcription"
    assert asr.source == "tencent-ci.task-finish"
    assert iso(asr.submitted_at) == "2022-09-02T02:25:38+00:00"
    assert iso(asr.started_at) == "2022-09-02T02:25:39+00:00"
    assert iso(asr.finished_at) == "2022-09-02T02:25:46+00:00"
    assert asr.error is None
    assert asr.user_data == "This is my SpeechRecognition job."
    assert asr.results == {
        "AudioTime": 19.7124,
        "Result": "[0:3.320,0:19.712] 悯农,李绅",
        "ObjectName": "/example.txt",
        "DetailObjectName": "/example.txt.detail",
        "ResultDetail": [
            {
                "EndMs": "19712",
                "FinalSentence": "悯农,李绅",
                "SliceSentence": "悯 农 , 李 绅",
                "SpeakerId": "0",
                "SpeechSpeed": "2.4",
                "StartMs": "3320",
                "Words": [
                    {"OffsetEndMs": "2190", "OffsetStartMs": "0", "VoiceType": "0", "Word": "悯"},
                    {"OffsetEndMs": "2625", "OffsetStartMs": "2190", "VoiceType": "0", "Word": "农"},
                ],
                "WordsNum": "2",
            }
        ],
        "Output": {"Bucket": "test-1234567890", "Object": "/example.txt", "Region": "ap-chongqing"},
    }

    assert tts.task_id == "j707f4864f86811ecb90d0b03267ce0e6"
    assert tts.status is JobStatus.FAILED
    assert tts.provider_status == "Failed"
    assert tts.kind == "tts"
    assert tts.source == "tencent-ci.task-finish"
    assert iso(tts.finished_at) == "2022-06-30T11:33:20+00:00"
    assert tts.error == JobError(code="InvalidInput", message="input file not found")
    assert tts.results == {"Output": TTS_OUTPUT}
    assert tts.user_data is None


def test_single_result_detail_and_word_become_lists() -> None:
    body = (
        b"<Response><EventName>TaskFinish</EventName><JobsDetail><JobId>s1</JobId><State>Success</State>"
        b"<Tag>SpeechRecognition</Tag><Operation><SpeechRecognitionResult><AudioTime>1.5</AudioTime>"
        b"<ResultDetail><StartMs>0</StartMs><Words><Word>a</Word></Words></ResultDetail>"
        b"</SpeechRecognitionResult></Operation></JobsDetail></Response>"
    )
    (u,) = run(body)
    assert u.results == {"AudioTime": 1.5, "ResultDetail": [{"StartMs": "0", "Words": [{"Word": "a"}]}]}


# --- JSON form == XML form ---


def without_origin(result: tuple[JobUpdate, ...]) -> list[dict[str, Any]]:
    # Only origin may differ: body_sha256 hashes different bytes.
    return [u.model_dump(exclude={"origin"}) for u in result]


@pytest.mark.parametrize(
    ("xml", "json"),
    [tuple(both(stem)) for stem in API_ANSWERS + CALLBACKS]
    + [
        ("constructed/tencent_ci_taskfinish_failed.xml", "constructed/tencent_ci_taskfinish_failed.json"),
        ("constructed/tencent_ci_taskfinish_two_jobs.xml", "constructed/tencent_ci_taskfinish_two_jobs.json"),
    ],
)
def test_json_form_equals_xml_form(xml: str, json: str) -> None:
    from_xml, from_json = updates(xml, ""), updates(json, "")
    assert from_xml
    assert without_origin(from_json) == without_origin(from_xml)
    assert {u.origin.channel for u in from_json + from_xml} == {"unknown"}
    assert {u.origin.body_sha256 for u in from_json}.isdisjoint(u.origin.body_sha256 for u in from_xml)


@pytest.mark.parametrize("stem", API_ANSWERS)
def test_json_api_answer_without_response_root(stem: str) -> None:
    """Whether the JSON API answer keeps the Response root is not documented: both give the same job."""
    document = orjson.loads((FIXTURES / f"constructed/{stem}.json").read_bytes())
    assert list(document) == ["Response"]
    unwrapped = run(orjson.dumps(document["Response"]))
    assert without_origin(unwrapped) == without_origin(updates(f"constructed/{stem}.json"))


def _drop_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _drop_nulls(value) for key, value in node.items() if value is not None}
    if isinstance(node, list):
        return [_drop_nulls(value) for value in node]
    return node


@pytest.mark.parametrize(
    "stem", ["tencent_ci_tts_callback_success_1", "tencent_ci_speechrecognition_describe_success_1"]
)
def test_json_form_may_omit_empty_elements(stem: str) -> None:
    """The vendor's JSON example omits empty elements (<Message/>, <ObjectPrefix/>) rather than send null."""
    xml, json = both(stem)
    document = _drop_nulls(orjson.loads((FIXTURES / json).read_bytes()))
    assert without_origin(run(orjson.dumps(document))) == without_origin(updates(xml))


# --- Shapes, states and rejections ---


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("Submitted", JobStatus.QUEUED),
        ("Running", JobStatus.RUNNING),
        ("Pause", JobStatus.PAUSED),
        ("Success", JobStatus.COMPLETED),
        ("Failed", JobStatus.FAILED),
        ("Cancel", JobStatus.CANCELLED),
    ],
)
def test_states(state: str, status: JobStatus) -> None:
    (u,) = run(job_body(State=state, Code="C", Message="M"))
    assert u.status is status
    assert u.provider_status == state
    assert u.error == (JobError(code="C", message="M") if state in ("Failed", "Cancel") else None)


@pytest.mark.parametrize(
    "fixture",
    [
        "samples/tencent_ci_tts_callback_success_1.xml",
        "samples/tencent_ci_speechrecognition_list_success_1.xml",
        "samples/tencent_ci_workflowfinish_callback_success_1.xml",
        "seeds/tencent_ci_tts_callback_case3_workflow.json",
    ],
)
def test_detected_without_routing_key(fixture: str) -> None:
    result = updates(fixture, routing_key="")
    assert result
    assert all(u.provider == "tencent-ci" and u.origin.channel == "unknown" for u in result)


def test_json_with_response_root_is_accepted() -> None:
    body = orjson.dumps(
        {
            "Response": {
                "EventName": "TaskFinish",
                "JobsDetail": {"JobId": "j1", "State": "Running", "Tag": "Tts"},
            }
        }
    )
    (u,) = run(body, routing_key="")
    assert u.task_id == "j1"
    assert u.status is JobStatus.RUNNING


def test_queue_listing_is_not_detected() -> None:
    body = (FIXTURES / "samples/tencent_ci_asrqueue_list_notify_off_1.xml").read_bytes()
    assert rejected(body, routing_key="").reason == "unknown-format"
    exc = rejected(body)
    assert exc.reason == "unknown-format"
    assert exc.provider == "tencent-ci"
    assert exc.message == "Tencent CI body without JobsDetail or WorkflowExecution"


@pytest.mark.parametrize(
    "fixture",
    [
        "samples/tencent_ci_callback_skeleton_legacy_malformed_1.xml",
        "samples/partial/tencent_ci_speechrecognition_callback_success_1.partial.xml",
        "samples/partial/tencent_ci_speechrecognition_callback_success_en_2.partial.xml",
    ],
)
def test_malformed_and_truncated_samples(fixture: str) -> None:
    exc = rejected((FIXTURES / fixture).read_bytes())
    assert exc.reason == "malformed"
    assert exc.provider == "tencent-ci"


def test_jobsdetail_of_wrong_type_is_invalid() -> None:
    exc = rejected(orjson.dumps({"EventName": "TaskFinish", "JobsDetail": "oops"}))
    assert exc.reason == "invalid-payload"


def test_missing_job_id() -> None:
    assert rejected(job_body(JobId="")).reason == "missing-task-id"
    without_id = {"EventName": "TaskFinish", "JobsDetail": {"State": "Success", "Tag": "Tts"}}
    assert rejected(orjson.dumps(without_id)).reason == "missing-task-id"


def test_unknown_state_is_dead_lettered_for_replay() -> None:
    exc = rejected(job_body(State="Finished"))
    assert (exc.reason, exc.provider) == ("unknown-state", "tencent-ci")
    assert exc.message == "Tencent CI State 'Finished' is not a known state"
    xml = (FIXTURES / "samples/tencent_ci_tts_callback_success_1.xml").read_bytes()
    assert (
        rejected(xml.replace(b"<State>Success</State>", b"<State>Paused</State>")).reason == "unknown-state"
    )
    workflow = (FIXTURES / "samples/tencent_ci_workflowfinish_callback_success_1.xml").read_bytes()
    assert (
        rejected(workflow.replace(b"<State>Success</State>", b"<State>Done</State>")).reason
        == "unknown-state"
    )


@pytest.mark.parametrize("state", [None, ""])
def test_missing_state_is_invalid(state: str | None) -> None:
    exc = rejected(job_body(State=state))
    assert (exc.reason, exc.provider) == ("invalid-payload", "tencent-ci")
