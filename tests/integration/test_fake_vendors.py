"""The vendor fake, driven with the project's signers over HTTP: states, refusals, faults, limits, records."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import xmltodict

from consumer.vendors.aliyun.signer import acs3_headers, rpc_signed_params
from consumer.vendors.huawei_metastudio.signer import sdk_headers
from consumer.vendors.tencent_ci.signer import cos_sign
from schemas.job import PROVIDERS, Provider
from tests.fakes.vendors import (
    HUAWEI_NOT_FOUND,
    ICE_NOT_FOUND,
    TENCENT_NOT_FOUND_ELEMENT,
    TINGWU_NOT_FOUND,
    Credentials,
    FakeVendors,
)

CREDENTIALS = Credentials(
    alibaba_access_key_id="LTAI-fake-id",
    alibaba_access_key_secret="alibaba-secret",
    tencent_secret_id="AKID-fake-id",
    tencent_secret_key="tencent-secret",
    huawei_access_key="HWAKFAKE",
    huawei_secret_key="huawei-secret",
    huawei_project_id="0123456789abcdef",
)
WRONG_SECRETS = dataclasses.replace(
    CREDENTIALS,
    alibaba_access_key_secret="wrong",
    tencent_secret_key="wrong",
    huawei_secret_key="wrong",
)
UNKNOWN_KEYS = dataclasses.replace(
    CREDENTIALS, alibaba_access_key_id="LTAI-other", tencent_secret_id="AKID-other", huawei_access_key="OTHER"
)
# (provider, ICE's RPC V2 signature instead of V3)
CASES = [("tingwu", False), ("aliyun-ice", False), ("aliyun-ice", True), ("tencent-ci", False)]
CASES += [("huawei-metastudio", False)]
IDS = ["tingwu", "ice-v3", "ice-v2", "tencent-ci", "huawei-metastudio"]
# Each vendor's in-progress and terminal success state.
STATES: dict[Provider, tuple[str, str]] = {
    "tingwu": ("ONGOING", "COMPLETED"),
    "aliyun-ice": ("Executing", "Finished"),
    "tencent-ci": ("Running", "Success"),
    "huawei-metastudio": ("PROCESSING", "SUCCEED"),
}
AUTH_STATUS: dict[Provider, int] = {
    "tingwu": 400,
    "aliyun-ice": 400,
    "tencent-ci": 403,
    "huawei-metastudio": 401,
}
THROTTLE_STATUS: dict[Provider, int] = {
    "tingwu": 400,
    "aliyun-ice": 400,
    "tencent-ci": 503,
    "huawei-metastudio": 429,
}
THROTTLE_CODE: dict[Provider, str] = {
    "tingwu": "Throttling.User",
    "aliyun-ice": "Throttling.User",
    "tencent-ci": "SlowDown",
    "huawei-metastudio": "APIGW.0308",
}
SERVER_ERROR_CODE: dict[Provider, str] = {
    "tingwu": "InternalError",
    "aliyun-ice": "InternalError",
    "tencent-ci": "InternalError",
    "huawei-metastudio": "MSS.000000002",
}


class Clock:
    """The fake's clock, moved by the test: timelines and rate windows without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(clock: Clock) -> AsyncIterator[FakeVendors]:
    async with FakeVendors(CREDENTIALS, clock=clock) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def signed(
    fake: FakeVendors,
    provider: Provider,
    task_id: str,
    *,
    rpc: bool = False,
    credentials: Credentials = CREDENTIALS,
    when: datetime | None = None,
) -> httpx.Request:
    """A status request as each vendor wants it, signed by the project's signers."""
    at = when or datetime.now(UTC)
    host = fake.endpoint.removeprefix("http://")
    c = credentials
    if provider in ("tingwu", "aliyun-ice"):
        alibaba: dict[str, Any] = {
            "access_key_id": c.alibaba_access_key_id,
            "access_key_secret": c.alibaba_access_key_secret,
            "nonce": uuid.uuid4().hex,
        }
        if provider == "tingwu":
            path = f"/openapi/tingwu/v2/tasks/{task_id}"
            headers = acs3_headers(
                **alibaba,
                host=host,
                action="GetTaskInfo",
                version="2023-09-30",
                date=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                method="GET",
                path=path,
            )
            return httpx.Request("GET", fake.endpoint + path, headers=headers)
        query = {"JobId": task_id}
        if rpc:
            params = rpc_signed_params(
                **alibaba,
                action="GetSmartHandleJob",
                version="2020-11-09",
                timestamp=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                params=query,
            )
            return httpx.Request("GET", fake.endpoint + "/", params=params)
        headers = acs3_headers(
            **alibaba,
            host=host,
            action="GetSmartHandleJob",
            version="2020-11-09",
            date=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            method="GET",
            path="/",
            query=query,
        )
        return httpx.Request("GET", fake.endpoint + "/", params=query, headers=headers)
    if provider == "tencent-ci":
        path = f"/asr_jobs/{task_id}"
        start = int(at.timestamp())
        signature = cos_sign(
            secret_id=c.tencent_secret_id,
            secret_key=c.tencent_secret_key,
            method="GET",
            path=path,
            query=None,
            headers={"Host": host},
            start=start - 60,
            end=start + 600,
        )
        headers = {"Host": host, "Authorization": signature.authorization}
        return httpx.Request("GET", fake.endpoint + path, headers=headers)
    path = f"/v1/{c.huawei_project_id}/ttsc/async-jobs/{task_id}"
    headers = sdk_headers(
        access_key=c.huawei_access_key,
        secret_key=c.huawei_secret_key,
        method="GET",
        host=host,
        path=path,
        date=at.strftime("%Y%m%dT%H%M%SZ"),
        headers={"X-Project-Id": c.huawei_project_id},
    )
    return httpx.Request("GET", fake.endpoint + path, headers=headers)


