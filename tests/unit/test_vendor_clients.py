"""Vendor status clients on httpx.MockTransport: requests, signatures (ours and SDKs'), verdicts, limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from pydantic import SecretStr

from consumer.settings import VendorSettings
from consumer.vendors import _http
from consumer.vendors._client import Answer, StatusClient, Verdict
from consumer.vendors._http import MAX_ANSWER_BYTES, USER_AGENT, BaseStatusClient, retry_after_s
from consumer.vendors.aliyun import signer as aliyun
from consumer.vendors.clients import status_clients, unpolled
from consumer.vendors.huawei_metastudio import signer as huawei
from consumer.vendors.tencent_ci import signer as cos
from consumer.vendors.tencent_ci.client import TencentCiStatusClient, listing_next_token
from schemas.job import PROVIDERS, Provider
from tests.conftest import fixture_bytes

SECRET = "s3cr3t-SECRET-s3cr3t"
TOKEN = "sts-T0KEN-s3cr3t"
JOB = "e8adc0b3bc4b42d898fcadb0a1710635"
# Encoded in the path, signed decoded: space, plus, star, tilde and a non-ASCII letter.
ODD_JOB = "job a+b*~é"
PROJECT = "77b6a44cba5143ab91d13ab9a8ff44fd"
BUCKET, REGION = "examplebucket-1250000000", "ap-beijing"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def settings(**changes: Any) -> VendorSettings:
    values: dict[str, Any] = {
        "alibaba_access_key_id": "LTAI5tExampleKeyId",
        "alibaba_access_key_secret": SECRET,
        "alibaba_security_token": None,
        "tencent_secret_id": "AKIDExampleSecretId",
        "tencent_secret_key": SECRET,
        "tencent_ci_bucket": BUCKET,
        "tencent_ci_region": REGION,
        "tencent_ci_endpoint": None,
        "huawei_access_key": "HWEXAMPLEACCESSKEY",
        "huawei_secret_key": SECRET,
        "huawei_project_id": PROJECT,
        "tingwu_endpoint": "https://tingwu.cn-beijing.aliyuncs.com",
        "ice_endpoint": "https://ice.cn-shanghai.aliyuncs.com",
        "ice_signature": "v3",
        "metastudio_endpoint": "https://metastudio.cn-north-4.myhuaweicloud.com",
        "vendor_timeout_s": 5,
    }
    return VendorSettings(_env_file=None, **{**values, **changes})


async def ask(
    provider: Provider, handler: Handler, task_id: str = JOB, **changes: Any
) -> tuple[Answer, list[httpx.Request]]:
    """One status call through a mock transport; every answer is checked for secrets on the way out."""
    seen: list[httpx.Request] = []

    async def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response = handler(request)
        return response if isinstance(response, httpx.Response) else await response

    clients, _ = status_clients(settings(**changes), transport=httpx.MockTransport(recording))
    try:
        answer = await clients[provider].status(task_id)
    finally:
        for client in clients.values():
            await client.aclose()
    for text in (answer.detail, repr(answer.retry_after_s)):
        assert SECRET not in text
        assert TOKEN not in text
    return answer, seen


def reply(status: int, body: bytes | str | dict[str, Any] = b"", **headers: str) -> Handler:
    if isinstance(body, dict):
        content, kind = json.dumps(body).encode(), "application/json;charset=utf-8"
    elif isinstance(body, str):
        content, kind = body.encode(), "application/xml"
    else:
        content, kind = body, "application/json"
    return lambda request: httpx.Response(status, content=content, headers={"content-type": kind, **headers})


def signed_headers(request: httpx.Request, names: str) -> dict[str, str]:
    return {name: request.headers[name] for name in names.split(";")}


def authorization_part(request: httpx.Request, key: str, separator: str = ",") -> str:
    value = request.headers["authorization"].split(" ", 1)[1]
    parts = dict(p.strip().split("=", 1) for p in value.split(separator))
    return parts[key]


# --- The requests on the wire and their signatures ----------------------------------------------------------


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_tingwu_sends_a_signed_get_task_info(token: str | None) -> None:
    answer, seen = await ask(
        "tingwu",
        reply(200, fixture_bytes("samples/tingwu_gettaskinfo_completed_1.json")),
        ODD_JOB,
        alibaba_security_token=token,
    )
    assert answer.verdict == "ok"
    (request,) = seen
    assert request.method == "GET"
    assert request.url.raw_path == b"/openapi/tingwu/v2/tasks/job%20a%2Bb%2A~%C3%A9"
    assert request.url.host == "tingwu.cn-beijing.aliyuncs.com"
    assert request.headers["host"] == "tingwu.cn-beijing.aliyuncs.com"
    assert request.headers["x-acs-action"] == "GetTaskInfo"
    assert request.headers["x-acs-version"] == "2023-09-30"
    assert request.headers["x-acs-content-sha256"] == EMPTY_SHA256
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers.get("x-acs-security-token") == token
    names = authorization_part(request, "SignedHeaders")
    expected = "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;"
    expected += "x-acs-signature-nonce;x-acs-version"
    assert names == (expected if token else expected.replace("x-acs-security-token;", ""))
    assert authorization_part(request, "Credential") == "LTAI5tExampleKeyId"
    # Recomputed from the request as received: the repo's signer on the decoded path...
    ours = aliyun.acs3_sign(
        access_key_id="LTAI5tExampleKeyId",
        access_key_secret=SECRET,
        method="GET",
        path=unquote(request.url.path),
        query=None,
        headers=signed_headers(request, names),
    )
    assert request.headers["authorization"] == ours.authorization
    # ...and Alibaba's SDK on the path as sent.
    util = pytest.importorskip("alibabacloud_openapi_util.client")
    tea = pytest.importorskip("Tea.request").TeaRequest()
    tea.method, tea.pathname, tea.query = "GET", request.url.raw_path.decode(), {}
    tea.headers = signed_headers(request, names)
    theirs = util.Client.get_authorization(
        tea, "ACS3-HMAC-SHA256", EMPTY_SHA256, "LTAI5tExampleKeyId", SECRET
    )
    assert request.headers["authorization"] == theirs


async def test_ice_v3_sends_a_signed_rpc_get() -> None:
    body = fixture_bytes("samples/ice_getsmarthandlejob_finished_1.json")
    answer, seen = await ask("aliyun-ice", reply(200, body), ODD_JOB, alibaba_security_token=TOKEN)
    assert answer.verdict == "ok"
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == "/"
    assert request.url.raw_path == b"/?JobId=job%20a%2Bb%2A~%C3%A9"
    assert list(request.url.params.multi_items()) == [("JobId", ODD_JOB)]
    assert request.headers["x-acs-action"] == "GetSmartHandleJob"
    assert request.headers["x-acs-version"] == "2020-11-09"
    assert request.headers["x-acs-security-token"] == TOKEN
    names = authorization_part(request, "SignedHeaders")
    ours = aliyun.acs3_sign(
        access_key_id="LTAI5tExampleKeyId",
        access_key_secret=SECRET,
        method="GET",
        path="/",
        query=list(request.url.params.multi_items()),
        headers=signed_headers(request, names),
    )
    assert request.headers["authorization"] == ours.authorization
    util = pytest.importorskip("alibabacloud_openapi_util.client")
    tea = pytest.importorskip("Tea.request").TeaRequest()
    tea.method, tea.pathname, tea.query = "GET", "/", dict(request.url.params)
    tea.headers = signed_headers(request, names)
    theirs = util.Client.get_authorization(
        tea, "ACS3-HMAC-SHA256", EMPTY_SHA256, "LTAI5tExampleKeyId", SECRET
    )
    assert request.headers["authorization"] == theirs


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_ice_v2_sends_the_rpc_query_signature(token: str | None) -> None:
    body = fixture_bytes("samples/ice_getsmarthandlejob_finished_1.json")
    answer, seen = await ask(
        "aliyun-ice", reply(200, body), ODD_JOB, ice_signature="v2", alibaba_security_token=token
    )
    assert answer.verdict == "ok"
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == "/"
    params = dict(request.url.params)
    assert len(params) == len(list(request.url.params.multi_items()))
    common = {
        "Action": "GetSmartHandleJob",
        "Version": "2020-11-09",
        "Format": "JSON",
        "AccessKeyId": "LTAI5tExampleKeyId",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "JobId": ODD_JOB,
    }
    assert common.items() <= params.items()
    assert params.get("SecurityToken") == token
    assert len(params["SignatureNonce"]) == 32
    assert params["Timestamp"].endswith("Z")
    assert "authorization" not in request.headers
    unsigned = {k: v for k, v in params.items() if k != "Signature"}
    ours = aliyun.rpc_sign(access_key_secret=SECRET, method="GET", params=unsigned)
    assert params["Signature"] == ours.signature
    util = pytest.importorskip("alibabacloud_openapi_util.client")
    assert params["Signature"] == util.Client.get_rpcsignature(dict(unsigned), "GET", SECRET)


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        (None, f"{BUCKET}.ci.{REGION}.myqcloud.com"),
        ("http://127.0.0.1:9000", "127.0.0.1:9000"),
    ],
)
async def test_tencent_sends_a_cos_signed_describe_speech_job(
    endpoint: str | None, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = fixture_bytes("samples/tencent_ci_speechrecognition_describe_success_1.xml")
    answer, seen = await ask("tencent-ci", reply(200, body), ODD_JOB, tencent_ci_endpoint=endpoint)
    assert answer.verdict == "ok"
    (request,) = seen
    assert request.method == "GET"
    assert request.url.raw_path == b"/asr_jobs/job%20a%2Bb%2A~%C3%A9"
    assert request.headers["host"] == host
    parts = dict(p.split("=", 1) for p in request.headers["authorization"].split("&"))
    assert parts["q-sign-algorithm"] == "sha1"
    assert parts["q-ak"] == "AKIDExampleSecretId"
    assert parts["q-header-list"] == "host"
    assert parts["q-url-param-list"] == ""
    assert_cos_signed(request, monkeypatch)


def assert_cos_signed(request: httpx.Request, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request's COS signature, recomputed with the project's signer and with the official SDK's."""
    parts = dict(p.split("=", 1) for p in request.headers["authorization"].split("&"))
    start, end = map(int, parts["q-key-time"].split(";"))
    path, params = unquote(request.url.path), dict(request.url.params)
    ours = cos.cos_sign(
        secret_id="AKIDExampleSecretId",
        secret_key=SECRET,
        method="GET",
        path=path,
        query=list(params.items()) or None,
        headers={"host": request.headers["host"]},
        start=start,
        end=end,
    )
    assert request.headers["authorization"] == ours.authorization
    cos_auth = pytest.importorskip("qcloud_cos.cos_auth")
    cos_client = pytest.importorskip("qcloud_cos.cos_client")
    # The SDK signs from its now - 60: pin its clock to our window.
    monkeypatch.setattr(cos_auth, "time", SimpleNamespace(time=lambda: start + 60))
    config = cos_client.CosConfig(Region=REGION, SecretId="AKIDExampleSecretId", SecretKey=SECRET)
    sdk_request = SimpleNamespace(
        method="GET", url=str(request.url), headers={"Host": request.headers["host"]}
    )
    auth = cos_auth.CosS3Auth(config, key=path, params=params, expire=end - start - 60)
    assert request.headers["authorization"] == auth(sdk_request).headers["Authorization"]


