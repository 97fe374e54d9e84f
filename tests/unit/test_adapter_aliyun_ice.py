"""Alibaba Cloud ICE bodies (samples, seeds, constructed events, XML forms) normalize field by field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.core.contract import Inbound
from consumer.core.errors import Rejection
from consumer.core.normalize import Normalized
from consumer.vendors import normalize
from consumer.vendors.aliyun_ice import parse as aliyun_ice
from schemas.job import JobError, JobStatus, JobUpdate
from tests.conftest import fixture_bytes, fixture_json, parsed_fixtures

GENERIC_JOB = "****20b48fb04483915d4f2cd8ac****"
ASR_JOB = "******042d5e4db6866f6289d1******"
TEXT_JOB = "******8c784f461db57c99c9d9******"
T_2020 = datetime(2020, 12, 26, 4, 11, 10, tzinfo=UTC)
T_ASR_CREATED = datetime(2022, 1, 21, 6, 15, 2, tzinfo=UTC)
T_ASR_MODIFIED = datetime(2022, 1, 21, 6, 15, 8, tzinfo=UTC)
T_TTS = datetime(2022, 1, 21, 6, 15, 7, tzinfo=UTC)
T_TEXT = datetime(2024, 1, 17, 8, 46, 17, tzinfo=UTC)
T_EVENT = datetime(2024, 1, 17, 8, 46, 20, tzinfo=UTC)
FIRST_SEED_LINE = {"content": "Speaking of which,", "from": 0.0, "to": 0.846}
# The XML responseDemo of two Submit*Job actions, verbatim (source in test_vendor_xml_submit_demos).
SUBMIT_ASR_XML_DEMO = b"""<SubmitASRJobResponse>
    <RequestId>******11-DB8D-4A9A-875B-275798******</RequestId>
    <JobId>****20b48fb04483915d4f2cd8ac****</JobId>
    <State>Finished</State>
</SubmitASRJobResponse>"""
SUBMIT_AUDIO_XML_DEMO = b"""<SubmitAudioProduceJobResponse>
    <RequestId>******11-DB8D-4A9A-875B-275798******</RequestId>
    <JobId>****20b48fb04483915d4f2cd8ac****</JobId>
    <State>Created</State>
