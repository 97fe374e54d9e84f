"""The Grafana dashboard the chart ships (helm/speechjobs/dashboards/speechjobs.json, grafanaDashboard.*).

The JSON is checked as Grafana's sidecar would load it: it parses, every panel names the `${datasource}`
variable, and every metric it reads is one consumer/runtime/metrics.py exports. Its PromQL is parsed by
promtool, written as recording rules (`promtool check rules` parses each expr), with the dashboard's
variables replaced by values; without promtool that test fails when CI is set and is skipped otherwise.
The ConfigMap is rendered with helm-python-sdk, as in test_helm_chart.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.test_helm_chart import (
    CHART,
    SCHEMA,
    VALUES,
    exported_metrics,
    merged,
    promtool_or_skip,
    render,
)

DASHBOARD_FILE = CHART / "dashboards" / "speechjobs.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What a Grafana variable stands for in PromQL, for parsing: a valid value of each.
VARIABLES = {"$namespace": "speech", "$job": "prod-speechjobs", "$__rate_interval": "5m"}


def panels() -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in DASHBOARD["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels():
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            label_values = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"])
            assert label_values, variable  # label_values(selector, label): the selector is PromQL
            yield f"variable {variable['name']}", label_values[1]


def substituted(expr: str) -> str:
    for variable, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    return expr


# --- the JSON -------------------------------------------------------------------------------------------


def test_the_dashboard_is_a_current_grafana_dashboard_with_a_stable_uid() -> None:
    assert DASHBOARD["schemaVersion"] >= 39  # Grafana 10.3 and later
    assert DASHBOARD["uid"] == "speechjobs"  # links and the sidecar's updates keep to it
    assert DASHBOARD["title"]
    assert "__inputs" not in DASHBOARD  # an export "for sharing" would make the sidecar ask for a datasource


def test_the_datasource_namespace_and_job_are_variables() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
    assert variables["job"]["multi"] is True
    assert variables["job"]["includeAll"] is True
    assert '{namespace="$namespace"}' in variables["job"]["query"]["query"]  # the jobs of that namespace


def test_every_panel_has_a_title_a_datasource_and_its_own_place() -> None:
    found = list(panels())
    assert len(found) >= 15
    for panel in found:
        assert panel["title"], panel
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]  # Grafana's grid is 24 columns wide
    ids = [panel["id"] for panel in found]
    assert len(ids) == len(set(ids))
    overlapping = [
        (a["title"], b["title"]) for i, a in enumerate(found) for b in found[i + 1 :] if overlap(a, b)
    ]
    assert overlapping == []  # no panel hides another
    assert all(p.get("targets") for p in found if p["type"] != "row")


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ga: dict[str, int] = a["gridPos"]
    gb: dict[str, int] = b["gridPos"]
    return (
        ga["x"] < gb["x"] + gb["w"]
        and gb["x"] < ga["x"] + ga["w"]
        and ga["y"] < gb["y"] + gb["h"]
        and gb["y"] < ga["y"] + ga["h"]
    )


def test_every_query_selects_the_chosen_namespace_and_jobs() -> None:
    for where, expr in queries():
        if where.startswith("panel"):
            selectors = re.findall(r"speechjobs_\w+\{([^}]*)\}", expr)
            assert selectors, where
            assert all('namespace="$namespace", job=~"$job"' in s for s in selectors), where


def test_every_metric_the_dashboard_reads_is_exported() -> None:
    used = {metric for _, expr in queries() for metric in re.findall(r"\b(speechjobs_\w+)", expr)}
    assert used - exported_metrics() == set()
    # The panels asked for: throughput, the three latencies, queue depth, dead letters, the receiver's
    # requests and confirm time, the poller's calls and their time.
    assert {
        "speechjobs_messages_total",
        "speechjobs_processing_seconds_bucket",
        "speechjobs_db_seconds_bucket",
        "speechjobs_publish_seconds_bucket",
        "speechjobs_in_flight_messages",
        "speechjobs_inbound_ready_messages",
        "speechjobs_events_unrouted",
        "speechjobs_dead_letters_total",
        "speechjobs_receiver_requests_total",
        "speechjobs_receiver_confirm_seconds_bucket",
        "speechjobs_polls_total",
        "speechjobs_poll_seconds_bucket",
    } <= used


def test_the_promql_parses(tmp_path: Path) -> None:
    promtool = promtool_or_skip("the dashboard's PromQL was not parsed")
    rules = []
    for index, (where, expr) in enumerate(queries()):
        parsed = substituted(expr)
        assert "$" not in parsed, f"{where}: a variable the test does not know"
        rules.append({"record": f"dashboard:query_{index}", "expr": parsed})
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert f"SUCCESS: {len(rules)} rules found" in output, output


def test_promtool_would_refuse_a_broken_query(tmp_path: Path) -> None:
    """The check above can fail: the same file with one expression broken is refused."""
    promtool = promtool_or_skip("the dashboard's PromQL was not parsed")
    (_, expr), *_ = queries()
    broken = substituted(expr).replace("[5m]", "[5 minutes]", 1)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "d:q", "expr": broken}]}]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert checked.returncode != 0
    assert "FAILED" in checked.stdout + checked.stderr


# --- the values and the ConfigMap ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"grafanaDashboard": {"label": {"grafana_dashboard": "1"}}}, "'label' was unexpected"),
        ({"grafanaDashboard": {"enabled": "yes"}}, "'yes' is not of type 'boolean'"),
        ({"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}, "1 is not of type 'string'"),
        ({"grafanaDashboard": {"namespace": "Monitoring"}}, "'Monitoring' does not match"),
    ],
)
def test_the_schema_rejects(override: dict[str, Any], message: str) -> None:
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.validate(merged(VALUES, override), SCHEMA, cls=jsonschema.Draft7Validator)
    assert message in caught.value.message


def test_the_dashboard_is_off_by_default(helm_python: Any) -> None:
    assert VALUES["grafanaDashboard"]["enabled"] is False
    assert ("ConfigMap", "prod-speechjobs-dashboard") not in render(helm_python)


def test_the_configmap_carries_the_sidecar_label_and_the_dashboard(helm_python: Any) -> None:
    manifests = render(helm_python, {"grafanaDashboard": {"enabled": True}})
    configmap = manifests["ConfigMap", "prod-speechjobs-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["labels"]["app.kubernetes.io/instance"] == "prod"
    assert "namespace" not in configmap["metadata"]  # the release's
    assert "annotations" not in configmap["metadata"]
    assert list(configmap["data"]) == ["speechjobs.json"]
    assert json.loads(configmap["data"]["speechjobs.json"]) == DASHBOARD  # as in the file, untemplated


def test_the_configmap_follows_its_values(helm_python: Any) -> None:
    values = {
        "grafanaDashboard": {
            "enabled": True,
            "labels": {"grafana_dashboard": "speech", "team": "platform"},
            "annotations": {"grafana_folder": "Speech"},
            "namespace": "monitoring",
        }
    }
    metadata = render(helm_python, values)["ConfigMap", "prod-speechjobs-dashboard"]["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["annotations"] == {"grafana_folder": "Speech"}
    assert metadata["labels"]["grafana_dashboard"] == "speech"
    assert metadata["labels"]["team"] == "platform"