def document(provider: Provider, response: httpx.Response) -> dict[str, Any]:
    if provider == "tencent-ci":
        parsed: dict[str, Any] = xmltodict.parse(response.content)
        return parsed
    loaded: dict[str, Any] = response.json()
    return loaded


def state(provider: Provider, response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = document(provider, response)
    found = {
        "tingwu": lambda: body["Data"]["TaskStatus"],
        "aliyun-ice": lambda: body["State"],
        "tencent-ci": lambda: body["Response"]["JobsDetail"]["State"],
        "huawei-metastudio": lambda: body["state"],
    }[provider]()
    assert isinstance(found, str)
    return found


def error_code(provider: Provider, response: httpx.Response) -> str:
    body = document(provider, response)
    found = {
        "tingwu": lambda: body["Code"],
        "aliyun-ice": lambda: body["Code"],
        "tencent-ci": lambda: body["Error"]["Code"],
        "huawei-metastudio": lambda: body["error_code"],
    }[provider]()
    assert isinstance(found, str)
    return found


def is_not_found(provider: Provider, response: httpx.Response) -> bool:
    if provider == "tencent-ci":
        body = document(provider, response)["Response"]
        return response.status_code == 200 and TENCENT_NOT_FOUND_ELEMENT in body
    expected = {"tingwu": TINGWU_NOT_FOUND, "aliyun-ice": ICE_NOT_FOUND}.get(provider, HUAWEI_NOT_FOUND)
    return (response.status_code, error_code(provider, response)) == (expected.status, expected.code)


@pytest.mark.parametrize(("provider", "rpc"), CASES, ids=IDS)
async def test_a_signed_poll_gets_the_state_its_timeline_has_reached(
    fake: FakeVendors, http: httpx.AsyncClient, clock: Clock, provider: Provider, rpc: bool
) -> None:
    running, done = STATES[provider]
    fake.add_job(provider, "job-1", [(0, running), (5, done)])

    assert state(provider, await http.send(signed(fake, provider, "job-1", rpc=rpc))) == running
    clock.now += 4.9
    assert state(provider, await http.send(signed(fake, provider, "job-1", rpc=rpc))) == running
    clock.now += 0.1
    answer = await http.send(signed(fake, provider, "job-1", rpc=rpc))

    assert state(provider, answer) == done
    assert fake.polls(provider, "job-1") == [1000.0, 1004.9, 1005.0]
    assert [r.verdict for r in fake.records] == ["ok", "ok", "ok"]
    assert not fake.rejected


async def test_the_answers_carry_each_vendors_fields(fake: FakeVendors, http: httpx.AsyncClient) -> None:
    for provider, (_, done) in STATES.items():
        fake.add_job(provider, "job-2", [(0, done)])
    tingwu = (await http.send(signed(fake, "tingwu", "job-2"))).json()
    ice = (await http.send(signed(fake, "aliyun-ice", "job-2"))).json()
    tencent = document("tencent-ci", await http.send(signed(fake, "tencent-ci", "job-2")))
    huawei = (await http.send(signed(fake, "huawei-metastudio", "job-2"))).json()

    assert (tingwu["Code"], tingwu["Data"]["TaskId"]) == ("0", "job-2")
    assert "Transcription" in tingwu["Data"]["Result"]
    assert (ice["JobId"], ice["JobResult"]["AiResult"][:1]) == ("job-2", "[")
    detail = tencent["Response"]["JobsDetail"]
    assert (detail["JobId"], detail["Code"], detail["Tag"]) == ("job-2", "Success", "SpeechRecognition")
    assert "job_id" not in huawei  # MetaStudio's answer names no job: the poller knows which it asked about
    assert (huawei["code"], huawei["audio_file_url"][:8]) == ("0", "https://")


async def test_failed_jobs_carry_the_vendors_error_fields(fake: FakeVendors, http: httpx.AsyncClient) -> None:
    failed: dict[Provider, str] = {
        "tingwu": "FAILED",
        "aliyun-ice": "Failed",
        "tencent-ci": "Failed",
        "huawei-metastudio": "FAILED",
    }
    for provider, name in failed.items():
        fake.add_job(provider, "job-3", [(0, name)])
    tingwu = (await http.send(signed(fake, "tingwu", "job-3"))).json()["Data"]
    ice = (await http.send(signed(fake, "aliyun-ice", "job-3"))).json()
    tencent = document("tencent-ci", await http.send(signed(fake, "tencent-ci", "job-3")))
    huawei = (await http.send(signed(fake, "huawei-metastudio", "job-3"))).json()

    assert (tingwu["TaskStatus"], tingwu["ErrorCode"]) == ("FAILED", "TSC.AudioFileLink")
    assert (ice["State"], ice["ErrorCode"]) == ("Failed", "InvalidParameter")
    assert tencent["Response"]["JobsDetail"]["Code"] != "Success"
    assert (huawei["state"], huawei["code"]) == ("FAILED", "MSS.000000001")


@pytest.mark.parametrize(("provider", "rpc"), CASES, ids=IDS)
async def test_an_unknown_job_and_one_not_yet_started_are_not_found(
    fake: FakeVendors, http: httpx.AsyncClient, clock: Clock, provider: Provider, rpc: bool
) -> None:
    fake.add_job(provider, "later", [(10, STATES[provider][0])])
    for task_id in ("nobody", "later"):
        answer = await http.send(signed(fake, provider, task_id, rpc=rpc))
        assert is_not_found(provider, answer)
        if provider == "tencent-ci":
            assert document(provider, answer)["Response"] == {TENCENT_NOT_FOUND_ELEMENT: task_id}
    clock.now += 10
    assert state(provider, await http.send(signed(fake, provider, "later", rpc=rpc))) == STATES[provider][0]
    assert [r.verdict for r in fake.records] == ["not-found", "not-found", "ok"]


@pytest.mark.parametrize(("provider", "rpc"), CASES, ids=IDS)
async def test_a_wrong_secret_is_refused_in_the_vendors_format_and_counted(
    fake: FakeVendors, http: httpx.AsyncClient, provider: Provider, rpc: bool
) -> None:
    fake.add_job(provider, "job-4", [(0, STATES[provider][0])])
    answer = await http.send(signed(fake, provider, "job-4", rpc=rpc, credentials=WRONG_SECRETS))

    assert answer.status_code == AUTH_STATUS[provider]
    expected = "APIGW.0301" if provider == "huawei-metastudio" else "SignatureDoesNotMatch"
    assert error_code(provider, answer) == expected
    assert fake.rejected == {provider: 1}
    assert [(r.task_id, r.verdict) for r in fake.records] == [("job-4", "auth")]
    if provider == "tencent-ci":
        assert answer.headers["content-type"] == "application/xml"
        assert answer.content.startswith(b"<?xml")
        assert b"<RequestId>" in answer.content
    else:
        assert answer.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(("provider", "rpc"), CASES, ids=IDS)
async def test_an_unknown_key_is_refused(
    fake: FakeVendors, http: httpx.AsyncClient, provider: Provider, rpc: bool
) -> None:
    answer = await http.send(signed(fake, provider, "job-5", rpc=rpc, credentials=UNKNOWN_KEYS))

    expected = {
        "tingwu": (404, "InvalidAccessKeyId.NotFound"),
        "aliyun-ice": (404, "InvalidAccessKeyId.NotFound"),
        "tencent-ci": (403, "InvalidAccessKeyId"),
        "huawei-metastudio": (401, "APIGW.0301"),
    }[provider]
    assert (answer.status_code, error_code(provider, answer)) == expected
    assert fake.rejected == {provider: 1}


@pytest.mark.parametrize(("provider", "rpc"), CASES, ids=IDS)
async def test_a_stale_signature_is_refused(
    fake: FakeVendors, http: httpx.AsyncClient, provider: Provider, rpc: bool
) -> None:
    # A clock 20 minutes off (or local time sent as UTC) fails at the vendor too.
    stale = datetime.now(UTC) - timedelta(minutes=20)
    answer = await http.send(signed(fake, provider, "job-6", rpc=rpc, when=stale))

    expected = {
        "tingwu": (400, "InvalidTimeStamp.Expired"),
        "aliyun-ice": (400, "InvalidTimeStamp.Expired"),
        "tencent-ci": (403, "AccessDenied"),
        "huawei-metastudio": (401, "APIGW.0301"),
    }[provider]
    assert (answer.status_code, error_code(provider, answer)) == expected
    assert fake.rejected == {provider: 1}


@pytest.mark.parametrize("rpc", [False, True], ids=["v3", "v2"])
async def test_alibaba_refuses_a_nonce_used_twice(
    fake: FakeVendors, http: httpx.AsyncClient, rpc: bool
) -> None:
    fake.add_job("aliyun-ice", "job-7", [(0, "Executing")])
    request = signed(fake, "aliyun-ice", "job-7", rpc=rpc)
    assert state("aliyun-ice", await http.send(request)) == "Executing"

    replayed = await http.send(request)

    assert (replayed.status_code, error_code("aliyun-ice", replayed)) == (400, "SignatureNonceUsed")
    assert fake.rejected == {"aliyun-ice": 1}


async def test_huawei_refuses_another_projects_url(fake: FakeVendors, http: httpx.AsyncClient) -> None:
    elsewhere = dataclasses.replace(CREDENTIALS, huawei_project_id="another-project")
    answer = await http.send(signed(fake, "huawei-metastudio", "job-8", credentials=elsewhere))
    assert (answer.status_code, error_code("huawei-metastudio", answer)) == (401, "APIGW.0301")


async def test_tencent_checks_whatever_headers_the_client_signs(
    fake: FakeVendors, http: httpx.AsyncClient
) -> None:
    # CosS3Auth never signs Date: the fake checks such a request with its own COS signer.
    fake.add_job("tencent-ci", "job-15", [(0, "Submitted")])
    host = fake.endpoint.removeprefix("http://")
    headers = {"Host": host, "Date": "Thu, 16 May 2019 06:55:53 GMT"}
    now = int(time.time())
    answers = []
    for secret in (CREDENTIALS.tencent_secret_key, "wrong"):
        signature = cos_sign(
            secret_id=CREDENTIALS.tencent_secret_id,
            secret_key=secret,
            method="GET",
            path="/asr_jobs/job-15",
            query=None,
            headers=headers,
            start=now,
            end=now + 60,
        )
        request = httpx.Request(
            "GET",
            f"{fake.endpoint}/asr_jobs/job-15",
            headers={**headers, "Authorization": signature.authorization},
        )
        answers.append(await http.send(request))

    assert state("tencent-ci", answers[0]) == "Submitted"
    assert (answers[1].status_code, error_code("tencent-ci", answers[1])) == (403, "SignatureDoesNotMatch")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_throttling_answers_as_the_vendor_then_lets_requests_through(
    fake: FakeVendors, http: httpx.AsyncClient, provider: Provider
) -> None:
    fake.add_job(provider, "job-9", [(0, STATES[provider][0])])
    fake.throttle(provider, count=2, retry_after_s=1.5)
    fake.throttle(provider, count=1)

    answers = [await http.send(signed(fake, provider, "job-9")) for _ in range(4)]

    for answer in answers[:3]:
        assert answer.status_code == THROTTLE_STATUS[provider]
        assert error_code(provider, answer) == THROTTLE_CODE[provider]
    hint = "x-acs-retry-after" if provider in ("tingwu", "aliyun-ice") else "retry-after"
    waits = [answer.headers.get(hint) for answer in answers[:3]]
    assert waits == (["1500", "1500", None] if hint == "x-acs-retry-after" else ["2", "2", None])
    assert state(provider, answers[3]) == STATES[provider][0]
    assert [r.verdict for r in fake.records] == ["throttled"] * 3 + ["ok"]
    assert not fake.rejected


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_failures_come_in_the_order_set(
    fake: FakeVendors, http: httpx.AsyncClient, provider: Provider
) -> None:
    fake.add_job(provider, "job-10", [(0, STATES[provider][1])])
    fake.fail(provider, "5xx")
    fake.fail(provider, "garbage")
    fake.fail(provider, "not-found")

    server_error, garbage, missing, fine = [
        await http.send(signed(fake, provider, "job-10")) for _ in range(4)
    ]

    assert server_error.status_code == 500
    assert error_code(provider, server_error) == SERVER_ERROR_CODE[provider]
    assert (garbage.status_code, garbage.headers["content-type"]) == (200, "text/html")
    assert is_not_found(provider, missing)
    assert state(provider, fine) == STATES[provider][1]
    assert [r.verdict for r in fake.records] == ["error", "garbage", "not-found", "ok"]


async def test_a_fault_without_a_count_lasts_until_cleared(
    fake: FakeVendors, http: httpx.AsyncClient
) -> None:
    fake.add_job("tencent-ci", "job-11", [(0, "Running")])
    fake.fail("tencent-ci", "5xx", count=None)

    statuses = [(await http.send(signed(fake, "tencent-ci", "job-11"))).status_code for _ in range(3)]
    fake.clear("tencent-ci")

    assert statuses == [500, 500, 500]
    assert state("tencent-ci", await http.send(signed(fake, "tencent-ci", "job-11"))) == "Running"


async def test_a_timeout_answers_late(fake: FakeVendors, http: httpx.AsyncClient) -> None:
    fake.add_job("huawei-metastudio", "job-12", [(0, "WAITING")])
    fake.fail("huawei-metastudio", "timeout", delay_s=1.0)

    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.2)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.send(signed(fake, "huawei-metastudio", "job-12"))
    answer = await http.send(signed(fake, "huawei-metastudio", "job-12"))

    assert state("huawei-metastudio", answer) == "WAITING"
    assert [r.verdict for r in fake.records] == ["timeout", "ok"]


