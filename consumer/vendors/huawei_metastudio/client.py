"""MetaStudio ShowAsyncTtsJob: a GET signed with SDK-HMAC-SHA256, its answer classified."""

from __future__ import annotations

import time

import httpx
from pydantic import SecretStr

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
from consumer.vendors.huawei_metastudio.signer import sdk_headers
from schemas.job import Provider

__all__ = ["MetaStudioStatusClient", "path_for"]

# Error answers are {error_code, error_msg, request_id}. MetaStudio's own codes (ShowAsyncTtsJob page):
# MSS.000000001 failed, .2 internal error, .3 invalid parameter, .4 not authenticated; none says "no such
# job", so a missing job follows the generic 404 rule. APIGW.* codes come from the API gateway
# (support.huaweicloud.com devg-apisign/api-sign-errorcode): 0308 is its throttling (429), 0301-0307 refuse
# the authentication or access (401/403), 0101 is "API does not exist" (404: a wrong endpoint, not a job).
_THROTTLED = frozenset({"APIGW.0308"})
_AUTH = frozenset({f"APIGW.030{n}" for n in range(1, 8)} | {"MSS.000000004"})
_GATEWAY_PREFIX = "APIGW."


def path_for(project_id: str, job_id: str) -> str:
    """The decoded path of a job: /v1/{project_id}/ttsc/async-jobs/{job_id}."""
    return f"/v1/{project_id}/ttsc/async-jobs/{job_id}"


class MetaStudioStatusClient(BaseStatusClient):
    """GET {endpoint}/v1/{project_id}/ttsc/async-jobs/{job_id} with AK/SK headers (and X-Project-Id)."""

    provider: Provider = "huawei-metastudio"

    def __init__(
        self,
        http: SharedHttp,
        *,
        endpoint: str,
        access_key: SecretStr,
        secret_key: SecretStr,
        project_id: str,
        timeout_s: float,
    ) -> None:
        super().__init__(http, timeout_s=timeout_s)
        self._base = httpx.URL(endpoint)
        self._access_key = access_key
        self._secret_key = secret_key
        self._project_id = project_id

    def _request(self, task_id: str) -> httpx.Request:
        headers = sdk_headers(
            access_key=self._access_key.get_secret_value(),
            secret_key=self._secret_key.get_secret_value(),
            method="GET",
            host=host_of(self._base),
            # The signer encodes each decoded segment as the wire path below is encoded.
            path=path_for(self._project_id, task_id),
            date=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            # The ShowAsyncTtsJob page requires X-Project-Id with AK/SK; it is signed like the rest.
            headers={"Content-Type": "application/json", "X-Project-Id": self._project_id},
        )
        raw = path_for(encode_segment(self._project_id), encode_segment(task_id))
        url = self._base.copy_with(raw_path=raw.encode("ascii"))
        return self._client.build_request("GET", url, headers=headers)

    def _classify(self, reply: Reply) -> Answer:
        document = reply.document()
        fields = document if isinstance(document, dict) else {}
        # A 200 with a state is the job, failed or not (a newer `code` field tells that to the parser).
        if reply.ok and isinstance(fields.get("state"), str):
            return reply.answer("ok", "")
        code = _code(fields.get("error_code"))
        if reply.ok and code is None:
            return reply.answer("error", UNEXPECTED)
        if code in _THROTTLED or reply.status == 429:
            return reply.answer("throttled", code or f"HTTP {reply.status}", retry_after_s(reply.headers))
        if code in _AUTH or reply.status in (401, 403):
            return reply.answer("auth", code or f"HTTP {reply.status}")
        if code is not None and code.startswith(_GATEWAY_PREFIX):
            return reply.answer("error", code)
        return by_status(reply, code)