</SubmitAudioProduceJobResponse>"""
# Every OpenAPI answer (Format=JSON) beside its Format=XML form, built from it (tests/fixtures/README.md).
JSON_AND_XML = [
    (
        "samples/ice_getsmarthandlejob_finished_1.json",
        "constructed/aliyun_ice_getsmarthandlejob_finished_1_with_jobresult.xml",
    ),
    (
        "samples/ice_getsmarthandlejob_asr_finished_2.json",
        "constructed/aliyun_ice_getsmarthandlejob_asr_finished_2.xml",
    ),
    (
        "samples/ice_getsmarthandlejob_tts_finished_3.json",
        "constructed/aliyun_ice_getsmarthandlejob_tts_finished_3.xml",
    ),
    (
        "samples/ice_getsmarthandlejob_textgenerate_finished_4.json",
        "constructed/aliyun_ice_getsmarthandlejob_textgenerate_finished_4.xml",
    ),
    (
        "samples/ice_getsmarthandlejob_asr_finished_5.json",
        "constructed/aliyun_ice_submitasrjob_asr_finished_5.xml",
    ),
    ("constructed/aliyun_ice_smartjob_failed.json", "constructed/aliyun_ice_smartjob_failed.xml"),
    ("samples/ice_listsmartjobs_finished_1.json", "constructed/aliyun_ice_listsmartjobs_finished_1.xml"),
    (
        "samples/ice_submitaudioproducejob_created_1.json",
        "constructed/aliyun_ice_submitaudioproducejob_created_1.xml",
    ),
]


def run(name: str, routing_key: str = "callback.aliyun-ice", **headers: object) -> Normalized:
    return normalize(Inbound(fixture_bytes(name), routing_key, headers))


def run_json(body: dict[str, Any], routing_key: str = "callback.aliyun-ice", **headers: object) -> Normalized:
    return normalize(Inbound(json.dumps(body).encode(), routing_key, headers))


def single(result: Normalized) -> JobUpdate:
    assert result.provider == "aliyun-ice"
    (update,) = result.updates
    assert update.provider == "aliyun-ice"
    return update


def rejected(
    name_or_body: str | dict[str, Any], routing_key: str = "callback.aliyun-ice", **headers: object
) -> Rejection:
    body = fixture_bytes(name_or_body) if isinstance(name_or_body, str) else json.dumps(name_or_body).encode()
    with pytest.raises(Rejection) as caught:
        normalize(Inbound(body, routing_key, headers))
    return caught.value


# GetSmartHandleJob


@pytest.mark.parametrize(
    ("name", "results"),
    [
        (
            "samples/ice_getsmarthandlejob_finished_1.json",
            {"AiResult": "拆条或智能标签信息", "MediaId": GENERIC_JOB, "Usage": {"total_tokens": 100}},
        ),
        # The seed adds MediaUrl "" and ErrorCode/ErrorMessage "": empty means absent.
        (
            "seeds/aliyun_ice_seed_success_response.json",
            {"AiResult": "拆条或智能标签信息", "MediaId": GENERIC_JOB, "Usage": {"total_tokens": 100}},
        ),
        (
            "constructed/aliyun_ice_getsmarthandlejob_finished_1_with_jobresult.xml",
            {"AiResult": "拆条或智能标签信息", "MediaId": GENERIC_JOB, "Usage": {"total_tokens": 100}},
        ),
        ("samples/ice_getsmarthandlejob_finished_1.xml", {}),
    ],
)
def test_generic_finished_job(name: str, results: dict[str, Any]) -> None:
    u = single(run(name, ""))
    assert u.task_id == GENERIC_JOB
    assert u.status is JobStatus.COMPLETED
    assert u.provider_status == "Finished"
    assert u.kind == "smart-asr"
    assert u.source == "aliyun-ice.smart-job"
    assert u.task_key is None
    assert u.user_data == {"user": "data"}
    assert u.error is None
    assert u.results == results  # Output "{}" is not a result
    assert u.submitted_at == T_2020
    assert u.started_at is None
    assert u.finished_at == T_2020
    assert u.reported_at == T_2020
    assert u.origin.channel == "unknown"


def test_json_and_xml_agree_on_the_job() -> None:
    from_json = single(run("samples/ice_getsmarthandlejob_finished_1.json"))
    from_xml = single(run("samples/ice_getsmarthandlejob_finished_1.xml"))
    assert from_json.model_dump(exclude={"results", "origin"}) == from_xml.model_dump(
        exclude={"results", "origin"}
    )
    assert from_json.results != from_xml.results
    assert from_json.origin.channel == from_xml.origin.channel == "callback"


def test_user_id_number_or_string() -> None:
    as_string = fixture_json("samples/ice_getsmarthandlejob_finished_1.json")
    assert isinstance(as_string["SmartJobInfo"]["UserId"], str)
    as_number = json.loads(json.dumps(as_string))
    as_number["SmartJobInfo"]["UserId"] = 1974526429000000
    from_string, from_number = single(run_json(as_string)), single(run_json(as_number))
    assert from_string.model_dump(exclude={"origin"}) == from_number.model_dump(exclude={"origin"})


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        (
            "samples/ice_getsmarthandlejob_asr_finished_2.json",
            {"content": "提起", "from": 0.0, "to": 0.846},
            "还参加各种相声综艺节目点评新人表演演员已经",
        ),
        (
            "constructed/aliyun_ice_getsmarthandlejob_asr_finished_2.xml",
            {"content": "提起", "from": 0.0, "to": 0.846},
            "还参加各种相声综艺节目点评新人表演演员已经",
        ),
        (
            "seeds/aliyun_ice_seed_asr.json",
            FIRST_SEED_LINE,
            "They have also appeared on various comedy shows to critique new performers.",
        ),
    ],
)
def test_asr_result(name: str, first: dict[str, Any], last: str) -> None:
    u = single(run(name))
    assert (u.task_id, u.status, u.provider_status) == (ASR_JOB, JobStatus.COMPLETED, "Finished")
    assert (u.kind, u.source, u.user_data, u.error) == ("smart-asr", "aliyun-ice.smart-job", None, None)
    assert list(u.results) == ["AiResult"]
    lines = u.results["AiResult"]
    assert isinstance(lines, list)
    assert len(lines) == 5
    assert lines[0] == first
    assert lines[-1] == {"content": last, "from": 6.265, "to": 10.33}
    assert (u.submitted_at, u.finished_at, u.reported_at) == (T_ASR_CREATED, T_ASR_MODIFIED, T_ASR_MODIFIED)
    assert u.started_at is None


@pytest.mark.parametrize(
    "name",
    [
        "samples/ice_getsmarthandlejob_asr_finished_5.json",
        "constructed/aliyun_ice_submitasrjob_asr_finished_5.xml",
    ],
)
def test_asr_with_output_and_numeric_user_id(name: str) -> None:
    u = single(run(name, ""))
    assert (u.task_id, u.status, u.provider_status, u.kind) == (
        ASR_JOB,
        JobStatus.COMPLETED,
        "Finished",
        "smart-asr",
    )
    assert (u.source, u.user_data, u.error) == ("aliyun-ice.smart-job", None, None)
    assert list(u.results) == ["AiResult", "Output"]
    ai, output = u.results["AiResult"], u.results["Output"]
    assert isinstance(ai, list)
    assert isinstance(output, list)
    assert ai[0] == output[0] == {"content": "提起", "from": 0.0, "to": 0.846}
    # The vendor's two copies differ by one character; both are kept as sent.
    assert ai[1] == {"content": "现在可以说是红的发紫了", "from": 0.846, "to": 3.386}
    assert output[1] == {"content": "现在的可以说是红的发紫了", "from": 0.846, "to": 3.386}
    assert (u.submitted_at, u.finished_at, u.reported_at) == (T_ASR_CREATED, T_ASR_MODIFIED, T_ASR_MODIFIED)


@pytest.mark.parametrize(
    ("name", "media_id", "first"),
    [
        (
            "samples/ice_getsmarthandlejob_tts_finished_3.json",
            "******bf47c94e82b3b2014361******",
            {"content": "提起", "from": 0.0, "to": 0.846},
        ),
        (
            "constructed/aliyun_ice_getsmarthandlejob_tts_finished_3.xml",
            "******bf47c94e82b3b2014361******",
            {"content": "提起", "from": 0.0, "to": 0.846},
        ),
        ("seeds/aliyun_ice_seed_tts.json", "******bf47c94e82b3b2014361******", FIRST_SEED_LINE),
    ],
)
def test_tts_result(name: str, media_id: str, first: dict[str, Any]) -> None:
    u = single(run(name))
    assert (u.task_id, u.status, u.provider_status) == (ASR_JOB, JobStatus.COMPLETED, "Finished")
    assert (u.kind, u.source, u.user_data, u.error) == ("tts", "aliyun-ice.smart-job", None, None)
    # InputFile is the text that was spoken, not an output.
    assert list(u.results) == ["AiResult", "MediaId"]
    assert u.results["MediaId"] == media_id
    lines = u.results["AiResult"]
    assert isinstance(lines, list)
    assert lines[0] == first
    assert (u.submitted_at, u.finished_at, u.reported_at) == (T_TTS, T_TTS, T_TTS)


@pytest.mark.parametrize(
    ("name", "first_copy"),
    [
        ("samples/ice_getsmarthandlejob_textgenerate_finished_4.json", "新开店蛋糕"),
        ("constructed/aliyun_ice_getsmarthandlejob_textgenerate_finished_4.xml", "新开店蛋糕"),
        ("seeds/aliyun_ice_seed_textgenerate.json", "Our new shop's cakes are made with pure dairy cream"),
    ],
)
def test_text_generate_result(name: str, first_copy: str) -> None:
    u = single(run(name))
    assert (u.task_id, u.status, u.provider_status) == (TEXT_JOB, JobStatus.COMPLETED, "Finished")
    assert (u.kind, u.source, u.error) == ("text-generate", "aliyun-ice.smart-job", None)
    assert u.user_data == {"NotifyAddress": "https://****"}
    assert list(u.results) == ["AiResult", "Usage"]
    assert u.results["Usage"] == {"total_tokens": 200}
    copies = u.results["AiResult"]
    assert isinstance(copies, list)
    assert len(copies) == 3
    assert isinstance(copies[0], str)
    assert copies[0].startswith(first_copy)
    assert (u.submitted_at, u.finished_at, u.reported_at) == (T_TEXT, T_TEXT, T_TEXT)


@pytest.mark.parametrize(
    "name", ["constructed/aliyun_ice_smartjob_failed.json", "constructed/aliyun_ice_smartjob_failed.xml"]
)
def test_failed_job_carries_the_error(name: str) -> None:
    u = single(run(name))
    assert (u.task_id, u.status, u.provider_status) == (ASR_JOB, JobStatus.FAILED, "Failed")
    assert (u.kind, u.source) == ("tts", "aliyun-ice.smart-job")
    assert u.user_data == {"user": "data"}
    assert u.error == JobError(
        code="InvalidParameter", message="The specified parameter EditingConfig is not valid."
    )
    assert u.results == {}
    assert u.submitted_at == T_TTS
    assert u.finished_at == u.reported_at == datetime(2022, 1, 21, 6, 15, 19, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "status"),
    [("Created", JobStatus.QUEUED), ("Executing", JobStatus.RUNNING), ("Finished", JobStatus.COMPLETED)],
)
def test_states(state: str, status: JobStatus) -> None:
    body = fixture_json("constructed/aliyun_ice_smartjob_failed.json") | {"State": state}
    u = single(run_json(body))
    assert (u.status, u.provider_status, u.error) == (status, state, None)
    assert u.reported_at == datetime(2022, 1, 21, 6, 15, 19, tzinfo=UTC)
    assert u.finished_at == (u.reported_at if status.terminal else None)


@pytest.mark.parametrize(
    ("job_type", "kind"), [("DynamicChart", "dynamic-chart"), ("SmartCut", "smart-cut"), ("", "smart-job")]
)
def test_other_job_types_are_kebab_cased(job_type: str, kind: str) -> None:
    body = fixture_json("samples/ice_getsmarthandlejob_finished_1.json")
    body["SmartJobInfo"]["JobType"] = job_type
    assert single(run_json(body)).kind == kind


def test_user_data_that_is_not_json_stays_text() -> None:
    body = fixture_json("samples/ice_getsmarthandlejob_finished_1.json") | {"UserData": "order-42"}
    assert single(run_json(body)).user_data == "order-42"


@pytest.mark.parametrize(
    "name",
    [
        "samples/ice_submitaudioproducejob_created_1.json",
        "constructed/aliyun_ice_submitaudioproducejob_created_1.xml",
    ],
)
def test_submit_answer_is_queued(name: str) -> None:
    u = single(run(name, ""))
    assert (u.task_id, u.status, u.provider_status) == (GENERIC_JOB, JobStatus.QUEUED, "Created")
    assert (u.kind, u.source, u.user_data, u.error) == ("smart-job", "aliyun-ice.smart-job", None, None)
    assert u.results == {"MediaId": "****2bcbfcfa30fccb36f72dca22****"}
    assert (u.submitted_at, u.started_at, u.finished_at, u.reported_at) == (None, None, None, None)


@pytest.mark.parametrize(
    "name",
    ["samples/ice_listsmartjobs_finished_1.json", "constructed/aliyun_ice_listsmartjobs_finished_1.xml"],
)
def test_listing_gives_one_update_per_entry(name: str) -> None:
    u = single(run(name, ""))
    assert (u.task_id, u.status, u.provider_status) == (GENERIC_JOB, JobStatus.COMPLETED, "Finished")
    assert (u.kind, u.source, u.error, u.results) == ("smart-asr", "aliyun-ice.job-listing", None, {})
    assert u.user_data == {"user": "data"}
    assert (u.submitted_at, u.finished_at, u.reported_at) == (T_2020, T_2020, T_2020)


def listing_of_two() -> dict[str, Any]:
    body = fixture_json("samples/ice_listsmartjobs_finished_1.json")
    second = body["SmartJobList"][0] | {
        "JobId": "job-2",
        "JobState": "Executing",
        "UserId": "17",
        "JobType": "TextToSpeech",
    }
    body["SmartJobList"].append(second)
    return body


def test_listing_of_two() -> None:
    first, other = run_json(listing_of_two()).updates
    assert (first.task_id, first.status) == (GENERIC_JOB, JobStatus.COMPLETED)
    assert (other.task_id, other.status, other.kind, other.finished_at) == (
        "job-2",
        JobStatus.RUNNING,
        "tts",
        None,
    )


def test_empty_listing_has_no_job() -> None:
    body = fixture_json("samples/ice_listsmartjobs_finished_1.json") | {"SmartJobList": []}
    assert rejected(body).reason == "unknown-format"


# The Format=XML form of each answer: the same updates as the Format=JSON one


def updates_without_origin(result: Normalized) -> list[dict[str, Any]]:
    # Only origin may differ: body_sha256 hashes different bytes.
    return [u.model_dump(exclude={"origin"}) for u in result.updates]


@pytest.mark.parametrize(("json_name", "xml_name"), JSON_AND_XML)
def test_xml_form_equals_json_form(json_name: str, xml_name: str) -> None:
    from_json, from_xml = run(json_name, ""), run(xml_name, "")
    assert from_json.provider == from_xml.provider == "aliyun-ice"
    assert from_json.updates
    assert updates_without_origin(from_xml) == updates_without_origin(from_json)
    assert [u.origin.channel for u in from_xml.updates] == [u.origin.channel for u in from_json.updates]
    assert from_json.body_sha256 != from_xml.body_sha256


def test_xml_listing_of_two_equals_json() -> None:
    """Several entries are repeated <SmartJobList> elements, as in the vendor's own ListSmartJobs XML demo."""
    xml = fixture_bytes("constructed/aliyun_ice_listsmartjobs_finished_1.xml").decode()
    start = xml.index("    <SmartJobList>")
    end = xml.index("</SmartJobList>") + len("</SmartJobList>\n")
    second = (
        xml[start:end]
        .replace(GENERIC_JOB, "job-2")
        .replace("<JobState>Finished<", "<JobState>Executing<")
        .replace("<UserId>0<", "<UserId>17<")
        .replace("<JobType>ASR<", "<JobType>TextToSpeech<")
    )
    from_xml = normalize(Inbound((xml[:end] + second + xml[end:]).encode(), ""))
    from_json = run_json(listing_of_two(), "")
    assert [u.task_id for u in from_xml.updates] == [GENERIC_JOB, "job-2"]
    assert updates_without_origin(from_xml) == updates_without_origin(from_json)


