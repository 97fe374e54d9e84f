"""One folder per vendor (parsing, and its API client and webhook checks); the registry of parsers."""

from __future__ import annotations

from collections.abc import Collection

from consumer.core.adapter import Adapter
from consumer.core.contract import Inbound
from consumer.core.normalize import Limits, Normalized
from consumer.core.normalize import normalize as _normalize
from consumer.vendors.aliyun_ice.parse import adapter as _aliyun_ice
from consumer.vendors.huawei_metastudio.parse import adapter as _huawei_metastudio
from consumer.vendors.tencent_ci.parse import adapter as _tencent_ci
from consumer.vendors.tingwu.parse import adapter as _tingwu
from schemas.job import PROVIDERS, Provider

__all__ = ["REGISTRY", "normalize"]

# Order matters only for shape detection: the most specific shapes first.
REGISTRY: dict[Provider, Adapter] = {
    adapter.provider: adapter for adapter in (_tingwu, _tencent_ci, _aliyun_ice, _huawei_metastudio)
}

_LIMITS = Limits()


def normalize(
    msg: Inbound, *, enabled: Collection[Provider] = PROVIDERS, limits: Limits = _LIMITS
) -> Normalized:
    """The core's normalize over every vendor in the registry."""
    return _normalize(msg, adapters=REGISTRY, enabled=enabled, limits=limits)
