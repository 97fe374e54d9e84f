"""Alibaba Cloud OpenAPI error answers (Tingwu, ICE): the gateway's codes and headers to a verdict."""

from __future__ import annotations

from consumer.vendors._client import Answer
from consumer.vendors._http import Reply, by_status, retry_after_s

__all__ = ["acs_retry_after_s", "alibaba_verdict"]

# Sources: the OpenAPI gateway's common error codes (Throttling*, InvalidAccessKeyId.*, SignatureDoesNotMatch,
# IncompleteSignature, Forbidden*, InvalidSecurityToken.*, InvalidTimeStamp.*, InvalidAction.NotFound), and
# Alibaba's own SDK, aliyun/darabonba-openapi @ 8b916ca: its clients raise ThrottlingException for any 4xx/5xx
# carrying a positive x-acs-retry-after (python/alibabacloud_tea_openapi/utils.py get_throttling_time_left)
# and wait that many milliseconds (java ThrottlingBackoffTest: "80" waits ~80 ms, "150" ~150 ms).

# Credentials, signature or clock refused: nothing changes until the configuration does. InvalidAccessKeyId
# comes before the not-found rule: InvalidAccessKeyId.NotFound is answered with HTTP 404.
_AUTH_PREFIXES = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidSecurityToken",
    "InvalidTimeStamp",
    "Forbidden",
    "NoPermission",
)
# The gateway found no such API or version (HTTP 404 too): a wrong endpoint, never the job's absence.
_GATEWAY_PREFIXES = ("InvalidAction", "InvalidApi", "InvalidVersion", "InvalidProduct", "InvalidRegionId")
# Neither Tingwu nor ICE's GetSmartHandleJob documents its code for an unknown id; ICE's other job APIs
# answer 404 JobNotFound. The generic rule: a code that says NotFound or NotExist.
_NOT_FOUND_WORDS = ("NotFound", "NotExist")


def _acs_ms(reply: Reply) -> int | None:
    value = reply.headers.get("x-acs-retry-after", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def acs_retry_after_s(reply: Reply) -> float | None:
    """x-acs-retry-after (milliseconds, positive) in seconds, else Retry-After."""
    ms = _acs_ms(reply)
    return ms / 1000 if ms is not None else retry_after_s(reply.headers)


def alibaba_verdict(reply: Reply, code: str | None) -> Answer:
    """The verdict of an error answer (or a 2xx with an error Code); `code` is the body's Code."""
    text = code or ""
    if text.startswith("Throttling") or reply.status == 429 or _acs_ms(reply) is not None:
        return reply.answer("throttled", code or f"HTTP {reply.status}", acs_retry_after_s(reply))
    if text.startswith(_AUTH_PREFIXES):
        return reply.answer("auth", text)
    if text.startswith(_GATEWAY_PREFIXES):
        return reply.answer("error", text)
    if any(word in text for word in _NOT_FOUND_WORDS):
        return reply.answer("not-found", text)
    return by_status(reply, code)