@pytest.mark.parametrize(
    "body",
    [
        b"<ListSmartJobsResponse><RequestId>r</RequestId><TotalCount>0</TotalCount></ListSmartJobsResponse>",
        b"<ListSmartJobsResponse><RequestId>r</RequestId><SmartJobList/></ListSmartJobsResponse>",
    ],
)
def test_empty_xml_listing_has_no_job_like_json(body: bytes) -> None:
    json_exc = rejected(fixture_json("samples/ice_listsmartjobs_finished_1.json") | {"SmartJobList": []})
    with pytest.raises(Rejection) as caught:
        normalize(Inbound(body, "callback.aliyun-ice"))
    assert (caught.value.reason, caught.value.message) == (json_exc.reason, json_exc.message)
    assert caught.value.reason == "unknown-format"


@pytest.mark.parametrize(
    ("demo", "status", "provider_status"),
    [
        (SUBMIT_ASR_XML_DEMO, JobStatus.COMPLETED, "Finished"),
        (SUBMIT_AUDIO_XML_DEMO, JobStatus.QUEUED, "Created"),
    ],
)
def test_vendor_xml_submit_demos(demo: bytes, status: JobStatus, provider_status: str) -> None:
    """The XML responseDemo of each Submit*Job in the ICE OpenAPI metadata (dew-serverless/acs-sdk-php
    data/ice/2020-11-09/api-docs.json @ 2da261e4), verbatim; the SubmitAudioProduceJob one has no MediaId."""
    u = single(normalize(Inbound(demo, "")))
    assert (u.task_id, u.status, u.provider_status) == (GENERIC_JOB, status, provider_status)
    assert (u.kind, u.source, u.user_data, u.error, u.results) == (
        "smart-job",
        "aliyun-ice.smart-job",
        None,
        None,
        {},
    )


