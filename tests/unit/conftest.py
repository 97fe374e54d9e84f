"""Fixtures shared by the unit tests: the Helm library that renders the chart."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def helm_python() -> Any:
    return pytest.importorskip(
        "helm_python",
        reason="helm-python-sdk (offline rendering; helm-sdkpy cannot render) is not installed: "
        ".venv/bin/pip install helm-python-sdk",
    )