async def test_leaving_does_not_wait_for_an_answer_held_back() -> None:
    started = time.monotonic()
    async with (
        FakeVendors(CREDENTIALS) as fake,
        httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.2)) as impatient,
    ):
        fake.add_job("tingwu", "job-13", [(0, "ONGOING")])
        fake.fail("tingwu", "timeout", delay_s=60)
        with pytest.raises(httpx.ReadTimeout):
            await impatient.send(signed(fake, "tingwu", "job-13"))
    assert time.monotonic() - started < 5


async def test_a_rate_limit_throttles_what_exceeds_it(
    fake: FakeVendors, http: httpx.AsyncClient, clock: Clock
) -> None:
    fake.add_job("tencent-ci", "job-14", [(0, "Running")])
    fake.limit("tencent-ci", per_second=2)

    first = [(await http.send(signed(fake, "tencent-ci", "job-14"))).status_code for _ in range(3)]
    clock.now += 1.0
    later = await http.send(signed(fake, "tencent-ci", "job-14"))

    assert first == [200, 200, 503]
    assert later.status_code == 200
    assert fake.max_rate("tencent-ci") == 3.0
    assert fake.requests_per_second("tencent-ci") == 1.0
    assert fake.requests_per_second("tencent-ci", window_s=2.0) == 2.0
    fake.limit("tencent-ci", None)
    assert [(await http.send(signed(fake, "tencent-ci", "job-14"))).status_code for _ in range(3)] == [
        200
    ] * 3


async def test_polls_are_counted_per_job_and_stray_paths_listed(
    fake: FakeVendors, http: httpx.AsyncClient, clock: Clock
) -> None:
    fake.add_job("tingwu", "a", [(0, "ONGOING")])
    for _ in range(3):
        await http.send(signed(fake, "tingwu", "a"))
        await http.send(signed(fake, "tingwu", "b"))
        clock.now += 0.5
    stray = await http.get(f"{fake.endpoint}/openapi/tingwu/v1/tasks/a")

    assert fake.polls("tingwu", "a") == [1000.0, 1000.5, 1001.0]
    assert len(fake.polls("tingwu", "b")) == 3
    assert fake.polls("aliyun-ice", "a") == []
    assert stray.status_code == 404
    assert fake.unroutable == ["GET /openapi/tingwu/v1/tasks/a"]