# Task ids


def test_job_without_job_id() -> None:
    body = fixture_json("samples/ice_getsmarthandlejob_finished_1.json")
    del body["JobId"]
    exc = rejected(body, "", **{"x-provider": "aliyun-ice"})
    assert (exc.reason, exc.provider) == ("missing-task-id", "aliyun-ice")


def test_job_id_from_the_relay_header() -> None:
    body = fixture_json("samples/ice_getsmarthandlejob_finished_1.json")
    del body["JobId"]
    u = single(run_json(body, **{"x-task-id": "from-header"}))
    assert (u.task_id, u.status) == ("from-header", JobStatus.COMPLETED)


def test_listing_entry_without_job_id() -> None:
    body = fixture_json("samples/ice_listsmartjobs_finished_1.json")
    del body["SmartJobList"][0]["JobId"]
    assert rejected(body, **{"x-task-id": "not-for-a-list"}).reason == "missing-task-id"


# Invalid payloads


@pytest.mark.parametrize(
    "change",
    [
        {"State": ["Finished"]},
        {"State": None},
        {"State": ""},
        {"JobResult": "nope"},
        {"SmartJobInfo": {"CreateTime": {"at": 1}}},
    ],
)
def test_wrong_types_and_missing_state(change: dict[str, Any]) -> None:
    body = fixture_json("samples/ice_getsmarthandlejob_finished_1.json") | change
    exc = rejected(body)
    assert (exc.reason, exc.provider) == ("invalid-payload", "aliyun-ice")


