"""The benchmark end to end at a tiny size: every contender runs on every workload and reports a positive
throughput."""

from __future__ import annotations

import json
import shutil
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
    from bench.workload import WORKLOADS

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
    before = _bench_objects()
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    [path] = tmp_path.glob("*.json")
    document = json.loads(path.read_text())
    assert set(document["contenders"]) == set(WORKLOADS)
    for workload, results in document["contenders"].items():
        assert set(results) == {c.key for c in CONTENDERS}, workload
        for key, result in results.items():
            assert result["messages"] == 300, (workload, key)
            assert result["throughput_msg_s"] > 0, (workload, key)
        events = results["faststream"]["events"]
        assert events["jobs_with_event"] == events["expected_jobs"] > 0, workload
        targets = document["targets"][workload]
        assert set(targets) >= {"cpu_vs_faststream", "throughput_vs_faststream", "memory_p99_ms_at_half_rate"}
    flood = document["workloads"]["flood"]
    assert flood["terminal_jobs"] == flood["messages"] == 300
    # Every contender's exchanges and queues are deleted afterwards (the events' alternate exchange too).
    assert _bench_objects() <= before


def _bench_objects() -> set[str]:
    """The broker's queues and exchanges named bench.*, as rabbitmqctl lists them (empty without it)."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return set()
    names: set[str] = set()
    for what in ("list_queues", "list_exchanges"):
        listed = subprocess.run(
            [rabbitmqctl, "-q", what, "name"], capture_output=True, text=True, timeout=30, check=False
        )
        names |= {f"{what}:{n}" for n in listed.stdout.split() if n.startswith("bench.")}
    return names