async def test_metastudio_sends_a_signed_show_async_tts_job() -> None:
    body = fixture_bytes("samples/huawei_metastudio_showasyncttsjob_succeed_1.json")
    answer, seen = await ask("huawei-metastudio", reply(200, body), ODD_JOB)
    assert answer.verdict == "ok"
    (request,) = seen
    assert request.method == "GET"
    assert request.url.raw_path == f"/v1/{PROJECT}/ttsc/async-jobs/job%20a%2Bb%2A~%C3%A9".encode()
    assert request.headers["host"] == "metastudio.cn-north-4.myhuaweicloud.com"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-project-id"] == PROJECT
    assert len(request.headers["x-sdk-date"]) == len("20191115T033655Z")
    authorization = request.headers["authorization"]
    assert authorization.startswith("SDK-HMAC-SHA256 Access=HWEXAMPLEACCESSKEY, ")
    names = authorization_part(request, "SignedHeaders", ", ")
    assert names == "content-type;host;x-project-id;x-sdk-date"
    ours = huawei.sdk_sign(
        access_key="HWEXAMPLEACCESSKEY",
        secret_key=SECRET,
        method="GET",
        path=unquote(request.url.path),
        query=None,
        headers=signed_headers(request, names),
    )
    assert authorization == ours.authorization
    signer = pytest.importorskip("huaweicloudsdkcore.signer.signer")
    sdk_request = pytest.importorskip("huaweicloudsdkcore.sdk_request").SdkRequest(
        method="GET",
        schema="https",
        host=request.url.host,
        resource_path=request.url.raw_path.decode(),
        query_params=[],
        header_params=signed_headers(request, names),
        body=b"",
    )
    sdk = signer.Signer(SimpleNamespace(ak="HWEXAMPLEACCESSKEY", sk=SECRET))
    assert authorization == sdk.sign(sdk_request).header_params["Authorization"]


