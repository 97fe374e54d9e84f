"""The receiver benchmark end to end in its quick mode: it completes and reports both contenders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import AMQP_URL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_quick_receiver_bench_reports_both_contenders(tmp_path: Path) -> None:
    pytest.importorskip("psutil", reason="the bench extra is not installed: pip install -e '.[bench]'")
    pytest.importorskip("fastapi", reason="the relay baseline needs fastapi (the bench extra)")
    command = [
        sys.executable,
        "-m",
        "bench.receiver",
        "--quick",
        "--only",
        "receiver,relay",
        "--out",
        str(tmp_path),
        "--amqp-url",
        AMQP_URL,
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    [path] = tmp_path.glob("receiver-*.json")
    document = json.loads(path.read_text())
    assert set(document["contenders"]) == {"receiver", "relay"}
    for key, result in document["contenders"].items():
        assert result["checks"] == {"right_token": 200, "wrong_token": 404, "unknown_provider": 404}, key
        assert result["max"]["requests"] > 0, key
        assert result["paced"]["requests"] > 0, key
    assert "rps_per_cpu_vs_relay" in document["targets"]
