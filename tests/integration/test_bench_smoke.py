"""The benchmark end to end at a tiny size: every contender runs and reports a positive throughput."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import AMQP_URL, mongodb_url

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_measures_every_contender(tmp_path: Path) -> None:
    for module in ("faststream", "psutil"):
        pytest.importorskip(module, reason="the bench extra is not installed: pip install -e '.[bench]'")
    from bench.contenders import CONTENDERS

    command = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--messages",
        "300",
        "--paced-seconds",
        "1",
        "--no-plot",
        "--out",
        str(tmp_path),
        "--amqp-url",
        AMQP_URL,
        "--mongodb-url",
        mongodb_url(),
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=85, check=False)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    [path] = tmp_path.glob("*.json")
    document = json.loads(path.read_text())
    assert set(document["contenders"]) == {c.key for c in CONTENDERS}
    for key, result in document["contenders"].items():
        assert result["messages"] == 300, key
        assert result["throughput_msg_s"] > 0, key
    assert set(document["targets"]) >= {"cpu_vs_straightforward", "throughput_vs_db_ceiling"}