# --- Verdicts -----------------------------------------------------------------------------------------------


def _alibaba(code: str, message: str = "m") -> dict[str, Any]:
    return {"RequestId": "r", "HostId": "h", "Code": code, "Message": message, "Recommend": "u"}


def _cos(code: str) -> str:
    return f"<Error><Code>{code}</Code><Message>m</Message><RequestId>r</RequestId></Error>"


def _huawei(code: str) -> dict[str, Any]:
    return {"error_code": code, "error_msg": "m", "request_id": "r"}


ALIBABA_ERRORS: list[tuple[int, dict[str, Any] | bytes, dict[str, str], Verdict, str, float | None]] = [
    (404, _alibaba("InvalidAccessKeyId.NotFound"), {}, "auth", "InvalidAccessKeyId.NotFound", None),
    (400, _alibaba("SignatureDoesNotMatch"), {}, "auth", "SignatureDoesNotMatch", None),
    (400, _alibaba("IncompleteSignature"), {}, "auth", "IncompleteSignature", None),
    (400, _alibaba("InvalidTimeStamp.Expired"), {}, "auth", "InvalidTimeStamp.Expired", None),
    (403, _alibaba("Forbidden.RAM"), {}, "auth", "Forbidden.RAM", None),
    (403, b"", {}, "auth", "HTTP 403", None),
    (400, _alibaba("Throttling.User"), {"x-acs-retry-after": "1500"}, "throttled", "Throttling.User", 1.5),
    (503, _alibaba("Throttling"), {"Retry-After": "7"}, "throttled", "Throttling", 7.0),
    (429, b"", {}, "throttled", "HTTP 429", None),
    # The SDK's rule: any error answer with a positive x-acs-retry-after is throttling.
    (400, _alibaba("Throttling.Api"), {"x-acs-retry-after": "0"}, "throttled", "Throttling.Api", None),
    (
        503,
        _alibaba("ServiceUnavailable"),
        {"x-acs-retry-after": "200"},
        "throttled",
        "ServiceUnavailable",
        0.2,
    ),
    (404, _alibaba("InvalidAction.NotFound"), {}, "error", "InvalidAction.NotFound", None),
    (400, _alibaba("SignatureNonceUsed"), {}, "error", "SignatureNonceUsed", None),
    (400, _alibaba("MissingParameter"), {}, "error", "MissingParameter", None),
    (500, _alibaba("InternalError"), {}, "error", "InternalError", None),
    (502, b"<html>bad gateway</html>", {}, "error", "HTTP 502", None),
    (404, b"", {}, "not-found", "HTTP 404", None),
]


