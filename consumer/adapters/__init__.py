"""The vendor adapters and the one explicit registry the core dispatches through."""

from __future__ import annotations

from consumer.adapters import aliyun_ice, huawei_metastudio, tencent_ci, tingwu
from consumer.adapters._base import Adapter, Context, Ignored, Result
from schemas.job import Provider

__all__ = ["REGISTRY", "Adapter", "Context", "Ignored", "Result"]

# Order matters only for shape detection: the most specific shapes first.
REGISTRY: dict[Provider, Adapter] = {
    adapter.provider: adapter
    for adapter in (tingwu.adapter, tencent_ci.adapter, aliyun_ice.adapter, huawei_metastudio.adapter)
}
