"""Tingwu GetTaskInfo: a GET signed with ACS3-HMAC-SHA256, its answer classified."""

from __future__ import annotations

import time
import uuid

import httpx
from pydantic import SecretStr

from consumer.vendors._client import Answer
from consumer.vendors._http import UNEXPECTED, BaseStatusClient, Reply, SharedHttp, encode_segment, host_of
from consumer.vendors._http import vendor_code as _code
from consumer.vendors.aliyun.answers import alibaba_verdict
from consumer.vendors.aliyun.signer import acs3_headers
from schemas.job import Provider

__all__ = ["ACTION", "PATH", "VERSION", "TingwuStatusClient"]

ACTION = "GetTaskInfo"
VERSION = "2023-09-30"
PATH = "/openapi/tingwu/v2/tasks/"


class TingwuStatusClient(BaseStatusClient):
    """GET {endpoint}/openapi/tingwu/v2/tasks/{TaskId} (ROA style, no query, no body)."""

    provider: Provider = "tingwu"

    def __init__(
        self,
        http: SharedHttp,
        *,
        endpoint: str,
        access_key_id: SecretStr,
        access_key_secret: SecretStr,
        security_token: SecretStr | None = None,
        timeout_s: float,
    ) -> None:
        super().__init__(http, timeout_s=timeout_s)
        self._base = httpx.URL(endpoint)
        self._key_id = access_key_id
        self._secret = access_key_secret
        self._token = security_token

    def _request(self, task_id: str) -> httpx.Request:
        host = host_of(self._base)
        headers = acs3_headers(
            access_key_id=self._key_id.get_secret_value(),
            access_key_secret=self._secret.get_secret_value(),
            host=host,
            action=ACTION,
            version=VERSION,
            date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            nonce=uuid.uuid4().hex,
            method="GET",
            # The signer encodes the decoded path as the wire path below is encoded: the same bytes.
            path=PATH + task_id,
            security_token=self._token.get_secret_value() if self._token else None,
        )
        url = self._base.copy_with(raw_path=(PATH + encode_segment(task_id)).encode("ascii"))
        return self._client.build_request("GET", url, headers=headers)

    def _classify(self, reply: Reply) -> Answer:
        document = reply.document()
        fields = document if isinstance(document, dict) else {}
        # Code is the string "0" on success; an error answer carries the gateway's or Tingwu's code.
        code = _code(fields.get("Code"))
        failed = code not in (None, "0")
        if reply.ok and not failed:
            if isinstance(fields.get("Data"), dict):
                return reply.answer("ok", "")
            return reply.answer("error", UNEXPECTED)
        return alibaba_verdict(reply, code if failed else None)