@pytest.mark.parametrize("provider", ["tingwu", "aliyun-ice"])
@pytest.mark.parametrize(("status", "body", "headers", "verdict", "detail", "retry"), ALIBABA_ERRORS)
async def test_alibaba_error_verdicts(
    provider: Provider,
    status: int,
    body: dict[str, Any] | bytes,
    headers: dict[str, str],
    verdict: Verdict,
    detail: str,
    retry: float | None,
) -> None:
    answer, _ = await ask(provider, reply(status, body, **headers))
    assert (answer.verdict, answer.detail, answer.retry_after_s) == (verdict, detail, retry)
    assert answer.http_status == status


@pytest.mark.parametrize(
    ("provider", "status", "body", "detail"),
    [
        ("tingwu", 400, _alibaba("TaskNotExist"), "TaskNotExist"),
        ("tingwu", 200, _alibaba("TSC.TaskNotFound"), "TSC.TaskNotFound"),
        ("aliyun-ice", 404, _alibaba("JobNotFound", "No such job."), "JobNotFound"),
        ("aliyun-ice", 400, _alibaba("InvalidParameter.JobNotExist"), "InvalidParameter.JobNotExist"),
        ("tencent-ci", 200, f"<Response><NonExistJobIds>{JOB}</NonExistJobIds></Response>", "NonExistJobIds"),
        ("tencent-ci", 404, _cos("NoSuchJob"), "NoSuchJob"),
        ("huawei-metastudio", 404, _huawei("MSS.000000003"), "MSS.000000003"),
        ("huawei-metastudio", 404, b"", "HTTP 404"),
    ],
)
async def test_not_found(provider: Provider, status: int, body: Any, detail: str) -> None:
    answer, _ = await ask(provider, reply(status, body))
    assert (answer.verdict, answer.detail, answer.http_status) == ("not-found", detail, status)