def test_unknown_state_is_dead_lettered_for_replay() -> None:
    body = fixture_json("samples/ice_getsmarthandlejob_finished_1.json") | {"State": "Paused"}
    exc = rejected(body)
    assert (exc.reason, exc.provider, exc.message) == (
        "unknown-state",
        "aliyun-ice",
        "ICE state 'Paused' is not a known state",
    )
    xml = fixture_bytes("samples/ice_getsmarthandlejob_finished_1.xml").replace(b">Finished<", b">Paused<")
    with pytest.raises(Rejection) as caught:
        normalize(Inbound(xml, ""))
    assert (caught.value.reason, caught.value.provider) == ("unknown-state", "aliyun-ice")


def test_unknown_listing_state() -> None:
    body = fixture_json("samples/ice_listsmartjobs_finished_1.json")
    body["SmartJobList"][0]["JobState"] = "Queued"
    exc = rejected(body)
    assert exc.reason == "unknown-state"
    assert "'Queued'" in exc.message


# Events


def test_event_success() -> None:
    u = single(run("constructed/aliyun_ice_event_smartjob_success.json", ""))
    assert (u.task_id, u.status, u.provider_status) == (ASR_JOB, JobStatus.COMPLETED, "Success")
    assert (u.kind, u.source, u.error, u.results) == ("smart-asr", "aliyun-ice.event", None, {})
    assert u.user_data == {"NotifyAddress": "ice-callback-demo", "biz": "order-42"}
    assert (u.submitted_at, u.started_at) == (None, None)
    assert u.finished_at == u.reported_at == T_EVENT


