"""Tingwu, ICE, Tencent CI and MetaStudio job-status APIs faked on loopback: signed, scripted, recorded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import re
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, Literal
from unittest import mock
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

import uvicorn

# The vendors' own signers (the vendor-sdks extra), so that a request is checked by code the project's
# signers in consumer/vendors/ share nothing with.
from alibabacloud_openapi_util.client import Client as AcsUtil  # type: ignore[import-untyped]
from huaweicloudsdkcore.sdk_request import SdkRequest  # type: ignore[import-untyped]
from huaweicloudsdkcore.signer.signer import Signer as HuaweiSigner  # type: ignore[import-untyped]
from qcloud_cos import cos_auth  # type: ignore[import-untyped]
from qcloud_cos.cos_client import CosConfig  # type: ignore[import-untyped]
from Tea.request import TeaRequest  # type: ignore[import-untyped]

from schemas.job import PROVIDERS, Provider

__all__ = [
    "ALIBABA_BAD_SIGNATURE",
    "ALIBABA_EXPIRED",
    "ALIBABA_INCOMPLETE_SIGNATURE",
    "ALIBABA_NONCE_USED",
    "ALIBABA_SERVER_ERROR",
    "ALIBABA_THROTTLED",
    "ALIBABA_UNKNOWN_KEY",
    "HUAWEI_AUTH",
    "HUAWEI_NOT_FOUND",
    "HUAWEI_SERVER_ERROR",
    "HUAWEI_THROTTLED",
    "ICE_NOT_FOUND",
    "TENCENT_BAD_SIGNATURE",
    "TENCENT_EXPIRED",
    "TENCENT_NOT_FOUND_ELEMENT",
    "TENCENT_QUEUE_ID",
    "TENCENT_SERVER_ERROR",
    "TENCENT_THROTTLED",
    "TENCENT_UNKNOWN_KEY",
    "TINGWU_NOT_FOUND",
    "Credentials",
    "FakeVendors",
    "FaultKind",
    "Record",
    "VendorError",
    "Verdict",
]


@dataclass(frozen=True, slots=True)
class VendorError:
    """An error answer: HTTP status, the vendor's code and message (JSON or XML as the vendor writes it)."""

    status: int
    code: str
    message: str


# Alibaba Cloud's gateway, shared by Tingwu and ICE: body {"RequestId","HostId","Code","Message","Recommend"}.
# Statuses and texts from Alibaba's common error codes; x-acs-retry-after is milliseconds (darabonba-openapi).
ALIBABA_BAD_SIGNATURE = VendorError(
    400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation."
)
ALIBABA_UNKNOWN_KEY = VendorError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
ALIBABA_INCOMPLETE_SIGNATURE = VendorError(
    400, "IncompleteSignature", "The request signature does not conform to Aliyun standards."
)
ALIBABA_EXPIRED = VendorError(
    400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
)
ALIBABA_NONCE_USED = VendorError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
ALIBABA_THROTTLED = VendorError(400, "Throttling.User", "Request was denied due to user flow control.")
ALIBABA_SERVER_ERROR = VendorError(
    500, "InternalError", "The request processing has failed due to some unknown error."
)
# Tingwu documents no error codes: this one is our choice. ICE documents JobNotFound/404 for its other jobs.
TINGWU_NOT_FOUND = VendorError(400, "TaskNotExist", "The specified task does not exist.")
ICE_NOT_FOUND = VendorError(404, "JobNotFound", "No such job.")
_ALIBABA_BAD_ACTION = VendorError(
    404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."
)
_ALIBABA_MISSING = VendorError(400, "MissingParameter", "A parameter that is mandatory is not supplied.")

# Tencent CI (COS's error body): <Error><Code/><Message/><RequestId/><TraceId/></Error>, application/xml.
TENCENT_BAD_SIGNATURE = VendorError(
    403,
    "SignatureDoesNotMatch",
    "The request signature we calculated does not match the signature you provided.",
)
TENCENT_UNKNOWN_KEY = VendorError(
    403, "InvalidAccessKeyId", "The access key Id you provided does not exist in our records."
)
TENCENT_EXPIRED = VendorError(403, "AccessDenied", "Request has expired")
TENCENT_THROTTLED = VendorError(503, "SlowDown", "Please reduce your request rate.")
TENCENT_SERVER_ERROR = VendorError(
    500, "InternalError", "We encountered an internal error. Please try again."
)
# DescribeSpeechJob answers an unknown id with 200 <Response><NonExistJobIds>id</NonExistJobIds></Response>.
TENCENT_NOT_FOUND_ELEMENT = "NonExistJobIds"

