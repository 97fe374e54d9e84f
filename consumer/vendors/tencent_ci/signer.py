"""Tencent Cloud COS request signature (q-sign-algorithm=sha1), which CI's API uses as its Authorization."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from consumer.vendors._signing import Query, normalized_headers

__all__ = ["CosSignature", "Query", "cos_encode", "cos_key_time", "cos_sign", "cos_sign_key"]

# Source, read for the rules (no code copied): COS "请求签名" (https://cloud.tencent.com/document/product/436/7778),
# whose worked example the tests reproduce, and cos-python-sdk-v5's CosS3Auth.


@dataclass(frozen=True, slots=True)
class CosSignature:
    """A COS signature and the values it was computed from; no key material (see cos_sign_key)."""

    key_time: str
    header_list: str
    url_param_list: str
    http_string: str
    hashed_http_string: str
    string_to_sign: str
    signature: str
    authorization: str


def cos_encode(text: str) -> str:
    """COS UrlEncode: UTF-8, everything but A-Z a-z 0-9 - _ . ~ as uppercase %XY (space is %20)."""
    return quote(text, safe="~")


def cos_key_time(start: int, end: int) -> str:
    """KeyTime `start;end` in Unix seconds, the validity window of the signature."""
    if end <= start:
        raise ValueError("a signature's window must end after it starts")
    return f"{start};{end}"


def cos_sign_key(secret_key: str, key_time: str) -> str:
    """SignKey: hex HMAC-SHA1 of the KeyTime under the SecretKey; as secret as the key within its window."""
    return hmac.new(secret_key.encode(), key_time.encode(), hashlib.sha1).hexdigest()


def _canonical(pairs: Iterable[tuple[str, str]]) -> tuple[str, str]:
    # Names are encoded then lowercased, values only encoded; sorted on the encoded form as COS does.
    encoded = sorted((cos_encode(k).lower(), cos_encode(v)) for k, v in pairs)
    return ";".join(k for k, _ in encoded), "&".join(f"{k}={v}" for k, v in encoded)


def cos_sign(
    *,
    secret_id: str,
    secret_key: str,
    method: str,
    path: str,
    query: Query | None,
    headers: Mapping[str, str],
    start: int,
    end: int,
) -> CosSignature:
    """Sign a request: every header and query parameter given is signed; `path` is decoded (not %-encoded).

    Sign at least Host (and Content-Type, Content-MD5 where sent); the caller supplies the clock.
    """
    if not path.startswith("/"):
        raise ValueError("the path must start with /")
    key_time = cos_key_time(start, end)
    params = [] if query is None else list(query.items()) if isinstance(query, Mapping) else list(query)
    url_param_list, http_parameters = _canonical(params)
    header_list, http_headers = _canonical(list(normalized_headers(headers).items()))
    http_string = f"{method.lower()}\n{path}\n{http_parameters}\n{http_headers}\n"
    hashed = hashlib.sha1(http_string.encode()).hexdigest()
    string_to_sign = f"sha1\n{key_time}\n{hashed}\n"
    signature = hmac.new(
        cos_sign_key(secret_key, key_time).encode(), string_to_sign.encode(), hashlib.sha1
    ).hexdigest()
    authorization = "&".join(
        (
            "q-sign-algorithm=sha1",
            f"q-ak={secret_id}",
            f"q-sign-time={key_time}",
            f"q-key-time={key_time}",
            f"q-header-list={header_list}",
            f"q-url-param-list={url_param_list}",
            f"q-signature={signature}",
        )
    )
    return CosSignature(
        key_time=key_time,
        header_list=header_list,
        url_param_list=url_param_list,
        http_string=http_string,
        hashed_http_string=hashed,
        string_to_sign=string_to_sign,
        signature=signature,
        authorization=authorization,
    )
