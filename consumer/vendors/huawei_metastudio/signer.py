"""Huawei Cloud AK/SK request signature (SDK-HMAC-SHA256 over X-Sdk-Date), which MetaStudio's API uses."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from consumer.vendors._signing import Query, normalized_headers

__all__ = [
    "ALGORITHM",
    "Query",
    "SdkSignature",
    "canonical_headers",
    "canonical_query",
    "canonical_uri",
    "sdk_encode",
    "sdk_headers",
    "sdk_sign",
]

# Sources, read for the rules (no code copied): Huawei Cloud "API签名指南" (API Request Signing Guide),
# chapter "AK/SK签名认证算法详解" (https://support.huaweicloud.com/intl/en-us/devg-apisign/api-sign-algorithm-003.html
# and the pages beside it), whose worked example the tests reproduce, and huaweicloudsdkcore's signer.

ALGORITHM = "SDK-HMAC-SHA256"
# The caller's hash of the body replaces ours when sent (UNSIGNED-PAYLOAD for large uploads).
_CONTENT_SHA256 = "x-sdk-content-sha256"


@dataclass(frozen=True, slots=True)
class SdkSignature:
    """An SDK-HMAC-SHA256 signature and the values it was computed from; no key material."""

    canonical_request: str
    hashed_canonical_request: str
    string_to_sign: str
    signed_headers: str
    signature: str
    authorization: str


def sdk_encode(text: str) -> str:
    """RFC 3986 encoding of UTF-8 text: only A-Z a-z 0-9 - _ . ~ stay literal; space is %20."""
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Each decoded path segment encoded, `/` kept, and a final `/` added: the signature wants one there."""
    uri = "/".join(sdk_encode(segment) for segment in (path or "/").split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(query: Query | None) -> str:
    """Parameters sorted by name then value, both encoded, joined by &; an empty value keeps its `=`."""
    pairs = [] if query is None else list(query.items()) if isinstance(query, Mapping) else list(query)
    return "&".join(f"{sdk_encode(k)}={sdk_encode(v)}" for k, v in sorted(pairs))


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """CanonicalHeaders and SignedHeaders: every header given, lowercase name, trimmed value, sorted."""
    normalized = normalized_headers(headers)
    names = sorted(normalized)
    return "".join(f"{n}:{normalized[n]}\n" for n in names), ";".join(names)


def sdk_sign(
    *,
    access_key: str,
    secret_key: str,
    method: str,
    path: str,
    query: Query | None,
    headers: Mapping[str, str],
    body: bytes = b"",
) -> SdkSignature:
    """Sign a request whose headers are complete: all are signed; X-Sdk-Date must be one (Host should)."""
    normalized = normalized_headers(headers)
    date = normalized.get("x-sdk-date")
    if not date:
        # The gateway reads the signing time from this header: the signature needs it.
        raise ValueError("the signed headers need X-Sdk-Date")
    headers_text, signed_headers = canonical_headers(headers)
    canonical_request = "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            headers_text,
            signed_headers,
            normalized.get(_CONTENT_SHA256) or hashlib.sha256(body).hexdigest(),
        )
    )
    hashed_request = hashlib.sha256(canonical_request.encode()).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{date}\n{hashed_request}"
    signature = hmac.new(secret_key.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    return SdkSignature(
        canonical_request=canonical_request,
        hashed_canonical_request=hashed_request,
        string_to_sign=string_to_sign,
        signed_headers=signed_headers,
        signature=signature,
        authorization=(
            f"{ALGORITHM} Access={access_key}, SignedHeaders={signed_headers}, Signature={signature}"
        ),
    )


def sdk_headers(
    *,
    access_key: str,
    secret_key: str,
    method: str,
    host: str,
    path: str,
    date: str,
    query: Query | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    security_token: str | None = None,
) -> dict[str, str]:
    """The headers of a request, Authorization included; `date` is UTC `YYYYMMDDThhmmssZ`.

    `headers` (Content-Type, X-Project-Id, ...) are signed too; the caller supplies the clock.
    """
    out = {**(headers or {}), "Host": host, "X-Sdk-Date": date}
    if security_token is not None:
        # Temporary AK/SK: the token travels in a header, signed with the rest.
        out["X-Security-Token"] = security_token
    signed = sdk_sign(
        access_key=access_key,
        secret_key=secret_key,
        method=method,
        path=path,
        query=query,
        headers=out,
        body=body,
    )
    return {**out, "Authorization": signed.authorization}