@pytest.mark.parametrize(
    ("provider", "status", "body", "headers", "verdict", "detail", "retry"),
    [
        ("tencent-ci", 503, _cos("SlowDown"), {"Retry-After": "3"}, "throttled", "SlowDown", 3.0),
        ("tencent-ci", 503, _cos("RequestLimitExceeded"), {}, "throttled", "RequestLimitExceeded", None),
        ("tencent-ci", 429, b"", {}, "throttled", "HTTP 429", None),
        ("tencent-ci", 403, _cos("AccessDenied"), {}, "auth", "AccessDenied", None),
        ("tencent-ci", 403, _cos("SignatureDoesNotMatch"), {}, "auth", "SignatureDoesNotMatch", None),
        ("tencent-ci", 403, _cos("InvalidAccessKeyId"), {}, "auth", "InvalidAccessKeyId", None),
        ("tencent-ci", 400, _cos("ExpiredToken"), {}, "auth", "ExpiredToken", None),
        ("tencent-ci", 404, _cos("NoSuchBucket"), {}, "error", "NoSuchBucket", None),
        ("tencent-ci", 500, _cos("InternalError"), {}, "error", "InternalError", None),
        ("tencent-ci", 400, _cos("InvalidArgument"), {}, "error", "InvalidArgument", None),
        (
            "huawei-metastudio",
            429,
            _huawei("APIGW.0308"),
            {"Retry-After": "2"},
            "throttled",
            "APIGW.0308",
            2.0,
        ),
        ("huawei-metastudio", 401, _huawei("APIGW.0301"), {}, "auth", "APIGW.0301", None),
        ("huawei-metastudio", 403, _huawei("APIGW.0306"), {}, "auth", "APIGW.0306", None),
        ("huawei-metastudio", 400, _huawei("MSS.000000004"), {}, "auth", "MSS.000000004", None),
        ("huawei-metastudio", 404, _huawei("APIGW.0101"), {}, "error", "APIGW.0101", None),
        ("huawei-metastudio", 500, _huawei("MSS.000000002"), {}, "error", "MSS.000000002", None),
        ("huawei-metastudio", 400, _huawei("MSS.000000003"), {}, "error", "MSS.000000003", None),
        ("huawei-metastudio", 503, b"upstream down", {}, "error", "HTTP 503", None),
    ],
)
async def test_tencent_and_huawei_error_verdicts(
    provider: Provider,
    status: int,
    body: Any,
    headers: dict[str, str],
    verdict: Verdict,
    detail: str,
    retry: float | None,
) -> None:
    answer, _ = await ask(provider, reply(status, body, **headers))
    assert (answer.verdict, answer.detail, answer.retry_after_s) == (verdict, detail, retry)


OK_BODIES: list[tuple[Provider, str]] = [
    ("tingwu", "samples/tingwu_gettaskinfo_completed_1.json"),
    ("tingwu", "seeds/tingwu_poll_failed.json"),
    ("tingwu", "seeds/tingwu_poll_ongoing.json"),
    ("aliyun-ice", "samples/ice_getsmarthandlejob_asr_finished_2.json"),
    ("aliyun-ice", "constructed/aliyun_ice_smartjob_failed.json"),
    ("aliyun-ice", "seeds/aliyun_ice_seed_success_response.json"),
    ("tencent-ci", "samples/tencent_ci_speechrecognition_describe_success_1.xml"),
    ("tencent-ci", "seeds/tencent_ci_describe_speech_jobs_response.xml"),
    ("huawei-metastudio", "samples/huawei_metastudio_showasyncttsjob_succeed_1.json"),
    # A 200 whose `code` says the job failed is still the job's answer: the parser reads the failure.
    ("huawei-metastudio", "constructed/huawei_metastudio_poll_failed_code.json"),
]