def test_event_fail_without_job_type() -> None:
    u = single(run("constructed/aliyun_ice_event_smartjob_fail.json"))
    assert (u.task_id, u.status, u.provider_status) == (TEXT_JOB, JobStatus.FAILED, "Fail")
    assert (u.kind, u.source, u.user_data, u.results) == ("smart-job-complete", "aliyun-ice.event", None, {})
    assert u.error == JobError(code="InvalidParameter", message="The specified parameter is not valid.")
    assert u.finished_at == u.reported_at == T_EVENT


def test_event_with_unknown_status() -> None:
    body = fixture_json("constructed/aliyun_ice_event_smartjob_success.json")
    body["MessageBody"]["Status"] = "Running"
    assert rejected(body).reason == "unknown-state"


def test_ims_sample_is_not_json() -> None:
    exc = rejected("samples/aliyun_ims_event_fileuploadcomplete_success_1.json")
    assert exc.reason == "malformed"


def test_ims_upload_event_names_no_job() -> None:
    # The same sample with its masked UserId unmasked, so that it parses.
    body = fixture_bytes("samples/aliyun_ims_event_fileuploadcomplete_success_1.json").replace(
        b"183322097756****", b"1833220977560000"
    )
    with pytest.raises(Rejection) as caught:
        normalize(Inbound(body, ""))
    assert (caught.value.reason, caught.value.provider) == ("missing-task-id", "aliyun-ice")
    assert caught.value.message == "ICE event FileUploadComplete carries no JobId"


