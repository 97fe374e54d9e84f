"""The vendors' status clients, one pooled HTTP client between them; and why a provider is not polled."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from pydantic import SecretStr

from consumer.settings import VendorSettings
from consumer.vendors._client import StatusClient
from consumer.vendors._http import USER_AGENT, SharedHttp, plain_segment
from consumer.vendors.aliyun_ice.client import IceStatusClient
from consumer.vendors.huawei_metastudio.client import MetaStudioStatusClient
from consumer.vendors.tencent_ci.client import TencentCiStatusClient, default_endpoint
from consumer.vendors.tingwu.client import TingwuStatusClient
from schemas.job import Provider

__all__ = ["LIMITS", "status_clients", "unpolled"]

# Four vendor hosts; the poller's concurrency is what bounds the rest (httpx's defaults, made explicit).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)

_Builder = Callable[[SharedHttp], StatusClient]
# A COS bucket (`<name>-<appid>`) and a region are DNS labels: lowercase letters, digits, hyphens.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def status_clients(
    settings: VendorSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[dict[Provider, StatusClient], dict[Provider, str]]:
    """A client per provider whose credentials are complete, and the reason for each of the others.

    The clients share one httpx.AsyncClient, closed when the last of them is; `transport` replaces the
    network (httpx.MockTransport in tests).
    """
    builders, reasons = _builders(settings)
    if not builders:
        return {}, reasons
    shared = SharedHttp(
        httpx.AsyncClient(
            timeout=httpx.Timeout(settings.vendor_timeout_s),
            limits=LIMITS,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
            follow_redirects=False,
        )
    )
    return {provider: build(shared) for provider, build in builders.items()}, reasons


def unpolled(settings: VendorSettings) -> dict[Provider, str]:
    """Why each provider that status_clients would leave out is left out; no client is built."""
    return _builders(settings)[1]


def _builders(settings: VendorSettings) -> tuple[dict[Provider, _Builder], dict[Provider, str]]:
    builders: dict[Provider, _Builder] = {}
    reasons: dict[Provider, str] = {}
    for provider, found in {**_alibaba(settings), **_tencent(settings), **_huawei(settings)}.items():
        if isinstance(found, str):
            reasons[provider] = found
        else:
            builders[provider] = found
    return builders, reasons


def _alibaba(s: VendorSettings) -> dict[Provider, _Builder | str]:
    key_id, secret = s.alibaba_access_key_id, s.alibaba_access_key_secret
    reason = _missing(s, "alibaba_access_key_id", "alibaba_access_key_secret")
    if reason or key_id is None or secret is None:
        return dict.fromkeys(("tingwu", "aliyun-ice"), reason or "incomplete")
    token, timeout = _set(s.alibaba_security_token), s.vendor_timeout_s

    def tingwu(http: SharedHttp) -> StatusClient:
        return TingwuStatusClient(
            http,
            endpoint=s.tingwu_endpoint,
            access_key_id=key_id,
            access_key_secret=secret,
            security_token=token,
            timeout_s=timeout,
        )

    def ice(http: SharedHttp) -> StatusClient:
        return IceStatusClient(
            http,
            endpoint=s.ice_endpoint,
            access_key_id=key_id,
            access_key_secret=secret,
            security_token=token,
            signature=s.ice_signature,
            timeout_s=timeout,
        )

    return {
        "tingwu": _bad_endpoint("tingwu_endpoint", s.tingwu_endpoint) or tingwu,
        "aliyun-ice": _bad_endpoint("ice_endpoint", s.ice_endpoint) or ice,
    }


def _tencent(s: VendorSettings) -> dict[Provider, _Builder | str]:
    sid, skey, endpoint = s.tencent_secret_id, s.tencent_secret_key, s.tencent_ci_endpoint
    # The bucket and region only make the default endpoint: an explicit one needs neither.
    reason = _missing(s, "tencent_secret_id", "tencent_secret_key") or (
        None if endpoint else _missing(s, "tencent_ci_bucket", "tencent_ci_region")
    )
    if reason or sid is None or skey is None:
        return {"tencent-ci": reason or "incomplete"}
    if not endpoint:
        for name in ("tencent_ci_bucket", "tencent_ci_region"):
            if not _LABEL.fullmatch(getattr(s, name) or ""):
                # They make a host name: httpx would send anything, percent-encoded.
                return {"tencent-ci": f"SPEECHJOBS_{name.upper()} is not a host name label"}
    ci = endpoint or default_endpoint(s.tencent_ci_bucket or "", s.tencent_ci_region or "")

    def tencent(http: SharedHttp) -> StatusClient:
        return TencentCiStatusClient(
            http, endpoint=ci, secret_id=sid, secret_key=skey, timeout_s=s.vendor_timeout_s
        )

    return {"tencent-ci": _bad_endpoint("tencent_ci_endpoint", ci) or tencent}


def _huawei(s: VendorSettings) -> dict[Provider, _Builder | str]:
    ak, sk, project = s.huawei_access_key, s.huawei_secret_key, s.huawei_project_id
    reason = _missing(s, "huawei_access_key", "huawei_secret_key", "huawei_project_id")
    if reason or ak is None or sk is None or project is None:
        return {"huawei-metastudio": reason or "incomplete"}
    if not plain_segment(project):
        # It goes into the path: a slash would ask another API.
        return {"huawei-metastudio": "SPEECHJOBS_HUAWEI_PROJECT_ID is not a plain path segment"}

    def huawei(http: SharedHttp) -> StatusClient:
        return MetaStudioStatusClient(
            http,
            endpoint=s.metastudio_endpoint,
            access_key=ak,
            secret_key=sk,
            project_id=project,
            timeout_s=s.vendor_timeout_s,
        )

    return {"huawei-metastudio": _bad_endpoint("metastudio_endpoint", s.metastudio_endpoint) or huawei}


def _bad_endpoint(name: str, value: str) -> str | None:
    """Why an endpoint cannot be polled (said at start, not as a failure on every request), or None."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        url = None
    # The clients replace the path: a path or query here would be dropped without a word.
    if url is None or url.scheme not in ("http", "https") or not url.host or url.raw_path not in (b"", b"/"):
        return f"SPEECHJOBS_{name.upper()} is not http(s)://host[:port]"
    return None


def _missing(settings: VendorSettings, *names: str) -> str | None:
    """The first of the settings that is unset or empty, as the variable an operator sets."""
    for name in names:
        value = getattr(settings, name)
        if not (value.get_secret_value() if isinstance(value, SecretStr) else value):
            return f"SPEECHJOBS_{name.upper()} is not set"
    return None


def _set(value: SecretStr | None) -> SecretStr | None:
    # An empty token (an empty secret file) means none, not a token of "".
    return value if value is not None and value.get_secret_value() else None