@pytest.mark.parametrize(("provider", "name"), OK_BODIES)
async def test_ok_returns_the_body_untouched(provider: Provider, name: str) -> None:
    body = fixture_bytes(name)
    kind = "application/xml" if name.endswith(".xml") else "application/json;charset=UTF-8"
    answer, _ = await ask(
        provider, lambda _: httpx.Response(200, content=body, headers={"content-type": kind})
    )
    assert answer == Answer("ok", 200, body, kind, None, "")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Welcome to nginx</body></html>",
        b"not json at all",
        b"",
        b'{"RequestId": "r"}',
        b'{"Code": "0", "Message": "success"}',
        b"[1, 2, 3]",
        b"<Response><NextToken>1</NextToken></Response>",
        b'<!DOCTYPE x [<!ENTITY a "b">]><Response><JobsDetail>&a;</JobsDetail></Response>',
    ],
)
async def test_a_2xx_not_in_the_vendor_format_is_an_error(provider: Provider, body: bytes) -> None:
    answer, _ = await ask(provider, reply(200, body))
    assert (answer.verdict, answer.detail, answer.http_status, answer.body) == (
        "error",
        "unexpected answer",
        200,
        body,
    )


# --- Network failures, limits, retries ----------------------------------------------------------------------


def _raise(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("exc", "detail", "attempts"),
    [
        (httpx.ReadTimeout(f"read timed out for ?Signature={SECRET}"), "timeout", 1),
        (httpx.WriteTimeout("w"), "timeout", 1),
        (httpx.PoolTimeout("p"), "timeout", 1),
        (httpx.ConnectTimeout(f"connect to {TOKEN}"), "timeout", 2),
        (httpx.ConnectError(f"refused https://h/?Signature={SECRET}"), "ConnectError", 2),
        (httpx.ReadError(f"reset {SECRET}"), "ReadError", 1),
        (httpx.RemoteProtocolError("server disconnected"), "RemoteProtocolError", 1),
        (RuntimeError(f"something odd with {SECRET}"), "RuntimeError", 1),
    ],
)
async def test_failures_name_their_class_and_retry_only_before_sending(
    provider: Provider, exc: Exception, detail: str, attempts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "_RETRY_WAIT_S", (0.0, 0.01))
    answer, seen = await ask(provider, _raise(exc))
    assert (answer.verdict, answer.detail, answer.http_status, answer.body) == ("error", detail, 0, b"")
    assert len(seen) == attempts


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_connect_error_is_retried_once_with_a_fresh_signature(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "_RETRY_WAIT_S", (0.0, 0.01))
    ok = dict(OK_BODIES)[provider]
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, content=fixture_bytes(ok))

    answer, seen = await ask(provider, handler)
    assert answer.verdict == "ok"
    assert len(seen) == 2
    if provider in ("tingwu", "aliyun-ice") and "x-acs-signature-nonce" in seen[0].headers:
        assert seen[0].headers["x-acs-signature-nonce"] != seen[1].headers["x-acs-signature-nonce"]


