"""ICE GetSmartHandleJob: an RPC GET signed with ACS3 (v3) or the query signature (v2), classified."""

from __future__ import annotations

import time
import uuid
from typing import Literal

import httpx
from pydantic import SecretStr

from consumer.vendors._client import Answer
from consumer.vendors._http import UNEXPECTED, BaseStatusClient, Reply, SharedHttp, host_of
from consumer.vendors._http import vendor_code as _code
from consumer.vendors.aliyun.answers import alibaba_verdict
from consumer.vendors.aliyun.signer import (
    acs3_canonical_query,
    acs3_headers,
    percent_encode,
    rpc_signed_params,
)
from schemas.job import Provider

__all__ = ["ACTION", "VERSION", "IceStatusClient"]

ACTION = "GetSmartHandleJob"
VERSION = "2020-11-09"
# A job answer has at least one of these (RequestId alone does not make one).
_JOB_KEYS = frozenset({"JobId", "SmartJobInfo", "State", "JobResult"})


class IceStatusClient(BaseStatusClient):
    """GET {endpoint}/?JobId=... ; v3 signs headers, v2 (as ICE's own SDK) signs the query."""

    provider: Provider = "aliyun-ice"

    def __init__(
        self,
        http: SharedHttp,
        *,
        endpoint: str,
        access_key_id: SecretStr,
        access_key_secret: SecretStr,
        security_token: SecretStr | None = None,
        signature: Literal["v3", "v2"] = "v3",
        timeout_s: float,
    ) -> None:
        super().__init__(http, timeout_s=timeout_s)
        self._base = httpx.URL(endpoint)
        self._key_id = access_key_id
        self._secret = access_key_secret
        self._token = security_token
        self._signature = signature

    def _request(self, task_id: str) -> httpx.Request:
        now = time.gmtime()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", now)
        token = self._token.get_secret_value() if self._token else None
        query = {"JobId": task_id}
        headers: dict[str, str] = {}
        if self._signature == "v3":
            headers = acs3_headers(
                access_key_id=self._key_id.get_secret_value(),
                access_key_secret=self._secret.get_secret_value(),
                host=host_of(self._base),
                action=ACTION,
                version=VERSION,
                date=stamp,
                nonce=uuid.uuid4().hex,
                method="GET",
                path="/",
                query=query,
                security_token=token,
            )
            encoded = acs3_canonical_query(query)
        else:
            params = rpc_signed_params(
                access_key_id=self._key_id.get_secret_value(),
                access_key_secret=self._secret.get_secret_value(),
                action=ACTION,
                version=VERSION,
                timestamp=stamp,
                nonce=uuid.uuid4().hex,
                method="GET",
                params=query,
                response_format="JSON",
                security_token=token,
            )
            encoded = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))
        # The query goes out encoded exactly as it was signed: no second encoder in between.
        url = self._base.copy_with(raw_path=f"/?{encoded}".encode("ascii"))
        return self._client.build_request("GET", url, headers=headers)

    def _classify(self, reply: Reply) -> Answer:
        document = reply.document()
        fields = document if isinstance(document, dict) else {}
        # The job's own ErrorCode is not the API's Code: only Code says the request failed ("0" does not).
        code = _code(fields.get("Code"))
        code = None if code == "0" else code
        if reply.ok and code is None:
            if not _JOB_KEYS.isdisjoint(fields):
                return reply.answer("ok", "")
            return reply.answer("error", UNEXPECTED)
        return alibaba_verdict(reply, code)
