"""Alibaba Cloud OpenAPI signatures: V3 (ACS3-HMAC-SHA256, request headers) and RPC V2 (HMAC-SHA1, query)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from consumer.vendors._signing import Query, normalized_headers

__all__ = [
    "ACS3_ALGORITHM",
    "Acs3Signature",
    "Query",
    "RpcSignature",
    "acs3_canonical_headers",
    "acs3_canonical_query",
    "acs3_headers",
    "acs3_sign",
    "percent_encode",
    "rpc_canonical_query",
    "rpc_sign",
    "rpc_signed_params",
]

# Sources, read for the rules (no code copied):
# V3: "Request syntax and signature method V3",
#   https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature
#   (help.aliyun.com/document_detail/2593177.html), and the SDK's alibabacloud_openapi_util get_authorization.
# V2: "Request syntax and signature method V2 for RPC APIs" (help.aliyun.com/document_detail/25490.html);
#   its worked example is ECS's "签名机制" (help.aliyun.com/document_detail/25492.html).

ACS3_ALGORITHM = "ACS3-HMAC-SHA256"


# V3 signs these headers and every x-acs-* one; anything else (user-agent, accept) travels unsigned.
_ACS3_PLAIN_SIGNED = frozenset({"host", "content-type"})
_ACS3_PREFIX = "x-acs-"
_CONTENT_SHA256 = "x-acs-content-sha256"

_RPC_COMMON = frozenset(
    {
        "AccessKeyId",
        "Action",
        "Format",
        "SecurityToken",
        "Signature",
        "SignatureMethod",
        "SignatureNonce",
        "SignatureVersion",
        "Timestamp",
        "Version",
    }
)


@dataclass(frozen=True, slots=True)
class Acs3Signature:
    """A V3 signature and the values it was computed from; no key material."""

    canonical_request: str
    hashed_canonical_request: str
    string_to_sign: str
    signed_headers: str
    signature: str
    authorization: str


@dataclass(frozen=True, slots=True)
class RpcSignature:
    """An RPC V2 signature and the values it was computed from; no key material."""

    canonicalized_query: str
    string_to_sign: str
    signature: str


def percent_encode(text: str) -> str:
    """RFC 3986 encoding of UTF-8 text: only A-Z a-z 0-9 - _ . ~ stay literal; space is %20, `*` is %2A."""
    return quote(text, safe="~")


def _pairs(query: Query | None) -> list[tuple[str, str]]:
    if query is None:
        return []
    return list(query.items()) if isinstance(query, Mapping) else list(query)


def _sorted_encoded(query: Query | None) -> str:
    # Sorted on the raw names (then values), as Alibaba's SDKs do; an empty value keeps its `=`.
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(_pairs(query)))


def acs3_canonical_query(query: Query | None) -> str:
    """V3 CanonicalQueryString: parameters sorted by name, name and value RFC 3986-encoded, joined by &."""
    return _sorted_encoded(query)


def acs3_canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """V3 CanonicalHeaders and SignedHeaders: host, content-type and x-acs-* headers, lowercase, sorted."""
    normalized = normalized_headers(headers)
    names = sorted(n for n in normalized if n in _ACS3_PLAIN_SIGNED or n.startswith(_ACS3_PREFIX))
    return "".join(f"{n}:{normalized[n]}\n" for n in names), ";".join(names)


def acs3_sign(
    *,
    access_key_id: str,
    access_key_secret: str,
    method: str,
    path: str,
    query: Query | None,
    headers: Mapping[str, str],
    body: bytes = b"",
) -> Acs3Signature:
    """Sign a request whose headers are already complete (host, x-acs-*, x-acs-content-sha256 of the body)."""
    hashed_payload = hashlib.sha256(body).hexdigest()
    given = normalized_headers(headers).get(_CONTENT_SHA256)
    if given is not None and given != hashed_payload:
        raise ValueError("x-acs-content-sha256 is not the SHA-256 of the body")
    canonical_headers, signed_headers = acs3_canonical_headers(headers)
    canonical_request = "\n".join(
        (
            method.upper(),
            # The path is given decoded; `/` separates segments and stays literal.
            quote(path or "/", safe="/~"),
            acs3_canonical_query(query),
            canonical_headers,
            signed_headers,
            hashed_payload,
        )
    )
    hashed_request = hashlib.sha256(canonical_request.encode()).hexdigest()
    string_to_sign = f"{ACS3_ALGORITHM}\n{hashed_request}"
    signature = hmac.new(access_key_secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    return Acs3Signature(
        canonical_request=canonical_request,
        hashed_canonical_request=hashed_request,
        string_to_sign=string_to_sign,
        signed_headers=signed_headers,
        signature=signature,
        authorization=(
            f"{ACS3_ALGORITHM} Credential={access_key_id},"
            f"SignedHeaders={signed_headers},Signature={signature}"
        ),
    )


def acs3_headers(
    *,
    access_key_id: str,
    access_key_secret: str,
    host: str,
    action: str,
    version: str,
    date: str,
    nonce: str,
    method: str = "POST",
    path: str = "/",
    query: Query | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    security_token: str | None = None,
) -> dict[str, str]:
    """The headers of a V3 request, Authorization included; `date` is UTC `YYYY-MM-DDThh:mm:ssZ`.

    The caller supplies the clock and the nonce (unique per request), which keeps this a pure function.
    """
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": date,
        "x-acs-signature-nonce": nonce,
        _CONTENT_SHA256: hashlib.sha256(body).hexdigest(),
    }
    if content_type is not None:
        headers["content-type"] = content_type
    if security_token is not None:
        # STS credentials: the token is an x-acs-* header, so it is signed with the rest.
        headers["x-acs-security-token"] = security_token
    signed = acs3_sign(
        access_key_id=access_key_id,
        access_key_secret=access_key_secret,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body,
    )
    return {**headers, "Authorization": signed.authorization}


def rpc_canonical_query(params: Query) -> str:
    """RPC V2 CanonicalizedQueryString: every parameter but Signature, sorted, RFC 3986-encoded."""
    pairs = _pairs(params)
    if any(k == "Signature" for k, _ in pairs):
        raise ValueError("Signature is not signed")
    return _sorted_encoded(pairs)


def rpc_sign(*, access_key_secret: str, method: str, params: Query) -> RpcSignature:
    """RPC V2: Base64 HMAC-SHA1, keyed by `secret&`, of `METHOD&%2F&percentEncode(canonicalized query)`."""
    canonical = rpc_canonical_query(params)
    string_to_sign = f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new(f"{access_key_secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return RpcSignature(
        canonicalized_query=canonical,
        string_to_sign=string_to_sign,
        signature=base64.b64encode(digest).decode(),
    )


def rpc_signed_params(
    *,
    access_key_id: str,
    access_key_secret: str,
    action: str,
    version: str,
    timestamp: str,
    nonce: str,
    method: str = "GET",
    params: Mapping[str, str] | None = None,
    response_format: str = "JSON",
    security_token: str | None = None,
) -> dict[str, str]:
    """The full RPC V2 parameter set, Signature included; `timestamp` is UTC `YYYY-MM-DDThh:mm:ssZ`.

    Send them as the query (GET) or form body (POST) exactly as signed; the caller supplies clock and nonce.
    """
    own = dict(params or {})
    clash = sorted(_RPC_COMMON.intersection(own))
    if clash:
        raise ValueError(f"common parameters are set by the signer: {clash}")
    common = {
        "AccessKeyId": access_key_id,
        "Action": action,
        "Format": response_format,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": nonce,
        "SignatureVersion": "1.0",
        "Timestamp": timestamp,
        "Version": version,
    }
    if security_token is not None:
        common["SecurityToken"] = security_token
    signed = {**own, **common}
    signature = rpc_sign(access_key_secret=access_key_secret, method=method, params=signed)
    return {**signed, "Signature": signature.signature}