async def test_the_retry_waits_a_moment() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer, seen = await ask("tingwu", _raise(httpx.ConnectError("refused")))
    assert answer.detail == "ConnectError"
    assert len(seen) == 2
    assert 0.2 <= loop.time() - started < 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_deadline_covers_the_whole_answer(provider: Provider) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    answer, seen = await ask(provider, slow, vendor_timeout_s=0.05)
    assert (answer.verdict, answer.detail, len(seen)) == ("error", "timeout", 1)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_body_over_4_mib_is_not_read(provider: Provider) -> None:
    declared = reply(200, b"{}", **{"content-length": str(MAX_ANSWER_BYTES + 1)})
    answer, _ = await ask(provider, declared)
    assert (answer.verdict, answer.detail, answer.http_status, answer.body) == (
        "error",
        "answer too large",
        200,
        b"",
    )

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(MAX_ANSWER_BYTES // 65_536 + 2):
            yield b"x" * 65_536

    answer, _ = await ask(provider, lambda _: httpx.Response(200, content=endless()))
    assert (answer.verdict, answer.detail, answer.body) == ("error", "answer too large", b"")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_body_of_exactly_4_mib_is_read(provider: Provider) -> None:
    body = b" " * (MAX_ANSWER_BYTES - 2) + b"{}"
    answer, _ = await ask(provider, reply(500, body))
    assert (answer.verdict, answer.detail, len(answer.body)) == ("error", "HTTP 500", MAX_ANSWER_BYTES)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("task_id", ["", "a/b", "..", ".", "a\nb", "x" * 257, "a\\b"])
async def test_an_id_that_would_bend_the_path_is_not_sent(provider: Provider, task_id: str) -> None:
    answer, seen = await ask(provider, reply(200, b"{}"), task_id)
    assert (answer.verdict, answer.detail, seen) == ("error", "invalid task id", [])


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_no_secret_reaches_a_detail_even_from_the_vendor(provider: Provider) -> None:
    # A vendor echoing the request (signature, token, key) in its code and message.
    hostile = {"Code": f"{SECRET} bad", "Message": SECRET, "error_code": f"x {TOKEN}", "error_msg": TOKEN}
    answer, _ = await ask(provider, reply(400, hostile), alibaba_security_token=TOKEN)
    assert (answer.verdict, answer.detail) == ("error", "HTTP 400")
    xml = f"<Error><Code>{SECRET} x</Code><Message>{SECRET}</Message></Error>"
    answer, _ = await ask(provider, reply(403, xml))
    assert (answer.verdict, answer.detail) == ("auth", "HTTP 403")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s(httpx.Headers({"Retry-After": "120"})) == 120.0
    assert (
        retry_after_s(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), now=1445412470) == 10.0
    )
    assert (
        retry_after_s(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), now=1445412490) == 0.0
    )
    for bad in ("", "soon", "-5", "nan", "inf"):
        assert retry_after_s(httpx.Headers({"Retry-After": bad})) is None
    assert retry_after_s(httpx.Headers()) is None


# --- status_clients -----------------------------------------------------------------------------------------


async def test_complete_credentials_give_every_client_sharing_one_http_client() -> None:
    clients, reasons = status_clients(settings(vendor_timeout_s=7.5))
    try:
        assert reasons == {}
        assert set(clients) == set(PROVIDERS)
        assert all(client.provider == provider for provider, client in clients.items())
        bases = [client for client in clients.values() if isinstance(client, BaseStatusClient)]
        assert len(bases) == 4
        (http,) = {id(base._client): base._client for base in bases}.values()
        assert http.timeout == httpx.Timeout(7.5)
        assert http.headers["user-agent"] == USER_AGENT
        assert not http.follow_redirects
        assert SECRET not in repr(clients)
        assert SECRET not in repr(vars(bases[0]))
        # One client closing leaves the others theirs; the last one closes the pool (twice is harmless).
        await clients["tingwu"].aclose()
        await clients["tingwu"].aclose()
        assert not http.is_closed
    finally:
        for client in clients.values():
            await client.aclose()
    assert http.is_closed