# Huawei Cloud (API gateway and MetaStudio): body {"error_code","error_msg","request_id"}.
HUAWEI_AUTH = VendorError(401, "APIGW.0301", "Incorrect IAM authentication information")
HUAWEI_THROTTLED = VendorError(429, "APIGW.0308", "The throttling threshold has been reached")
HUAWEI_SERVER_ERROR = VendorError(500, "MSS.000000002", "internal error")
# MetaStudio documents no not-found code: 404 (its documented meaning) with its invalid-parameter code.
HUAWEI_NOT_FOUND = VendorError(404, "MSS.000000003", "invalid parameter: the job does not exist")

# The vendors accept a signing time this far from theirs (Alibaba and Huawei document 15 minutes).
_CLOCK_SKEW = timedelta(minutes=15)
_ALIBABA = frozenset({"tingwu", "aliyun-ice"})
_ACS3 = "ACS3-HMAC-SHA256"

# What the fake did with a request. ok, not-found, auth (refused: counted in `rejected`), throttled and
# error (5xx) are the vendor's; timeout (answered late), garbage (200, not the vendor's format) and
# bad-request (the fake could not read the request as the API's) are the fake's own.
Verdict = Literal["ok", "not-found", "auth", "throttled", "error", "timeout", "garbage", "bad-request"]
FaultKind = Literal["5xx", "timeout", "garbage", "not-found"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the fake accepts: one Alibaba AccessKey for Tingwu and ICE, Tencent's, and Huawei's."""

    alibaba_access_key_id: str
    alibaba_access_key_secret: str
    tencent_secret_id: str
    tencent_secret_key: str
    huawei_access_key: str
    huawei_secret_key: str
    huawei_project_id: str


@dataclass(frozen=True, slots=True)
class Record:
    """One request: which API and job, when it arrived (the fake's clock) and what it was answered."""

    provider: Provider
    task_id: str | None
    at: float
    verdict: Verdict
    status: int


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str  # percent-decoded
    raw_path: str  # as sent
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lowercase names
    body: bytes


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class _Fault:
    kind: Literal["throttle", "5xx", "timeout", "garbage", "not-found"]
    remaining: int | None  # None: until cleared
    retry_after_s: float | None = None
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Job:
    added_at: float
    created: datetime
    timeline: tuple[tuple[float, str], ...]

    def state(self, now: float) -> str | None:
        # The latest state whose time has come; None before the first (the job does not exist yet).
        due = [state for after, state in self.timeline if self.added_at + after <= now]
        return due[-1] if due else None


_Refusal = tuple[Verdict, VendorError]

_TINGWU_PATH = re.compile(r"/openapi/tingwu/v2/tasks/([^/]+)")
TENCENT_QUEUE_ID = "pfake"  # the one speech queue of the fake's bucket
_TENCENT_PATH = re.compile(r"/asr_jobs/([^/]+)")
_HUAWEI_PATH = re.compile(r"/v1/([^/]+)/ttsc/async-jobs/([^/]+)")
_ACS3_AUTH = re.compile(r"ACS3-HMAC-SHA256 Credential=([^,]*),SignedHeaders=([^,]*),Signature=(\w+)")
_SDK_AUTH = re.compile(r"SDK-HMAC-SHA256 Access=([^,]*), SignedHeaders=([^,]*), Signature=(\w+)")
# The headers qcloud_cos's CosS3Auth signs (cos_auth.filter_headers, with x-cos-*/x-ci-*); others need
# our own COS check.
_COS_SDK_HEADERS = frozenset(
    {"cache-control", "content-disposition", "content-encoding", "content-type", "content-md5"}
    | {"content-length", "expect", "expires", "host", "if-match", "if-modified-since", "if-none-match"}
    | {"if-unmodified-since", "origin", "range", "transfer-encoding", "pic-operations"}
)
_GARBAGE = b"<html><body><h1>502 Bad Gateway</h1><p>upstream sent nothing</p></body></html>"
_RESULTS = "https://results.invalid"  # never resolvable: nothing fetches a fake's result by mistake


class FakeVendors:
    """All four status APIs on one loopback endpoint; `async with FakeVendors(credentials) as fake`."""

    def __init__(self, credentials: Credentials, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.credentials = credentials
        self.records: list[Record] = []
        self.rejected: Counter[Provider] = Counter()
        self.unroutable: list[str] = []  # "METHOD /path?query" of requests no API matched
        self.listings = 0  # DescribeSpeechJobs pages served
        self._clock = clock
        self._jobs: dict[tuple[Provider, str], _Job] = {}
        self._faults: dict[Provider, deque[_Fault]] = {p: deque() for p in PROVIDERS}
        self._limits: dict[Provider, float] = {}
        self._admitted: dict[Provider, deque[float]] = {p: deque() for p in PROVIDERS}
        self._nonces: set[str] = set()
        self._closing = asyncio.Event()
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._port = 0

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if not self._port:
            raise RuntimeError("the fake is not serving: use `async with`")
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> FakeVendors:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # the kernel's free port: parallel test runs never collide
        config = uvicorn.Config(
            self,
            loop="none",
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]), name="fake-vendors")
        while not self._server.started:
            if self._serving.done():
                sock.close()
                await self._serving  # raises what stopped it
                raise RuntimeError("the fake stopped while starting")
            await asyncio.sleep(0.005)
        self._port = sock.getsockname()[1]
        self._socket = sock
        return self

    async def __aexit__(self, *_: object) -> None:
        self._closing.set()  # answers held back by a timeout fault go now, so shutdown does not wait
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
        if self._socket is not None:
            self._socket.close()
        self._port = 0

    # --- what a test scripts -----------------------------------------------------------------------------

    def add_job(self, provider: Provider, task_id: str, timeline: Sequence[tuple[float, str]]) -> None:
        """A job whose state is timeline's [(seconds after now, vendor state), ...], latest due first."""
        if not timeline:
            raise ValueError("a job needs at least one state")
        ordered = tuple(sorted(timeline, key=lambda entry: entry[0]))
        self._jobs[(provider, task_id)] = _Job(self._clock(), datetime.now(UTC), ordered)

    def throttle(self, provider: Provider, count: int | None = 1, retry_after_s: float | None = None) -> None:
        """Answer the next `count` requests (None: until cleared) with the vendor's throttling answer."""
        self._faults[provider].append(_Fault("throttle", _count(count), retry_after_s=retry_after_s))

    def fail(self, provider: Provider, kind: FaultKind, count: int | None = 1, delay_s: float = 30.0) -> None:
        """The next `count` requests (None: until cleared): 5xx, garbage, not-found, or late (timeout)."""
        self._faults[provider].append(_Fault(kind, _count(count), delay_s=delay_s))

    def limit(self, provider: Provider, per_second: float | None) -> None:
        """Throttle what exceeds `per_second` in any second, as the vendor's gateway does; None lifts it."""
        if per_second is None:
            self._limits.pop(provider, None)
        elif per_second <= 0:
            raise ValueError("per_second must be positive")
        else:
            self._limits[provider] = per_second

    def clear(self, provider: Provider | None = None) -> None:
        """Drop pending faults and the rate limit (of one provider, or all); jobs and records stay."""
        for each in PROVIDERS if provider is None else (provider,):
            self._faults[each].clear()
            self._limits.pop(each, None)

    # --- what a test reads -------------------------------------------------------------------------------

    def polls(self, provider: Provider, task_id: str) -> list[float]:
        """When each request about this job arrived (the fake's clock), whatever it was answered."""
        return [r.at for r in self.records if r.provider == provider and r.task_id == task_id]

    def requests_per_second(self, provider: Provider, window_s: float = 1.0) -> float:
        """Requests to this API over the last `window_s` seconds, per second."""
        since = self._clock() - window_s
        return sum(1 for r in self.records if r.provider == provider and r.at > since) / window_s

    def max_rate(self, provider: Provider, window_s: float = 1.0) -> float:
        """The busiest `window_s` seconds of this API so far, in requests per second."""
        times = sorted(r.at for r in self.records if r.provider == provider)
        busiest, first = 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= window_s:
                first += 1
            busiest = max(busiest, last - first + 1)
        return busiest / window_s

    # --- ASGI --------------------------------------------------------------------------------------------

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        raw_path = scope.get("raw_path") or scope["path"].encode()
        request = _Request(
            method=scope["method"],
            path=scope["path"],
            raw_path=raw_path.decode("latin-1"),
            query=parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True),
            headers=headers,
            body=body,
        )
        reply = await self._answer(request)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type.encode()),
                    *((k.encode(), v.encode()) for k, v in reply.headers),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    async def _answer(self, request: _Request) -> _Reply:
        routed = _route(request)
        if routed is None:
            query = "&".join(f"{k}={v}" for k, v in request.query)
            self.unroutable.append(f"{request.method} {request.raw_path}{'?' if query else ''}{query}")
            return _Reply(404, b"no such API in the fake", "text/plain")
        provider, task_id = routed
        at = self._clock()
        verdict, reply, delay_s = self._decide(provider, task_id, request, at)
        self.records.append(Record(provider, task_id, at, verdict, reply.status))
        if delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay_s)
        return reply

    def _listing(self, request: _Request, at: float) -> _Reply:
        """A DescribeSpeechJobs page: this fake's queue holds every Tencent job added; oldest first."""
        self.listings += 1
        query = dict(request.query)
        if query.get("queueId") != TENCENT_QUEUE_ID or query.get("tag") != "SpeechRecognition":
            return _Reply(400, b"<Error><Code>InvalidParameter</Code></Error>", "application/xml")
        since = datetime.strptime(query["startCreationTime"], "%Y-%m-%dT%H:%M:%S%z")
        jobs = sorted(
            (job.created, task_id, job, state)
            for (provider, task_id), job in self._jobs.items()
            if provider == "tencent-ci" and job.created >= since and (state := job.state(at)) is not None
        )
        start = int(query.get("nextToken") or 0)
        page = jobs[start : start + int(query.get("size", "10"))]
        for _, task_id, _, _ in page:
            self.records.append(Record("tencent-ci", task_id, at, "ok", 200))
        more = str(start + len(page)) if start + len(page) < len(jobs) else ""
        details = "".join(_tencent_detail(task_id, state, job) for _, task_id, job, state in page)
        body = f"<Response>{details}<NextToken>{more}</NextToken></Response>"
        return _Reply(200, b'<?xml version="1.0" encoding="utf-8"?>\n' + body.encode(), "application/xml")

    def _decide(
        self, provider: Provider, task_id: str | None, request: _Request, at: float
    ) -> tuple[Verdict, _Reply, float]:
        refusal = self._verify(provider, request)
        if refusal is not None:
            verdict, error = refusal
            if verdict == "auth":
                self.rejected[provider] += 1
            return verdict, _error(provider, error), 0.0
        if provider == "tencent-ci" and task_id is None:
            if self._over_limit(provider, at):
                return "throttled", _error(provider, _THROTTLED[provider]), 0.0
            return "ok", self._listing(request, at), 0.0
        if task_id is None:
            return "bad-request", _error(provider, _ALIBABA_MISSING), 0.0
        if self._over_limit(provider, at):
            return "throttled", _error(provider, _THROTTLED[provider]), 0.0
        fault = self._next_fault(provider)
        if fault is not None:
            if fault.kind == "throttle":
                return "throttled", _throttled(provider, fault.retry_after_s), 0.0
            if fault.kind == "5xx":
                return "error", _error(provider, _SERVER_ERROR[provider]), 0.0
            if fault.kind == "garbage":
                return "garbage", _Reply(200, _GARBAGE, "text/html"), 0.0
            if fault.kind == "not-found":
                return "not-found", _not_found(provider, task_id), 0.0
        job = self._jobs.get((provider, task_id))
        state = None if job is None else job.state(at)
        if job is None or state is None:
            reply, verdict = _not_found(provider, task_id), "not-found"
        else:
            reply, verdict = _job_answer(provider, task_id, state, job), "ok"
        if fault is not None and fault.kind == "timeout":
            return "timeout", reply, fault.delay_s
        return verdict, reply, 0.0

    def _over_limit(self, provider: Provider, at: float) -> bool:
        per_second = self._limits.get(provider)
        if per_second is None:
            return False
        admitted = self._admitted[provider]
        while admitted and at - admitted[0] >= 1.0:
            admitted.popleft()
        if len(admitted) >= per_second:
            return True
        admitted.append(at)  # only what gets through counts, as a token bucket's refused calls cost nothing
        return False

    def _next_fault(self, provider: Provider) -> _Fault | None:
        pending = self._faults[provider]
        if not pending:
            return None
        fault = pending[0]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining == 0:
                pending.popleft()
        return fault

    # --- signatures --------------------------------------------------------------------------------------

    def _verify(self, provider: Provider, request: _Request) -> _Refusal | None:
        if provider == "tingwu":
            return self._verify_acs3(request, "GetTaskInfo", "2023-09-30")
        if provider == "aliyun-ice":
            if request.headers.get("authorization", "").startswith(_ACS3):
                return self._verify_acs3(request, "GetSmartHandleJob", "2020-11-09")
            return self._verify_rpc(request, "GetSmartHandleJob", "2020-11-09")
        if provider == "tencent-ci":
            return self._verify_cos(request)
        return self._verify_sdk_hmac(request)

    def _verify_acs3(self, request: _Request, action: str, version: str) -> _Refusal | None:
        creds = self.credentials
        authorization = request.headers.get("authorization", "")
        match = _ACS3_AUTH.fullmatch(authorization)
        if match is None:
            return "auth", ALIBABA_INCOMPLETE_SIGNATURE
        key_id, signed_list, _ = match.groups()
        if key_id != creds.alibaba_access_key_id:
            return "auth", ALIBABA_UNKNOWN_KEY
        signed = signed_list.split(";")
        # V3 signs host and every x-acs-* header sent; the five below are mandatory.
        required = {"host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce"}
        required |= {"x-acs-content-sha256", *(h for h in request.headers if h.startswith("x-acs-"))}
        if not required <= set(signed) or any(name not in request.headers for name in signed):
            return "auth", ALIBABA_INCOMPLETE_SIGNATURE
        content_sha256 = request.headers["x-acs-content-sha256"]
        if content_sha256 != hashlib.sha256(request.body).hexdigest():
            return "auth", ALIBABA_BAD_SIGNATURE
        tea = TeaRequest()
        tea.method, tea.pathname = request.method, request.raw_path
        tea.query = dict(request.query)
        tea.headers = {name: request.headers[name] for name in signed}
        expected = AcsUtil.get_authorization(
            tea, _ACS3, content_sha256, key_id, creds.alibaba_access_key_secret
        )
        if not hmac.compare_digest(expected, authorization):
            return "auth", ALIBABA_BAD_SIGNATURE
        refusal = self._fresh(request.headers["x-acs-date"], request.headers["x-acs-signature-nonce"])
        if refusal is not None:
            return refusal
        if request.headers["x-acs-action"] != action or request.headers["x-acs-version"] != version:
            return "bad-request", _ALIBABA_BAD_ACTION
        return None

    def _verify_rpc(self, request: _Request, action: str, version: str) -> _Refusal | None:
        creds = self.credentials
        params = dict(request.query)
        signature = params.pop("Signature", None)
        common = ("AccessKeyId", "SignatureMethod", "SignatureVersion", "SignatureNonce", "Timestamp")
        if signature is None or any(name not in params for name in common):
            return "auth", ALIBABA_INCOMPLETE_SIGNATURE
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            return "auth", ALIBABA_INCOMPLETE_SIGNATURE
        if params["AccessKeyId"] != creds.alibaba_access_key_id:
            return "auth", ALIBABA_UNKNOWN_KEY
        expected = AcsUtil.get_rpcsignature(params, request.method, creds.alibaba_access_key_secret)
        if not hmac.compare_digest(expected, signature):
            return "auth", ALIBABA_BAD_SIGNATURE
        refusal = self._fresh(params["Timestamp"], params["SignatureNonce"])
        if refusal is not None:
            return refusal
        if params.get("Action") != action or params.get("Version") != version:
            return "bad-request", _ALIBABA_BAD_ACTION
        if params.get("Format") != "JSON":
            # RPC's default is XML, which this fake does not write: a client must ask for JSON.
            return "bad-request", VendorError(400, "InvalidParameter", "the fake answers Format=JSON only")
        return None

    def _fresh(self, signed_at: str, nonce: str) -> _Refusal | None:
        try:
            when = datetime.strptime(signed_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "auth", ALIBABA_EXPIRED
        if abs(datetime.now(UTC) - when) > _CLOCK_SKEW:
            return "auth", ALIBABA_EXPIRED
        if nonce in self._nonces:
            return "auth", ALIBABA_NONCE_USED
        self._nonces.add(nonce)
        return None

    def _verify_cos(self, request: _Request) -> _Refusal | None:
        creds = self.credentials
        fields = dict(parse_qsl(request.headers.get("authorization", ""), keep_blank_values=True))
        names = ("q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-header-list", "q-url-param-list")
        if (
            any(name not in fields for name in (*names, "q-signature"))
            or fields["q-sign-algorithm"] != "sha1"
        ):
            return "auth", TENCENT_BAD_SIGNATURE
        if fields["q-ak"] != creds.tencent_secret_id:
            return "auth", TENCENT_UNKNOWN_KEY
        try:
            start, end = (int(part) for part in fields["q-sign-time"].split(";"))
        except ValueError:
            return "auth", TENCENT_BAD_SIGNATURE
        signed_headers = [h for h in fields["q-header-list"].split(";") if h]
        signed_params = [p for p in fields["q-url-param-list"].split(";") if p]
        query = {_cos_encode(k).lower(): v for k, v in request.query}
        if any(h not in request.headers for h in signed_headers) or any(
            p not in query for p in signed_params
        ):
            return "auth", TENCENT_BAD_SIGNATURE
        headers = {h: request.headers[h] for h in signed_headers}
        params = {p: query[p] for p in signed_params}
        sdk_signs = all(h in _COS_SDK_HEADERS or h.startswith(("x-cos-", "x-ci-")) for h in headers)
        if fields["q-key-time"] == fields["q-sign-time"] and sdk_signs:
            expected = _cos_sdk_signature(creds, request, headers, params, start, end)
        else:
            expected = _cos_signature(creds.tencent_secret_key, request, headers, params, fields)
        if not hmac.compare_digest(expected, fields["q-signature"]):
            return "auth", TENCENT_BAD_SIGNATURE
        if not start <= time.time() <= end:
            return "auth", TENCENT_EXPIRED
        return None

    def _verify_sdk_hmac(self, request: _Request) -> _Refusal | None:
        creds = self.credentials
        authorization = request.headers.get("authorization", "")
        match = _SDK_AUTH.fullmatch(authorization)
        if match is None:
            return "auth", HUAWEI_AUTH
        access_key, signed_list, _ = match.groups()
        signed = signed_list.split(";")
        if access_key != creds.huawei_access_key or "x-sdk-date" not in signed:
            return "auth", HUAWEI_AUTH
        if any(name not in request.headers for name in signed):
            return "auth", HUAWEI_AUTH
        sdk_request = SdkRequest(
            method=request.method,
            schema="http",
            host=request.headers.get("host", ""),
            resource_path=request.raw_path,
            query_params=list(request.query),
            header_params={name: request.headers[name] for name in signed},
            body=request.body,
        )
        signer = HuaweiSigner(SimpleNamespace(ak=access_key, sk=creds.huawei_secret_key))
        expected = signer.sign(sdk_request).header_params["Authorization"]
        if not hmac.compare_digest(expected, authorization):
            return "auth", HUAWEI_AUTH
        try:
            when = datetime.strptime(request.headers["x-sdk-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "auth", HUAWEI_AUTH
        if abs(datetime.now(UTC) - when) > _CLOCK_SKEW:
            return "auth", HUAWEI_AUTH
        # The AK/SK belongs to one project: another project's URL or X-Project-Id is refused.
        routed = _HUAWEI_PATH.fullmatch(request.path)
        project = routed.group(1) if routed else ""
        if project != creds.huawei_project_id or request.headers.get("x-project-id", project) != project:
            return "auth", HUAWEI_AUTH
        return None


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test process owns SIGINT/SIGTERM; uvicorn's handlers would re-raise them after a run.
        yield


def _count(count: int | None) -> int | None:
    if count is not None and count < 1:
        raise ValueError("count must be at least 1 (or None: until cleared)")
    return count


def _route(request: _Request) -> tuple[Provider, str | None] | None:
    path = request.path
    if match := _TINGWU_PATH.fullmatch(path):
        return "tingwu", match.group(1)
    if match := _TENCENT_PATH.fullmatch(path):
        return "tencent-ci", match.group(1)
    if path == "/asr_jobs":  # DescribeSpeechJobs: the queue's jobs, a page at a time
        return "tencent-ci", None
    if match := _HUAWEI_PATH.fullmatch(path):
        return "huawei-metastudio", match.group(2)
    if path == "/":
        return "aliyun-ice", dict(request.query).get("JobId") or None
    return None


def _cos_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _cos_sdk_signature(
    creds: Credentials,
    request: _Request,
    headers: dict[str, str],
    params: dict[str, str],
    start: int,
    end: int,
) -> str:
    # CosS3Auth signs from now - 60 to now + expire: its clock is pinned to the window the request states.
    # Nothing awaits inside, so no other request can see the pinned clock.
    config = CosConfig(
        Region="ap-beijing", SecretId=creds.tencent_secret_id, SecretKey=creds.tencent_secret_key
    )
    auth = cos_auth.CosS3Auth(
        config, key=request.path, params=params, expire=end - start - 60, sign_host=False
    )
    signed = SimpleNamespace(
        method=request.method, url=f"http://fake{request.raw_path}", headers=dict(headers)
    )
    with mock.patch.object(cos_auth, "time", SimpleNamespace(time=lambda: start + 60)):
        authorization: str = auth(signed).headers["Authorization"]
    return authorization.rsplit("q-signature=", 1)[-1]


def _cos_signature(
    secret_key: str,
    request: _Request,
    headers: dict[str, str],
    params: dict[str, str],
    fields: dict[str, str],
) -> str:
    # From COS's "请求签名" document, for what CosS3Auth cannot sign (other headers, or two time windows).
    def canonical(pairs: dict[str, str]) -> str:
        return "&".join(f"{k}={_cos_encode(v)}" for k, v in sorted(pairs.items()))

    http_string = f"{request.method.lower()}\n{request.path}\n{canonical(params)}\n{canonical(headers)}\n"
    sha1 = hashlib.sha1(http_string.encode()).hexdigest()
    string_to_sign = f"sha1\n{fields['q-sign-time']}\n{sha1}\n"
    sign_key = hmac.new(secret_key.encode(), fields["q-key-time"].encode(), hashlib.sha1).hexdigest()
    return hmac.new(sign_key.encode(), string_to_sign.encode(), hashlib.sha1).hexdigest()


# --- answers, in each vendor's format -----------------------------------------------------------------------

_THROTTLED: dict[Provider, VendorError] = {
    "tingwu": ALIBABA_THROTTLED,
    "aliyun-ice": ALIBABA_THROTTLED,
    "tencent-ci": TENCENT_THROTTLED,
    "huawei-metastudio": HUAWEI_THROTTLED,
}
_SERVER_ERROR: dict[Provider, VendorError] = {
    "tingwu": ALIBABA_SERVER_ERROR,
    "aliyun-ice": ALIBABA_SERVER_ERROR,
    "tencent-ci": TENCENT_SERVER_ERROR,
    "huawei-metastudio": HUAWEI_SERVER_ERROR,
}
_HOSTS: dict[Provider, str] = {
    "tingwu": "tingwu.cn-beijing.aliyuncs.com",
    "aliyun-ice": "ice.cn-shanghai.aliyuncs.com",
}
_JSON = "application/json;charset=utf-8"
_XML = "application/xml"


def _request_id() -> str:
    return str(uuid.uuid4()).upper()


def _json(status: int, document: dict[str, Any], *headers: tuple[str, str]) -> _Reply:
    return _Reply(status, json.dumps(document, ensure_ascii=False).encode(), _JSON, headers)


def _error(provider: Provider, error: VendorError, *headers: tuple[str, str]) -> _Reply:
    request_id = _request_id()
    if provider in _ALIBABA:
        document = {
            "RequestId": request_id,
            "HostId": _HOSTS[provider],
            "Code": error.code,
            "Message": error.message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={error.code}",
        }
        return _json(error.status, document, ("x-acs-request-id", request_id), *headers)
    if provider == "tencent-ci":
        body = (
            "<?xml version='1.0' encoding='utf-8' ?>\n"
            f"<Error><Code>{error.code}</Code><Message>{escape(error.message)}</Message>"
            f"<RequestId>{request_id}</RequestId><TraceId>{uuid.uuid4().hex}</TraceId></Error>"
        )
        return _Reply(error.status, body.encode(), _XML, (("x-ci-request-id", request_id), *headers))
    document = {"error_code": error.code, "error_msg": error.message, "request_id": request_id}
    return _json(error.status, document, ("X-Request-Id", request_id), *headers)


def _throttled(provider: Provider, retry_after_s: float | None) -> _Reply:
    if retry_after_s is None:
        return _error(provider, _THROTTLED[provider])
    if provider in _ALIBABA:
        # Alibaba's SDKs read x-acs-retry-after as milliseconds.
        header = ("x-acs-retry-after", str(max(1, round(retry_after_s * 1000))))
    else:
        # Tencent and Huawei document no wait hint: the standard Retry-After, in whole seconds.
        header = ("Retry-After", str(max(1, math.ceil(retry_after_s))))
    return _error(provider, _THROTTLED[provider], header)


def _not_found(provider: Provider, task_id: str) -> _Reply:
    if provider == "tingwu":
        return _error(provider, TINGWU_NOT_FOUND)
    if provider == "aliyun-ice":
        return _error(provider, ICE_NOT_FOUND)
    if provider == "tencent-ci":
        element = TENCENT_NOT_FOUND_ELEMENT
        body = f"<?xml version='1.0' encoding='utf-8'?>\n<Response><{element}>{escape(task_id)}</{element}>"
        body += "</Response>"
        return _Reply(200, body.encode(), _XML, (("x-ci-request-id", _request_id()),))
    return _error(provider, HUAWEI_NOT_FOUND)


def _job_answer(provider: Provider, task_id: str, state: str, job: _Job) -> _Reply:
    request_id = _request_id()
    if provider == "tingwu":
        data: dict[str, Any] = {"TaskId": task_id, "TaskKey": f"key-{task_id}", "TaskStatus": state}
        if state == "COMPLETED":
            data["Result"] = {"Transcription": f"{_RESULTS}/tingwu/{task_id}/Transcription.json"}
        elif state == "FAILED":
            data |= {"ErrorCode": "TSC.AudioFileLink", "ErrorMessage": "Audio file link invalid."}
        document = {"Code": "0", "Data": data, "Message": "success", "RequestId": request_id}
        return _json(200, document, ("x-acs-request-id", request_id))
    if provider == "aliyun-ice":
        created = job.created.strftime("%Y-%m-%dT%H:%M:%SZ")
        ice: dict[str, Any] = {
            "RequestId": request_id,
            "JobId": task_id,
            "State": state,
            "UserData": "{}",
            "SmartJobInfo": {
                "JobType": "ASR",
                "Title": f"default_title_{created}",
                "CreateTime": created,
                "ModifiedTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }
        if state == "Finished":
            words = '[{"content":"fake","from":0.0,"to":1.0}]'
            ice |= {"Output": words, "JobResult": {"AiResult": words}}
        elif state == "Failed":
            ice |= {"ErrorCode": "InvalidParameter", "ErrorMessage": "The specified parameter is not valid."}
        return _json(200, ice, ("x-acs-request-id", request_id))
    if provider == "tencent-ci":
        return _Reply(200, _tencent_job(task_id, state, job), _XML, (("x-ci-request-id", request_id),))
    huawei: dict[str, Any] = {"state": state, "code": "0", "message": ""}
    if state == "SUCCEED":
        huawei["audio_file_url"] = f"{_RESULTS}/metastudio/{task_id}.wav"
    elif state == "FAILED":
        huawei |= {"code": "MSS.000000001", "message": "failed"}
    return _json(200, huawei, ("X-Request-Id", request_id))


def _tencent_job(job_id: str, state: str, job: _Job) -> bytes:
    detail = _tencent_detail(job_id, state, job)
    return f'<?xml version="1.0" encoding="utf-8"?>\n<Response>{detail}</Response>'.encode()


def _tencent_detail(job_id: str, state: str, job: _Job) -> str:
    beijing = timezone(timedelta(hours=8))
    created = job.created.astimezone(beijing).strftime("%Y-%m-%dT%H:%M:%S%z")
    ended = state not in ("Submitted", "Running", "Pause")
    end = datetime.now(beijing).strftime("%Y-%m-%dT%H:%M:%S%z") if ended else "-"
    code, message = ("InvalidInput", "input file not found") if state == "Failed" else ("Success", "")
    result = (
        "<SpeechRecognitionResult><AudioTime>1.0</AudioTime><Result>[0:0.000,0:1.000]  fake</Result>"
        "<ResultDetail/></SpeechRecognitionResult>"
        if state == "Success"
        else ""
    )
    return (
        "<JobsDetail>"
        f"<Code>{code}</Code><CreationTime>{created}</CreationTime><EndTime>{end}</EndTime>"
        f"<Input><Object>fake.mp3</Object></Input><JobId>{escape(job_id)}</JobId><Message>{message}</Message>"
        "<Operation><Output><Bucket>fake-1250000000</Bucket><Object>fake.txt</Object><Region>ap-beijing</Region>"
        "</Output><SpeechRecognition><EngineModelType>16k_zh</EngineModelType></SpeechRecognition>"
        f"{result}</Operation><QueueId>{TENCENT_QUEUE_ID}</QueueId><State>{escape(state)}</State>"
        "<Tag>SpeechRecognition</Tag></JobsDetail>"
    )
