"""The chart's alerts under Prometheus' own rule tester, their runbooks, and the metrics they read.

tests/promtool/*.test.yaml hold `promtool test rules` cases, one where each alert fires (with its labels and
annotations as Alertmanager would get them) and one where it stays silent. They name `rules.yaml`, which is
the chart's rule group rendered here (helm-python-sdk, as in test_helm_chart.py) and written beside copies of
them. Without promtool the tests that run it fail when the environment variable CI is set, and are skipped
otherwise.
"""

from __future__ import annotations

import asyncio
import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from prometheus_client import REGISTRY
from pymongo.errors import AutoReconnect

from consumer.amqp.connection import Broker
from consumer.runtime.health import Health
from consumer.settings import load_settings
from consumer.worker.service import Service
from tests.unit.test_helm_chart import ALERTS, promtool_or_skip, render, rule_group
from tests.unit.test_pipeline import Store, completed_event, rig, task_id, tingwu

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL_TESTS = sorted((ROOT / "tests" / "promtool").glob("*.test.yaml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
# The render the promtool files are written for (their series' job and namespace labels, the Deployments'
# names): release prod in namespace speech, with the ServiceMonitors, everything else default.
VALUES: dict[str, Any] = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}


@pytest.fixture(scope="module")
def group(helm_python: Any) -> dict[str, Any]:
    return rule_group(render(helm_python, VALUES), "prod-speechjobs")


def promtool_test(group: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` on every case file, against `group` written as rules.yaml beside them."""
    promtool = promtool_or_skip("the alerts' unit tests did not run")
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
    for path in PROMTOOL_TESTS:
        shutil.copy(path, directory / path.name)
    return subprocess.run(
        [promtool, "test", "rules", *(path.name for path in PROMTOOL_TESTS)],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def cases() -> list[tuple[str, bool]]:
    """(alert name, whether it is expected to fire) of every evaluation in the promtool files."""
    found = []
    for path in PROMTOOL_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                found.append((check["alertname"], bool(check.get("exp_alerts"))))
    return found


# --- the promtool cases ---------------------------------------------------------------------------------


def test_every_alert_has_a_firing_and_a_silent_case(group: dict[str, Any]) -> None:
    rendered = [rule["alert"] for rule in group["rules"]]
    assert rendered == ALERTS  # everything enabled: the cases cover every alert the chart can render
    found = set(cases())
    assert {name for name, _ in found} == set(rendered)  # a misspelt name would be silent, and pass
    assert [name for name in rendered if (name, True) not in found] == []
    assert [name for name in rendered if (name, False) not in found] == []


def test_the_alerts_pass_their_promtool_unit_tests(group: dict[str, Any], tmp_path: Path) -> None:
    tested = promtool_test(group, tmp_path)
    output = tested.stdout + tested.stderr
    assert tested.returncode == 0, output
    assert output.count("  SUCCESS") == len(PROMTOOL_TESTS) == 3, output
    assert "FAILED" not in output, output


def _drop_second_branch(expr: str) -> str:
    first, _, _ = expr.partition("\nor\n")
    return first


@pytest.mark.parametrize(
    ("alert", "mutate"),
    [
        # A first dead letter of a reason, seen by the new-series branch only.
        ("SpeechjobsDeadLetters", _drop_second_branch),
        # Redeliveries counted as progress would hide a consumer that fails every message.
        ("SpeechjobsInboundStalled", lambda expr: expr.replace(', outcome!="requeued"', "")),
        # A lower threshold would page for occasional throttling.
        ("SpeechjobsPollerThrottled", lambda expr: expr.replace("> 0.1", "> 0.01")),
        # Without the receiver's own job label, its alert would read nothing.
        (
            "SpeechjobsReceiverErrors",
            lambda expr: expr.replace("prod-speechjobs-receiver", "prod-speechjobs"),
        ),
    ],
    ids=["dead-letters-first", "stalled-redeliveries", "throttled-threshold", "receiver-job"],
)
def test_the_promtool_cases_catch_a_broken_alert(
    group: dict[str, Any], tmp_path: Path, alert: str, mutate: Callable[[str], str]
) -> None:
    broken = copy.deepcopy(group)
    (rule,) = [rule for rule in broken["rules"] if rule["alert"] == alert]
    mutated = mutate(rule["expr"])
    assert mutated != rule["expr"]
    rule["expr"] = mutated
    tested = promtool_test(broken, tmp_path)
    output = tested.stdout + tested.stderr
    assert tested.returncode != 0, output
    assert f"alertname: {alert}," in output, output
    assert set(re.findall(r"alertname: (\w+),", output)) == {alert}  # and no other alert's case


# --- runbooks -------------------------------------------------------------------------------------------


def runbook_sections() -> dict[str, str]:
    text = RUNBOOKS.read_text()
    return dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))


def test_each_alert_has_a_runbook_section_with_the_meaning_the_look_and_the_fix(
    group: dict[str, Any],
) -> None:
    sections = runbook_sections()
    assert list(sections) == ALERTS
    for name, body in sections.items():
        missing = [
            part for part in ("**What it means.**", "**How to look.**", "**How to fix.**") if part not in body
        ]
        assert missing == [], name
    for rule in group["rules"]:
        # GitHub's anchor of "## SpeechjobsDeadLetters" is #speechjobsdeadletters.
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page.endswith("/docs/runbooks.md")
        assert anchor == rule["alert"].lower()
        assert rule["alert"] in sections


# --- the metrics the alerts read ------------------------------------------------------------------------


def sample(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, f"{name} is not exported"
    return value


async def test_publish_failures_count_each_failed_attempt_to_publish() -> None:
    r = rig()
    r.publisher.fail_next(2, ConnectionError("connection reset"))
    before = sample("speechjobs_publish_failures_total")
    message = tingwu(1, "COMPLETED")
    await r.run(message)
    assert sample("speechjobs_publish_failures_total") - before == 2  # SpeechjobsPublishFailing's input
    assert r.event_ids() == [completed_event(1)]  # the retry got it through
    assert message.settled == ["ack(multiple)"]


class FlakyStore(Store):
    """A store whose first apply fails as a lost connection does (retried, not a publish failure)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def apply(self, updates: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise AutoReconnect("connection lost")
        return await super().apply(updates)


async def test_database_failures_are_not_publish_failures() -> None:
    health = Health(working=True)
    r = rig(store=FlakyStore(), health=health)
    before = sample("speechjobs_publish_failures_total")
    await r.run(tingwu(1, "COMPLETED"))
    assert r.store.applied == [[task_id(1)]]  # the retry reached the store; the failed call did not
    assert r.event_ids() == [completed_event(1)]
    assert sample("speechjobs_publish_failures_total") == before


class FakeChannel:
    """What the sampler uses of a channel: a passive declare answering the queue's depth, and close."""

    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.name = ""

    async def declare_queue(self, name: str, *, passive: bool) -> Any:
        assert passive  # never creates a queue, nor changes one
        self.name = name
        depth = self.connection.depths[name]
        if isinstance(depth, Exception):
            raise depth
        return SimpleNamespace(declaration_result=SimpleNamespace(message_count=depth))

    async def close(self) -> None:
        self.connection.closed.append(self.name)
        if set(self.connection.depths) <= set(self.connection.closed):
            self.connection.round_done.set()


class FakeConnection:
    """Queue depths by name (or the error declaring the queue raises); records the channels closed."""

    def __init__(self, depths: dict[str, int | Exception]) -> None:
        self.depths = depths
        self.closed: list[str] = []
        self.round_done = asyncio.Event()  # every queue's channel closed at least once

    async def channel(self, *, publisher_confirms: bool) -> FakeChannel:
        assert not publisher_confirms
        return FakeChannel(self)


async def sampled(service: Service, connection: FakeConnection) -> None:
    """Run the consumer's queue sampler through its first round, then stop it (the next is 30 s later)."""
    task = asyncio.create_task(service._sample_queues(cast(Broker, SimpleNamespace(connection=connection))))
    try:
        async with asyncio.timeout(5):
            await connection.round_done.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_consumer_samples_the_inbound_queue_beside_the_unrouted_one() -> None:
    settings = load_settings(inbound_queue="t.inbound", events_unrouted="t.unrouted")
    connection = FakeConnection({"t.inbound": 1234, "t.unrouted": 7})
    await sampled(Service(settings), connection)
    assert sample("speechjobs_inbound_ready_messages") == 1234  # SpeechjobsInboundStalled's input
    assert sample("speechjobs_events_unrouted") == 7
    assert connection.closed == ["t.inbound", "t.unrouted"]  # a channel each, closed again


async def test_the_inbound_queue_is_sampled_without_an_unrouted_queue_and_past_a_failed_sample() -> None:
    settings = load_settings(inbound_queue="t.inbound", events_unrouted="")
    connection = FakeConnection({"t.inbound": 42})
    await sampled(Service(settings), connection)
    assert sample("speechjobs_inbound_ready_messages") == 42
    assert connection.closed == ["t.inbound"]
    # A failed declare (the queue gone, a channel error) leaves the next queue sampled all the same.
    settings = load_settings(inbound_queue="t.inbound", events_unrouted="t.unrouted")
    connection = FakeConnection({"t.inbound": ConnectionError("channel closed"), "t.unrouted": 3})
    await sampled(Service(settings), connection)
    assert sample("speechjobs_events_unrouted") == 3