@pytest.mark.parametrize(
    ("changes", "reasons"),
    [
        (
            {"alibaba_access_key_secret": None},
            {
                "tingwu": "SPEECHJOBS_ALIBABA_ACCESS_KEY_SECRET is not set",
                "aliyun-ice": "SPEECHJOBS_ALIBABA_ACCESS_KEY_SECRET is not set",
            },
        ),
        (
            {"alibaba_access_key_id": ""},
            {
                "tingwu": "SPEECHJOBS_ALIBABA_ACCESS_KEY_ID is not set",
                "aliyun-ice": "SPEECHJOBS_ALIBABA_ACCESS_KEY_ID is not set",
            },
        ),
        ({"tencent_secret_key": None}, {"tencent-ci": "SPEECHJOBS_TENCENT_SECRET_KEY is not set"}),
        ({"tencent_ci_bucket": None}, {"tencent-ci": "SPEECHJOBS_TENCENT_CI_BUCKET is not set"}),
        ({"tencent_ci_region": ""}, {"tencent-ci": "SPEECHJOBS_TENCENT_CI_REGION is not set"}),
        # An explicit endpoint needs neither bucket nor region.
        ({"tencent_ci_bucket": None, "tencent_ci_endpoint": "http://127.0.0.1:9000"}, {}),
        ({"huawei_project_id": None}, {"huawei-metastudio": "SPEECHJOBS_HUAWEI_PROJECT_ID is not set"}),
        (
            {"huawei_project_id": "p/../other"},
            {"huawei-metastudio": "SPEECHJOBS_HUAWEI_PROJECT_ID is not a plain path segment"},
        ),
        (
            {"ice_endpoint": "ice.cn-shanghai.aliyuncs.com"},
            {"aliyun-ice": "SPEECHJOBS_ICE_ENDPOINT is not http(s)://host[:port]"},
        ),
        (
            {"tencent_ci_endpoint": "ftp://127.0.0.1"},
            {"tencent-ci": "SPEECHJOBS_TENCENT_CI_ENDPOINT is not http(s)://host[:port]"},
        ),
        (
            {"tencent_ci_bucket": "bad bucket"},
            {"tencent-ci": "SPEECHJOBS_TENCENT_CI_BUCKET is not a host name label"},
        ),
        (
            {"tencent_ci_region": "ap-beijing/x"},
            {"tencent-ci": "SPEECHJOBS_TENCENT_CI_REGION is not a host name label"},
        ),
        (
            {"tingwu_endpoint": "https://proxy.example.com/tingwu"},
            {"tingwu": "SPEECHJOBS_TINGWU_ENDPOINT is not http(s)://host[:port]"},
        ),
        (
            {"metastudio_endpoint": "https://"},
            {"huawei-metastudio": "SPEECHJOBS_METASTUDIO_ENDPOINT is not http(s)://host[:port]"},
        ),
        (
            {"huawei_access_key": SecretStr("")},
            {"huawei-metastudio": "SPEECHJOBS_HUAWEI_ACCESS_KEY is not set"},
        ),
    ],
)
async def test_incomplete_credentials_give_the_reason(
    changes: dict[str, Any], reasons: dict[str, str]
) -> None:
    clients, why = status_clients(settings(**changes))
    try:
        assert why == reasons
        assert unpolled(settings(**changes)) == reasons  # the same answer without building a client
        assert set(clients) == set(PROVIDERS) - set(reasons)
        assert all(SECRET not in text for text in why.values())
    finally:
        for client in clients.values():
            await client.aclose()


def test_no_credentials_give_no_client_and_no_http_client() -> None:
    empty = dict.fromkeys(
        (
            "alibaba_access_key_id",
            "alibaba_access_key_secret",
            "tencent_secret_id",
            "tencent_secret_key",
            "huawei_access_key",
            "huawei_secret_key",
            "huawei_project_id",
        )
    )
    clients, reasons = status_clients(settings(**empty))
    assert clients == {}
    assert set(reasons) == set(PROVIDERS)


async def test_an_empty_security_token_is_no_token() -> None:
    answer, seen = await ask(
        "tingwu", reply(200, fixture_bytes("seeds/tingwu_poll_ongoing.json")), alibaba_security_token=""
    )
    assert answer.verdict == "ok"
    assert "x-acs-security-token" not in seen[0].headers


async def test_clients_satisfy_the_protocol() -> None:
    def check(client: StatusClient) -> Provider:
        return client.provider

    clients, _ = status_clients(settings(), transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    assert [check(c) for c in clients.values()] == list(clients)
    for client in clients.values():
        await client.aclose()


async def test_tencent_lists_a_queue_with_its_parameters_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    body = fixture_bytes("samples/tencent_ci_speechrecognition_list_success_1.xml")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/xml"})

    clients, _ = status_clients(settings(), transport=httpx.MockTransport(handler))
    client = clients["tencent-ci"]
    assert isinstance(client, TencentCiStatusClient)
    since = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
    try:
        answer = await client.listing(queue_id="p5275b560c", since=since, next_token="21")
    finally:
        await client.aclose()
    assert answer.verdict == "ok"
    assert answer.body == body
    (request,) = seen
    assert request.url.path == "/asr_jobs"
    query = dict(request.url.params)
    assert query == {
        "queueId": "p5275b560c",
        "tag": "SpeechRecognition",
        "orderByTime": "Asc",
        "size": "100",
        "startCreationTime": "2026-11-30T10:00:00+0000",
        "nextToken": "21",
    }
    parts = dict(p.split("=", 1) for p in request.headers["authorization"].split("&"))
    assert parts["q-url-param-list"] == "nexttoken;orderbytime;queueid;size;startcreationtime;tag"
    assert_cos_signed(request, monkeypatch)
    assert listing_next_token(body) == "21"
    assert listing_next_token(b"<Response><NextToken></NextToken></Response>") is None
    assert listing_next_token(b"not xml") is None
