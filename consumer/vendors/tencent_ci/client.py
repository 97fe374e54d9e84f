"""Tencent CI DescribeSpeechJob: a GET signed with the COS signature, its XML answer classified."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
from pydantic import SecretStr

from consumer.core.decode import parse_document
from consumer.core.errors import Rejection
from consumer.vendors._client import Answer
from consumer.vendors._http import (
    UNEXPECTED,
    BaseStatusClient,
    Reply,
    SharedHttp,
    by_status,
    encode_segment,
    host_of,
    retry_after_s,
)
from consumer.vendors._http import vendor_code as _code
from consumer.vendors.tencent_ci.signer import cos_sign
from schemas.job import Provider

__all__ = [
    "LISTING_PAGE",
    "PATH",
    "SIGNATURE_WINDOW_S",
    "TencentCiStatusClient",
    "default_endpoint",
    "listing_next_token",
]

PATH = "/asr_jobs/"
LISTING_PAGE = 100  # DescribeSpeechJobs' largest page
# Valid from a minute ago (a server clock behind ours) to ten minutes on, as cos-python-sdk-v5 starts at -60.
SIGNATURE_WINDOW_S = (60, 600)

# Error answers are COS's `<Error><Code>…</Code>…</Error>` (cloud.tencent.com/document/api/436/7730). CI does
# not document a code for an unknown job: DescribeSpeechJob answers 200 with <NonExistJobIds> instead
# (tencentcloud.com/document/api/1045/49547), and a 404 follows the generic rule.
_THROTTLED = frozenset({"SlowDown", "RequestLimitExceeded"})
_AUTH = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "RequestTimeTooSkewed", "ExpiredToken"}
)
# A wrong bucket in the settings is not the job's absence, though COS answers it with 404.
_MISCONFIGURED = frozenset({"NoSuchBucket"})


def listing_next_token(body: bytes) -> str | None:
    """The NextToken of a DescribeSpeechJobs page, None on the last one."""
    try:
        document, _ = parse_document(body, None, max_depth=64, max_members=1_000_000)
    except Rejection:  # the page was published as it is; the consumer says what is wrong with it
        return None
    response = document.get("Response") if isinstance(document, dict) else None
    token = response.get("NextToken") if isinstance(response, dict) else None
    return token.strip() or None if isinstance(token, str) else None


def default_endpoint(bucket: str, region: str) -> str:
    """CI's API host for a bucket: https://<bucket>-<appid>.ci.<region>.myqcloud.com."""
    return f"https://{bucket}.ci.{region}.myqcloud.com"


class TencentCiStatusClient(BaseStatusClient):
    """GET {endpoint}/asr_jobs/{JobId}, Authorization signing the Host actually sent."""

    provider: Provider = "tencent-ci"

    def __init__(
        self,
        http: SharedHttp,
        *,
        endpoint: str,
        secret_id: SecretStr,
        secret_key: SecretStr,
        timeout_s: float,
    ) -> None:
        super().__init__(http, timeout_s=timeout_s)
        self._base = httpx.URL(endpoint)
        self._secret_id = secret_id
        self._secret_key = secret_key

    async def listing(self, *, queue_id: str, since: datetime, next_token: str | None = None) -> Answer:
        """DescribeSpeechJobs: one page of the queue's jobs created since `since`, oldest first."""
        query = [
            ("queueId", queue_id),
            ("tag", "SpeechRecognition"),
            ("orderByTime", "Asc"),
            ("size", str(LISTING_PAGE)),
            ("startCreationTime", since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")),
        ]
        if next_token:
            query.append(("nextToken", next_token))
        return await self._call(lambda: self._signed("/asr_jobs", query), self._classify_page)

    def _classify_page(self, reply: Reply) -> Answer:
        document = reply.document()
        if reply.ok and isinstance(document, dict) and "Response" in document:
            return reply.answer("ok", "")  # a page may hold no job: <Response><NextToken/></Response>
        return self._classify(reply)

    def _request(self, task_id: str) -> httpx.Request:
        # COS signs the decoded path; the wire carries it encoded.
        return self._signed(PATH + task_id, [], raw_path=PATH + encode_segment(task_id))

    def _signed(
        self, path: str, query: list[tuple[str, str]], *, raw_path: str | None = None
    ) -> httpx.Request:
        # host:port when the endpoint names a port (a local stand-in): httpx sends exactly this.
        host = host_of(self._base)
        now = int(time.time())
        signed = cos_sign(
            secret_id=self._secret_id.get_secret_value(),
            secret_key=self._secret_key.get_secret_value(),
            method="GET",
            path=path,
            query=query or None,
            headers={"host": host},
            start=now - SIGNATURE_WINDOW_S[0],
            end=now + SIGNATURE_WINDOW_S[1],
        )
        url = self._base.copy_with(raw_path=(raw_path or path).encode("ascii"))
        if query:
            url = url.copy_with(params=query)
        return self._client.build_request(
            "GET", url, headers={"Host": host, "Authorization": signed.authorization}
        )

    def _classify(self, reply: Reply) -> Answer:
        document = reply.document()
        fields = document if isinstance(document, dict) else {}
        response = fields.get("Response")
        if reply.ok:
            if isinstance(response, dict) and response.get("JobsDetail"):
                return reply.answer("ok", "")
            if isinstance(response, dict) and response.get("NonExistJobIds"):
                return reply.answer("not-found", "NonExistJobIds")
            return reply.answer("error", UNEXPECTED)
        error = fields.get("Error")
        code = _code(error.get("Code")) if isinstance(error, dict) else None
        if code in _THROTTLED or reply.status == 429:
            return reply.answer("throttled", code or f"HTTP {reply.status}", retry_after_s(reply.headers))
        if code in _AUTH:
            return reply.answer("auth", code or "")
        if code in _MISCONFIGURED:
            return reply.answer("error", code or "")
        return by_status(reply, code)
