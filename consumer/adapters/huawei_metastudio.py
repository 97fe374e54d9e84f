"""Stub: replaced by the real adapter."""

from __future__ import annotations

from typing import Any

from consumer.adapters._base import Adapter, Context, Result
from consumer.errors import Rejection

__all__ = ["adapter"]


def detect(document: Any) -> bool:
    return False


def normalize(document: Any, ctx: Context) -> Result:
    raise Rejection("unknown-format", "not implemented")


adapter = Adapter(provider="huawei-metastudio", detect=detect, normalize=normalize)