@pytest.mark.parametrize(
    "name",
    [
        "samples/aliyun_vod_event_producemediacomplete_success_1.json",
        "samples/aliyun_vod_event_producemediacomplete_fail_1.json",
    ],
)
@pytest.mark.parametrize("headers", [{"x-provider": "aliyun-ice"}, {}])
def test_vod_events_name_no_job(name: str, headers: dict[str, str]) -> None:
    exc = rejected(name, "", **headers)
    assert (exc.reason, exc.provider) == ("missing-task-id", "aliyun-ice")
    assert exc.message == "ICE event ProduceMediaComplete carries no JobId"


def test_flat_event_with_a_job_id() -> None:
    body = fixture_json("samples/aliyun_vod_event_producemediacomplete_fail_1.json") | {"JobId": "job-7"}
    u = single(run_json(body, ""))
    assert (u.task_id, u.status, u.provider_status) == ("job-7", JobStatus.FAILED, "fail")
    assert (u.kind, u.source, u.user_data, u.results) == (
        "produce-media-complete",
        "aliyun-ice.event",
        None,
        {},
    )
    assert u.error == JobError(
        code="InvalidParameter.ResourceContentBad", message="The resource operated InputFile is bad"
    )
    assert u.finished_at == u.reported_at == datetime(2018, 12, 26, 14, 34, 9, tzinfo=UTC)


def test_flat_event_short_error_names() -> None:
    body = {
        "EventType": "AIMediaAuditComplete",
        "EventTime": "2022-10-20T10:29:46:540Z",
        "JobId": "j",
        "Status": "fail",
    }
    u = single(run_json(body | {"Code": "InternalError", "Message": "boom"}, ""))
    assert u.error == JobError(code="InternalError", message="boom")
    assert u.reported_at == datetime(2022, 10, 20, 10, 29, 46, 540000, tzinfo=UTC)
    ok = single(run_json(body | {"Status": "success"}, ""))
    assert (ok.status, ok.error) == (JobStatus.COMPLETED, None)


# Detection


def test_imm_notification_is_another_product() -> None:
    exc = rejected("samples/aliyun_imm_mns_notification_mediaconvert_succeeded_1.json", "")
    assert (exc.reason, exc.provider) == ("unknown-format", None)


@pytest.mark.parametrize(
    ("name", "document"),
    parsed_fixtures(
        "*/tingwu_*.json",
        "*/tencent_ci_*.xml",
        "*/tencent_ci_*.json",
        "*/huawei_*.json",
        "*/aliyun_imm_*.json",
    ),
)
def test_detect_leaves_other_vendors_alone(name: str, document: Any) -> None:
    assert not aliyun_ice.detect(document), name


@pytest.mark.parametrize(("name", "document"), parsed_fixtures("*/ice_*", "*/aliyun_ice_*", "*/aliyun_vod_*"))
def test_detect_recognises_ice(name: str, document: Any) -> None:
    assert aliyun_ice.detect(document), name
