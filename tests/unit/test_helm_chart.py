"""The Helm chart in helm/speechjobs: values against the strict schema, lint with the real Helm library
(helm-sdkpy), and the rendered manifests (helm-python-sdk, the Python binding that can render offline).

Both Helm bindings are Go libraries loaded through ctypes/cffi; the tests that need one are skipped, with
the install command as the reason, when it is not installed. The schema tests always run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from consumer.runtime import metrics
from consumer.settings import ConsumerSettings, Settings, load_settings

CHART = Path(__file__).resolve().parents[2] / "helm" / "speechjobs"
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
CHART_META: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())

ERROR, WARNING = 3, 2  # Helm's lint severities (1 is info, e.g. "icon is recommended")

# Everything optional enabled and most settings changed. KEDA and the HPA are exclusive, so the HPA gets
# its own override below.
EVERYTHING: dict[str, Any] = yaml.safe_load(
    """
replicaCount: 3
image:
  repository: registry.example.com/platform/speechjobs
  tag: "0.2.0"
  digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  pullPolicy: Always
imagePullSecrets: [{name: regcred}]
fullnameOverride: sj
existingSecret:
  name: speechjobs-credentials
  amqpUrlKey: amqp
  mongodbUrlKey: mongo
  callbackTokensKey: tokens
  iceAuthKeysKey: ice-keys
  iceCallbackUrlKey: ice-url
  alibabaAccessKeyIdKey: ali-id
  alibabaAccessKeySecretKey: ali-secret
  alibabaSecurityTokenKey: ali-token
  tencentSecretIdKey: tc-id
  tencentSecretKeyKey: tc-key
  huaweiAccessKeyKey: hw-ak
  huaweiSecretKeyKey: hw-sk
config:
  providers: [tingwu, aliyun-ice]
  inboundQueue: jobs.inbound
  queueType: classic
  eventsUnrouted: ""
  eventsUnroutedMaxLength: 2500000
  mongodbWriteConcern: 2
  mongodbJournal: false
  batchLingerMs: 2.5
  maxBytesInFlight: 134217728
  maxBodyBytes: 2097152
  maxMembers: 50000
  maxJobsPerMessage: 20
  maxStringBytes: 65536
  maxResults: 1000
  rawRetentionDays: 0.5
  shutdownGraceSeconds: 45.5
  httpPort: 9090
  logFormat: text
  logLevel: DEBUG
extraEnv: [{name: TZ, value: UTC}]
extraVolumes: [{name: tls, secret: {secretName: speechjobs-tls}}]
extraVolumeMounts: [{name: tls, mountPath: /etc/speechjobs/tls, readOnly: true}]
serviceAccount: {name: speechjobs-sa, annotations: {iam.example.com/role: speechjobs}}
podAnnotations: {example.com/team: platform}
podLabels: {team: platform}
priorityClassName: high
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: queue-workers, effect: NoSchedule}]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app.kubernetes.io/name: speechjobs}}
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}
  - maxSkew: 2
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector: {matchLabels: {team: platform}}
service: {port: 9100}
serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}
grafanaDashboard:
  enabled: true
  labels: {grafana_dashboard: "1", team: platform}
  annotations: {grafana_folder: Speech}
prometheusRule:
  enabled: true
  labels: {release: prometheus}
  interval: 1m
  runbookBaseUrl: https://wiki.example.com/speechjobs/
podDisruptionBudget: {minAvailable: 1}
keda:
  enabled: true
  minReplicaCount: 0
  maxReplicaCount: 20
  queueLength: 1000
  activationQueueLength: 5
  vhostName: speech
  behavior: {scaleDown: {stabilizationWindowSeconds: 120}}
networkPolicy:
  enabled: true
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  rabbitmq: {ports: [5671], to: [{podSelector: {matchLabels: {app.kubernetes.io/name: rabbitmq}}}]}
  mongodb: {to: [{ipBlock: {cidr: 10.20.0.0/16}}]}
  dns: {to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]}
dlqReplay:
  enabled: true
  provider: tingwu
  reason: processing-failed
  limit: 100
  since: 2h
  rate: 20
  dryRun: true
  extraArgs: [--id, 6f1c]
  activeDeadlineSeconds: 3600
receiver:
  replicaCount: 4
  config:
    port: 9000
    iceSignatureWindowSeconds: 120
    confirmTimeoutSeconds: 3.5
    maxInFlight: 64
    readTimeoutSeconds: 10
    maxHeaderBytes: 32768
  extraEnv: [{name: RECEIVER_ONLY, value: "1"}]
  resources: {requests: {cpu: 200m}, limits: {cpu: "1"}}
  livenessProbe: {periodSeconds: 20}
  readinessProbe: {failureThreshold: 1}
  preStopSleepSeconds: 10
  service: {type: NodePort, port: 80, annotations: {example.com/exposed: "no"}}
  ingress:
    enabled: true
    className: nginx
    hosts: [callbacks.example.com, "*.callbacks.example.org"]
    tlsSecretName: callbacks-tls
    annotations:
      cert-manager.io/cluster-issuer: letsencrypt
      nginx.ingress.kubernetes.io/proxy-send-timeout: "30"
  autoscaling:
    enabled: true
    minReplicas: 3
    maxReplicas: 12
    targetCPUUtilizationPercentage: 60
    targetMemoryUtilizationPercentage: 75
    behavior: {scaleDown: {stabilizationWindowSeconds: 300}}
  podDisruptionBudget: {minAvailable: 2, unhealthyPodEvictionPolicy: IfHealthyBudget}
  networkPolicy:
    from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}]
    extraEgress: [{to: [{ipBlock: {cidr: 10.0.0.10/32}}], ports: [{port: 4317, protocol: TCP}]}]
poller:
  replicaCount: 3
  config:
    intervalSeconds: 30
    maxIntervalSeconds: 600.5
    fastIntervalSeconds: 2
    silence: tingwu=300,aliyun-ice=120
    rate: 2.5
    maxAgeSeconds: 2592000
    notFoundLimit: 5
    concurrency: 4
    leaseSeconds: 90
    reconcileEverySeconds: 30
  vendors:
    tingwuEndpoint: https://tingwu.cn-shanghai.aliyuncs.com
    iceEndpoint: https://ice.cn-beijing.aliyuncs.com
    iceSignature: v2
    tencentCiEndpoint: https://ci.example.com:8443
    tencentCiBucket: media-1250000000
    tencentCiRegion: ap-guangzhou
    tencentCiQueueId: p2e11b0a26d404d029c15f06c48803dde
    metastudioEndpoint: https://metastudio.ap-southeast-1.myhuaweicloud.com
    huaweiProjectId: 0123456789abcdef0123456789abcdef
    timeoutSeconds: 4.5
  extraEnv: [{name: POLLER_ONLY, value: "1"}]
  resources: {requests: {cpu: 20m}, limits: {cpu: 500m}}
  livenessProbe: {periodSeconds: 30}
  readinessProbe: {failureThreshold: 5}
  service: {port: 9200, annotations: {example.com/scrape: "yes"}}
  networkPolicy:
    vendors: {ports: [443, 8443], to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]}
    extraEgress: [{to: [{ipBlock: {cidr: 10.0.0.20/32}}], ports: [{port: 3128, protocol: TCP}]}]
"""
)
HPA: dict[str, Any] = {
    "autoscaling": {"enabled": True, "minReplicas": 3, "targetMemoryUtilizationPercentage": 80}
}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge key by key, anything else (lists included) is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- values.yaml and values.schema.json (no Helm needed) -------------------------------------------------


def test_schema_is_draft07_and_values_yaml_conforms() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.validate(VALUES, SCHEMA, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("override", [EVERYTHING, HPA], ids=["everything", "hpa"])
def test_non_default_values_conform(override: dict[str, Any]) -> None:
    jsonschema.validate(merged(VALUES, override), SCHEMA, cls=jsonschema.Draft7Validator)


def _objects(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, child in node.items():
            yield from _objects(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _objects(child, f"{path}/{i}")


def test_schema_is_strict() -> None:
    """Every object with declared properties refuses others; the open ones are Kubernetes pass-throughs
    (free-form maps, or objects such as a labelSelector whose shape the API server checks)."""
    loose = [
        path
        for path, node in _objects(SCHEMA)
        if "properties" in node and node.get("additionalProperties") is not False
    ]
    assert loose == []
    open_objects = {
        path.rsplit("/", 1)[-1]
        for path, node in _objects(SCHEMA)
        if "properties" not in node and "additionalProperties" not in node
    }
    assert open_objects <= {"global", "k8sObject", "items"}, open_objects


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"replicas": 2}, "Additional properties are not allowed ('replicas' was unexpected)"),
        ({"config": {"prefetchCount": 10}}, "'prefetchCount' was unexpected"),
        ({"config": {"eventsQueue": "speechjobs.events"}}, "'eventsQueue' was unexpected"),
        ({"prometheusRule": {"rules": []}}, "'rules' was unexpected"),
        ({"image": {"name": "speechjobs"}}, "'name' was unexpected"),
        ({"keda": {"trigger": {}}}, "'trigger' was unexpected"),
        ({"securityContext": {"runAsRoot": True}}, "'runAsRoot' was unexpected"),
        ({"replicaCount": "2"}, "'2' is not of type 'integer'"),
        ({"config": {"prefetch": 1.5}}, "1.5 is not of type 'integer'"),
        ({"config": {"providers": "tingwu"}}, "'tingwu' is not of type 'array'"),
        ({"dlqReplay": {"enabled": "yes"}}, "'yes' is not of type 'boolean'"),
        ({"config": {"queueType": "lazy"}}, "'lazy' is not one of ['quorum', 'classic']"),
        ({"config": {"logFormat": "xml"}}, "'xml' is not one of ['json', 'text']"),
        ({"config": {"providers": ["azure"]}}, "'azure' is not one of"),
        ({"dlqReplay": {"provider": "azure"}}, "'azure' is not one of"),
        ({"image": {"pullPolicy": "Sometimes"}}, "'Sometimes' is not one of"),
        ({"config": {"maxDeliveries": 0}}, "0 is less than the minimum of 1"),
        ({"config": {"eventsUnroutedMaxLength": 0}}, "0 is less than the minimum of 1"),
        ({"config": {"maxBytesInFlight": 1048575}}, "1048575 is less than the minimum of 1048576"),
        ({"config": {"maxBytesInFlight": "64Mi"}}, "'64Mi' is not of type 'integer'"),
        ({"config": {"maxMembers": 15}}, "15 is less than the minimum of 16"),
        ({"config": {"maxJobsPerMessage": 0}}, "0 is less than the minimum of 1"),
        ({"config": {"maxStringBytes": 255}}, "255 is less than the minimum of 256"),
        ({"config": {"maxResults": 0}}, "0 is less than the minimum of 1"),
        ({"resources": {"limits": {"memory": "lots"}}}, "'lots' does not match"),
        ({"config": {"mongodbWriteConcern": "all"}}, "'all' does not match"),
        ({"config": {"mongodbWriteConcern": 0}}, "0 is less than the minimum of 1"),
        ({"config": {"mongodbJournal": "yes"}}, "'yes' is not of type 'boolean'"),
        ({"config": {"shutdownGraceSeconds": 0}}, "0 is less than or equal to the minimum of 0"),
        ({"config": {"httpPort": 70000}}, "70000 is greater than the maximum of 65535"),
        ({"existingSecret": {"amqpUrlKey": ""}}, "should be non-empty"),
        ({"serviceMonitor": {"interval": "often"}}, "'often' does not match"),
        ({"prometheusRule": {"interval": "often"}}, "'often' is not valid under any of the given schemas"),
        ({"prometheusRule": {"runbookBaseUrl": "docs"}}, "'docs' does not match"),
        ({"podDisruptionBudget": {"maxUnavailable": "half"}}, "'half' does not match"),
        ({"existingSecret": {"callbackTokensKey": ""}}, "should be non-empty"),
        ({"receiver": {"replicas": 2}}, "'replicas' was unexpected"),
        ({"receiver": {"enabled": "yes"}}, "'yes' is not of type 'boolean'"),
        ({"receiver": {"config": {"callbackTokens": "tingwu=t"}}}, "'callbackTokens' was unexpected"),
        ({"receiver": {"config": {"maxHeaderBytes": 512}}}, "512 is less than the minimum of 1024"),
        (
            {"receiver": {"config": {"confirmTimeoutSeconds": 0}}},
            "0 is less than or equal to the minimum of 0",
        ),
        ({"receiver": {"config": {"port": 0}}}, "0 is less than the minimum of 1"),
        ({"receiver": {"ingress": {"tls": [{"secretName": "x"}]}}}, "'tls' was unexpected"),
        ({"receiver": {"ingress": {"hosts": ["https://cb.example.com"]}}}, "does not match"),
        ({"receiver": {"networkPolicy": {"enabled": True}}}, "'enabled' was unexpected"),
        ({"receiver": {"autoscaling": {"targetCpu": 50}}}, "'targetCpu' was unexpected"),
        ({"receiver": {"podDisruptionBudget": {"maxUnavailable": "half"}}}, "'half' does not match"),
        ({"receiver": {"service": {"type": "ExternalName"}}}, "'ExternalName' is not one of"),
        ({"receiver": {"preStopSleepSeconds": -1}}, "-1 is less than the minimum of 0"),
        ({"poller": {"replicaCount": 0}}, "0 is less than the minimum of 1"),
        ({"poller": {"replicas": 2}}, "'replicas' was unexpected"),
        ({"poller": {"config": {"interval": 60}}}, "'interval' was unexpected"),
        ({"poller": {"vendors": {"aliyunEndpoint": "https://x"}}}, "'aliyunEndpoint' was unexpected"),
        ({"poller": {"networkPolicy": {"from": []}}}, "'from' was unexpected"),
        ({"poller": {"enabled": "yes"}}, "'yes' is not of type 'boolean'"),
        ({"poller": {"config": {"concurrency": 0}}}, "0 is less than the minimum of 1"),
        ({"poller": {"config": {"notFoundLimit": 1.5}}}, "1.5 is not of type 'integer'"),
        ({"poller": {"config": {"leaseSeconds": 0}}}, "0 is less than or equal to the minimum of 0"),
        ({"poller": {"config": {"rate": "0"}}}, "'0' does not match"),
        ({"poller": {"config": {"rate": 0}}}, "0 is less than or equal to the minimum of 0"),
        ({"poller": {"config": {"silence": "azure=60"}}}, "'azure=60' does not match"),
        ({"poller": {"config": {"silence": "tingwu=60,"}}}, "'tingwu=60,' does not match"),
        ({"poller": {"vendors": {"iceSignature": "v1"}}}, "'v1' is not one of ['v3', 'v2']"),
        ({"poller": {"vendors": {"tingwuEndpoint": "tingwu.example.com"}}}, "does not match"),
        ({"poller": {"vendors": {"iceEndpoint": "https://ice.example.com/v1"}}}, "does not match"),
        ({"poller": {"vendors": {"tencentCiBucket": "media"}}}, "does not match"),
        ({"poller": {"vendors": {"timeoutSeconds": 0}}}, "0 is less than or equal to the minimum of 0"),
        ({"poller": {"networkPolicy": {"vendors": {"ports": []}}}}, "should be non-empty"),
        ({"existingSecret": {"tencentSecretKeyKey": ""}}, "should be non-empty"),
    ],
)
def test_schema_rejects(override: dict[str, Any], message: str) -> None:
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.validate(merged(VALUES, override), SCHEMA, cls=jsonschema.Draft7Validator)
    assert message in caught.value.message


def test_every_value_is_commented() -> None:
    """Each key in values.yaml has a comment right above it, unless an ancestor's `# --` comment
    documents the whole object (resources, security contexts)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented_whole: list[tuple[int, bool]] = []  # (indent, described as a whole) of the open keys
    bare: list[str] = []
    previous = ""
    for line in lines:
        key = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if key:
            indent = len(key[1])
            documented_whole = [(i, whole) for i, whole in documented_whole if i < indent]
            if not any(whole for _, whole in documented_whole) and not previous.startswith("#"):
                bare.append(line)
            documented_whole.append((indent, previous.startswith("# --")))
        if line.strip():
            previous = line.strip()
    assert bare == []


def test_readme_lists_every_documented_value() -> None:
    """The README's values table has a row for each key with a `# --` comment in values.yaml."""
    documented: list[str] = []
    path: list[tuple[int, str]] = []
    described = False
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            described = described or stripped.startswith("# --")
            continue
        key = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if key:
            path = [(i, k) for i, k in path if i < len(key[1])] + [(len(key[1]), key[2])]
            if described:
                documented.append(".".join(k for _, k in path))
        described = False
    readme = (CHART / "README.md").read_text()
    assert "receiver.ingress.hosts" in documented
    assert [k for k in documented if f"\n| `{k}` | " not in readme] == []


# --- helm-sdkpy: lint ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm_sdkpy() -> Any:
    return pytest.importorskip(
        "helm_sdkpy",
        reason="helm-sdkpy is not installed: .venv/bin/pip install --ignore-requires-python helm-sdkpy",
    )


async def lint(helm_sdkpy: Any, chart: Path) -> dict[str, Any]:
    result: dict[str, Any] = await helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(chart))
    return result


def chart_with_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    """A copy of the chart whose values.yaml is `values`: helm-sdkpy's Lint takes no values file."""
    chart = tmp_path / CHART.name
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return chart


def problems(result: dict[str, Any]) -> list[dict[str, Any]]:
    # helm-sdkpy serializes each message's Go error as {}: the severity and the path are what is left.
    return [m for m in result["Messages"] if m["Severity"] >= WARNING]


async def test_lint_with_default_values(helm_sdkpy: Any) -> None:
    result = await lint(helm_sdkpy, CHART)
    assert result["TotalChartsLinted"] == 1
    assert problems(result) == [], result
    assert not result["Errors"], result


@pytest.mark.parametrize("override", [EVERYTHING, HPA], ids=["everything", "hpa"])
async def test_lint_with_non_default_values(
    helm_sdkpy: Any, tmp_path: Path, override: dict[str, Any]
) -> None:
    result = await lint(helm_sdkpy, chart_with_values(tmp_path, merged(VALUES, override)))
    assert problems(result) == [], result
    assert not result["Errors"], result


@pytest.mark.parametrize(
    "override",
    [
        {"bogus": True},
        {"config": {"queueType": "lazy"}},
        {"config": {"prefetch": "many"}},
        {"receiver": {"ingress": {"bogus": True}}},
        {"poller": {"replicaCount": 0}},
    ],
    ids=["unknown-key", "bad-enum", "wrong-type", "unknown-receiver-key", "no-poller-replica"],
)
async def test_lint_enforces_the_schema(helm_sdkpy: Any, tmp_path: Path, override: dict[str, Any]) -> None:
    result = await lint(helm_sdkpy, chart_with_values(tmp_path, merged(VALUES, override)))
    assert {"Severity": ERROR, "Path": "values.yaml"} in [
        {"Severity": m["Severity"], "Path": m["Path"]} for m in result["Messages"]
    ], result


# --- helm-python-sdk: render -------------------------------------------------------------------------

Manifests = dict[tuple[str, str], dict[str, Any]]


def render(helm_python: Any, values: dict[str, Any] | None = None, **release: Any) -> Manifests:
    """Render like `helm template prod helm/speechjobs -n speech`, keyed by (kind, name)."""
    options = {"name": "prod", "namespace": "speech", "revision": 1, "is_install": True} | release
    files: dict[str, str] = helm_python.Chart.load(CHART).render(values, **options)
    manifests: Manifests = {}
    for path, text in files.items():
        if path.endswith(".yaml"):
            for doc in yaml.safe_load_all(text):
                if doc:
                    manifests[doc["kind"], doc["metadata"]["name"]] = doc
    return manifests


@pytest.fixture(scope="module")
def default(helm_python: Any) -> Manifests:
    return render(helm_python)


@pytest.fixture(scope="module")
def everything(helm_python: Any) -> Manifests:
    return render(helm_python, EVERYTHING, revision=7, is_install=False, is_upgrade=True)


def container(manifests: Manifests, kind: str, name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = manifests[kind, name]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def secret_refs(c: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}


def test_default_resources(default: Manifests) -> None:
    assert sorted(default) == [
        ("ConfigMap", "prod-speechjobs"),
        ("Deployment", "prod-speechjobs"),
        ("Deployment", "prod-speechjobs-poller"),
        ("Deployment", "prod-speechjobs-receiver"),
        ("PodDisruptionBudget", "prod-speechjobs"),
        ("PodDisruptionBudget", "prod-speechjobs-receiver"),
        ("Service", "prod-speechjobs"),
        ("Service", "prod-speechjobs-poller"),
        ("Service", "prod-speechjobs-receiver"),
        ("ServiceAccount", "prod-speechjobs"),
    ]
    pdb = default["PodDisruptionBudget", "prod-speechjobs"]["spec"]
    assert pdb["maxUnavailable"] == 1
    assert "minAvailable" not in pdb
    assert pdb["selector"] == default["Deployment", "prod-speechjobs"]["spec"]["selector"]


POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = POD_SECURITY | {
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def test_default_deployment(default: Manifests) -> None:
    deployment = default["Deployment", "prod-speechjobs"]
    pod = deployment["spec"]["template"]["spec"]
    c = container(default, "Deployment", "prod-speechjobs")
    assert deployment["spec"]["replicas"] == 2
    assert c["image"] == f"speechjobs:{CHART_META['appVersion']}"
    assert c["args"] == ["run"]
    assert {k: pod["securityContext"].get(k) for k in POD_SECURITY} == POD_SECURITY
    assert {k: c["securityContext"].get(k) for k in CONTAINER_SECURITY} == CONTAINER_SECURITY
    assert pod["automountServiceAccountToken"] is False
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["terminationGracePeriodSeconds"] == 20 + 10
    assert c["envFrom"] == [{"configMapRef": {"name": "prod-speechjobs"}}]
    assert secret_refs(c) == {
        "SPEECHJOBS_AMQP_URL": {"name": "prod-speechjobs", "key": "amqp-url"},
        "SPEECHJOBS_MONGODB_URL": {"name": "prod-speechjobs", "key": "mongodb-url"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)
    spread = pod["topologySpreadConstraints"][0]
    assert spread["labelSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}


def service_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: dict[str, str]) -> Settings:
    """The settings the service builds from the ConfigMap (and nothing else: no .env, no other vars)."""
    for name in [n for n in os.environ if n.startswith("SPEECHJOBS_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# The vendors' credentials, which only the poller's pods get.
VENDOR_SECRETS = {
    "alibaba_access_key_id",
    "alibaba_access_key_secret",
    "alibaba_security_token",
    "tencent_secret_id",
    "tencent_secret_key",
    "huawei_access_key",
    "huawei_secret_key",
}
# Settings the pods get from the existing Secret, never from the ConfigMap: the SecretStr fields, and the
# URL ICE signs, which holds the aliyun-ice callback token.
SECRET_SETTINGS = {
    "amqp_url",
    "mongodb_url",
    "callback_tokens",
    "ice_auth_keys",
    "ice_callback_url",
} | VENDOR_SECRETS
# Settings without a default in the service (None): in the ConfigMap only when their value is set, as an
# empty value would count as set.
UNSET_BY_DEFAULT = {
    "tencent_ci_endpoint",
    "tencent_ci_bucket",
    "tencent_ci_region",
    "tencent_ci_queue_id",
    "huawei_project_id",
}


def secret_typed(settings: Settings) -> set[str]:
    return {
        name
        for section in dataclasses.fields(settings)
        for name, field in type(getattr(settings, section.name)).model_fields.items()
        if "SecretStr" in str(field.annotation)
    }


def setting_names(settings: Settings) -> list[str]:
    """Every field of every section; the variable of field `x` is SPEECHJOBS_X whatever its section."""
    return [
        name
        for section in dataclasses.fields(settings)
        for name in type(getattr(settings, section.name)).model_fields
    ]


def non_secret(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        section.name: getattr(settings, section.name).model_dump(exclude=SECRET_SETTINGS)
        for section in dataclasses.fields(settings)
    }


def test_configmap_covers_every_setting_and_defaults_match_the_service(
    default: Manifests, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data: dict[str, str] = default["ConfigMap", "prod-speechjobs"]["data"]
    assert all(isinstance(v, str) for v in data.values())
    built_in = service_env(monkeypatch, tmp_path, {})
    names = setting_names(built_in)
    assert len(names) == len(set(names))  # one variable, one field
    assert set(names) >= SECRET_SETTINGS >= secret_typed(built_in)  # no secret ends up in the ConfigMap
    assert set(data) == {
        f"SPEECHJOBS_{name.upper()}" for name in set(names) - SECRET_SETTINGS - UNSET_BY_DEFAULT
    }
    assert set(names) >= UNSET_BY_DEFAULT
    from_chart = service_env(monkeypatch, tmp_path, data)
    assert non_secret(from_chart) == non_secret(built_in)


def test_configmap_non_default_values_parse(
    everything: Manifests, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data: dict[str, str] = everything["ConfigMap", "sj"]["data"]
    assert data["SPEECHJOBS_PROVIDERS"] == "tingwu,aliyun-ice"
    assert data["SPEECHJOBS_MAX_BODY_BYTES"] == "2097152"  # not 2.097152e+06
    assert data["SPEECHJOBS_MAX_BYTES_IN_FLIGHT"] == "134217728"  # not 1.34217728e+08
    assert data["SPEECHJOBS_EVENTS_UNROUTED"] == ""  # present and empty: the service declares none
    assert data["SPEECHJOBS_EVENTS_UNROUTED_MAX_LENGTH"] == "2500000"
    assert data["SPEECHJOBS_MONGODB_WRITE_CONCERN"] == "2"  # written unquoted in YAML, not "2.0"
    assert data["SPEECHJOBS_MONGODB_JOURNAL"] == "false"
    assert "SPEECHJOBS_EVENTS_QUEUE" not in data
    settings = service_env(monkeypatch, tmp_path, data)
    assert settings.consumer.providers == ("tingwu", "aliyun-ice")
    assert settings.consumer.queue_type == "classic"
    assert settings.consumer.batch_linger_ms == 2.5
    assert settings.consumer.raw_retention_days == 0.5
    assert settings.amqp.events_unrouted == ""
    assert settings.amqp.events_unrouted_max_length == 2_500_000
    assert settings.mongodb.mongodb_write_concern == "2"
    assert settings.mongodb.write_concern_w() == 2
    assert settings.mongodb.mongodb_journal is False
    assert settings.limits.max_body_bytes == 2_097_152
    assert settings.consumer.max_bytes_in_flight == 128 << 20
    assert (settings.limits.max_members, settings.limits.max_jobs_per_message) == (50_000, 20)
    assert (settings.limits.max_string_bytes, settings.limits.max_results) == (65_536, 1000)
    assert settings.runtime.shutdown_grace_s == 45.5
    assert settings.runtime.http_port == 9090
    assert (settings.runtime.log_format, settings.runtime.log_level) == ("text", "DEBUG")
    receiver = settings.receiver
    assert (receiver.receiver_port, receiver.ice_signature_window_s) == (9000, 120)
    assert (receiver.receiver_confirm_timeout_s, receiver.receiver_read_timeout_s) == (3.5, 10)
    assert (receiver.receiver_max_in_flight, receiver.receiver_max_header_bytes) == (64, 32768)
    assert data["SPEECHJOBS_POLL_MAX_AGE_S"] == "2592000"  # not 2.592e+06
    assert data["SPEECHJOBS_POLL_RATE"] == "2.5"  # a number in the values: every provider
    poller = settings.poller
    assert (poller.poll_interval_s, poller.poll_max_interval_s, poller.poll_fast_interval_s) == (30, 600.5, 2)
    assert poller.poll_silence == {
        "tingwu": 300,
        "tencent-ci": 600,
        "huawei-metastudio": 600,
        "aliyun-ice": 120,
    }
    assert set(poller.poll_rate.values()) == {2.5}
    assert (poller.poll_max_age_s, poller.poll_not_found_limit, poller.poll_concurrency) == (2_592_000, 5, 4)
    assert (poller.poll_lease_s, poller.poll_reconcile_every_s) == (90, 30)
    vendors = settings.vendors
    assert vendors.tingwu_endpoint == "https://tingwu.cn-shanghai.aliyuncs.com"
    assert (vendors.ice_endpoint, vendors.ice_signature) == ("https://ice.cn-beijing.aliyuncs.com", "v2")
    assert vendors.tencent_ci_endpoint == "https://ci.example.com:8443"
    assert (vendors.tencent_ci_bucket, vendors.tencent_ci_region) == ("media-1250000000", "ap-guangzhou")
    assert vendors.tencent_ci_queue_id == "p2e11b0a26d404d029c15f06c48803dde"
    assert vendors.metastudio_endpoint == "https://metastudio.ap-southeast-1.myhuaweicloud.com"
    assert vendors.huawei_project_id == "0123456789abcdef0123456789abcdef"
    assert vendors.vendor_timeout_s == 4.5


def test_everything_deployment(everything: Manifests) -> None:
    deployment = everything["Deployment", "sj"]
    pod = deployment["spec"]["template"]["spec"]
    c = container(everything, "Deployment", "sj")
    assert "replicas" not in deployment["spec"]  # KEDA owns the count
    assert c["image"] == "registry.example.com/platform/speechjobs:0.2.0@sha256:" + "0123456789abcdef" * 4
    assert pod["terminationGracePeriodSeconds"] == math.ceil(45.5) + 10
    assert c["ports"][0]["containerPort"] == 9090
    assert secret_refs(c) == {
        "SPEECHJOBS_AMQP_URL": {"name": "speechjobs-credentials", "key": "amqp"},
        "SPEECHJOBS_MONGODB_URL": {"name": "speechjobs-credentials", "key": "mongo"},
    }
    assert {"name": "TZ", "value": "UTC"} in c["env"]
    assert {"name": "tls", "mountPath": "/etc/speechjobs/tls", "readOnly": True} in c["volumeMounts"]
    assert {"name": "tls", "secret": {"secretName": "speechjobs-tls"}} in pod["volumes"]
    assert pod["serviceAccountName"] == "speechjobs-sa"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "high"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == EVERYTHING["tolerations"]
    assert pod["affinity"] == EVERYTHING["affinity"]
    zone, host = pod["topologySpreadConstraints"]
    assert zone["labelSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    assert host["labelSelector"] == {"matchLabels": {"team": "platform"}}
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "platform"
    assert template["annotations"]["example.com/team"] == "platform"
    assert everything["ServiceAccount", "speechjobs-sa"]["metadata"]["annotations"] == {
        "iam.example.com/role": "speechjobs"
    }


# --- memory, derived from config.maxBytesInFlight ----------------------------------------------------

MiB = 1 << 20


def derived_limit(max_bytes_in_flight: int) -> str:
    """The rule of speechjobs.derivedMemoryLimit: 192 MiB of baseline plus 4 bytes per byte in flight,
    rounded up to a whole MiB."""
    return f"{192 + math.ceil(4 * max_bytes_in_flight / MiB)}Mi"


def resources(manifests: Manifests, name: str = "prod-speechjobs") -> dict[str, Any]:
    res: dict[str, Any] = container(manifests, "Deployment", name)["resources"]
    return res


def test_default_memory_is_derived_from_the_service_default(default: Manifests) -> None:
    assert "memory" not in VALUES["resources"]["limits"]
    assert "memory" not in VALUES["resources"]["requests"]
    service_default = ConsumerSettings.model_fields["max_bytes_in_flight"].default
    assert VALUES["config"]["maxBytesInFlight"] == service_default == 64 * MiB
    assert resources(default) == {
        "limits": {"memory": "448Mi"},  # 192 + 4 * 64
        "requests": {"cpu": "100m", "memory": "448Mi"},  # Guaranteed memory
    }
    assert derived_limit(64 * MiB) == "448Mi"


@pytest.mark.parametrize(
    ("max_bytes_in_flight", "limit"),
    [(128 * MiB, "704Mi"), (1 * MiB, "196Mi"), (1 * MiB + 1, "197Mi"), (1 << 40, "4194496Mi")],
    ids=["128MiB", "minimum", "rounded-up", "1TiB"],
)
def test_memory_follows_max_bytes_in_flight(helm_python: Any, max_bytes_in_flight: int, limit: str) -> None:
    assert derived_limit(max_bytes_in_flight) == limit
    res = resources(render(helm_python, {"config": {"maxBytesInFlight": max_bytes_in_flight}}))
    assert res["limits"] == {"memory": limit}
    assert res["requests"] == {"cpu": "100m", "memory": limit}


def test_everything_memory(everything: Manifests) -> None:
    assert resources(everything, "sj")["limits"] == {"memory": "704Mi"}  # maxBytesInFlight 128 MiB


def test_explicit_memory_limit_wins(helm_python: Any) -> None:
    res = resources(render(helm_python, {"resources": {"limits": {"memory": "1Gi", "cpu": "2"}}}))
    assert res == {"limits": {"memory": "1Gi", "cpu": "2"}, "requests": {"cpu": "100m", "memory": "1Gi"}}
    # Whatever maxBytesInFlight says.
    res = resources(
        render(
            helm_python,
            {"config": {"maxBytesInFlight": 512 * MiB}, "resources": {"limits": {"memory": "900Mi"}}},
        )
    )
    assert res["limits"]["memory"] == res["requests"]["memory"] == "900Mi"


def test_explicit_memory_request_wins(helm_python: Any) -> None:
    res = resources(render(helm_python, {"resources": {"requests": {"memory": "256Mi"}}}))
    assert res == {"limits": {"memory": "448Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}


def test_memory_is_derived_without_any_resources(helm_python: Any) -> None:
    # `resources: null` deletes the chart's defaults (Helm's coalescing); the memory is still bounded.
    res = resources(render(helm_python, {"resources": None}))
    assert res == {"limits": {"memory": "448Mi"}, "requests": {"memory": "448Mi"}}


def test_render_rejects_max_bytes_in_flight_below_one_mib(helm_python: Any) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="maxBytesInFlight"):
        render(helm_python, {"config": {"maxBytesInFlight": MiB - 1}})


def test_checksum_follows_the_config(helm_python: Any, default: Manifests) -> None:
    def checksum(manifests: Manifests, name: str) -> str:
        annotations = manifests["Deployment", name]["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    changed = render(helm_python, {"config": {"logLevel": "DEBUG"}})
    assert checksum(changed, "prod-speechjobs") != checksum(default, "prod-speechjobs")
    assert checksum(render(helm_python), "prod-speechjobs") == checksum(default, "prod-speechjobs")


def test_keda_scales_on_the_inbound_queue(everything: Manifests) -> None:
    scaled = everything["ScaledObject", "sj"]["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sj"}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 20)
    assert scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == EVERYTHING["keda"]["behavior"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"] == {
        "protocol": "amqp",
        "queueName": "jobs.inbound",
        "mode": "QueueLength",
        "value": "1000",
        "activationValue": "5",
        "vhostName": "speech",
    }
    auth = everything["TriggerAuthentication", trigger["authenticationRef"]["name"]]["spec"]
    assert auth["secretTargetRef"] == [{"parameter": "host", "name": "speechjobs-credentials", "key": "amqp"}]
    assert ("HorizontalPodAutoscaler", "sj") not in everything  # the receiver's own HPA is there


def test_hpa(helm_python: Any) -> None:
    manifests = render(helm_python, HPA)
    assert "replicas" not in manifests["Deployment", "prod-speechjobs"]["spec"]
    hpa = manifests["HorizontalPodAutoscaler", "prod-speechjobs"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"]["name"] == "prod-speechjobs"
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in spec["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    assert not any(kind == "ScaledObject" for kind, _ in manifests)


def test_hpa_and_keda_are_exclusive(helm_python: Any) -> None:
    with pytest.raises(helm_python.HelmRenderError, match="exclusive"):
        render(helm_python, merged(EVERYTHING, HPA))


def test_render_enforces_the_schema(helm_python: Any) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="additional properties 'replicas' not allowed"):
        render(helm_python, {"replicas": 3})


def test_dlq_replay_job(everything: Manifests) -> None:
    job = everything["Job", "sj-dlq-replay-7"]
    c = container(everything, "Job", "sj-dlq-replay-7")
    assert c["args"] == [
        "dlq",
        "replay",
        "--provider",
        "tingwu",
        "--reason",
        "processing-failed",
        "--since",
        "2h",
        "--limit",
        "100",
        "--rate",
        "20",
        "--dry-run",
        "--id",
        "6f1c",
    ]
    assert c["image"] == container(everything, "Deployment", "sj")["image"]
    assert c["envFrom"] == [{"configMapRef": {"name": "sj"}}]
    assert secret_refs(c)["SPEECHJOBS_AMQP_URL"] == {"name": "speechjobs-credentials", "key": "amqp"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 3600)
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    # The replay pod is not a consumer: the Deployment, Service and PDB selectors must not pick it.
    pod_labels = spec["template"]["metadata"]["labels"]
    selector = everything["Deployment", "sj"]["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod_labels.items()


def test_dlq_replay_job_minimal_args(helm_python: Any, default: Manifests) -> None:
    assert not any(kind == "Job" for kind, _ in default)
    manifests = render(helm_python, {"dlqReplay": {"enabled": True}}, revision=2)
    assert container(manifests, "Job", "prod-speechjobs-dlq-replay-2")["args"] == ["dlq", "replay"]


def test_metrics_service_and_service_monitor(everything: Manifests) -> None:
    service = everything["Service", "sj"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9100, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == everything["Deployment", "sj"]["spec"]["selector"]["matchLabels"]
    monitor = everything["ServiceMonitor", "sj"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")


def test_pdb_min_available(everything: Manifests) -> None:
    spec = everything["PodDisruptionBudget", "sj"]["spec"]
    assert spec["minAvailable"] == 1
    assert "maxUnavailable" not in spec
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_network_policy(everything: Manifests) -> None:
    policy = everything["NetworkPolicy", "sj"]["spec"]
    # It covers the replay Job too, which needs the same egress.
    job_labels = everything["Job", "sj-dlq-replay-7"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= job_labels.items()
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == EVERYTHING["networkPolicy"]["metricsFrom"]
    rabbitmq, mongodb, dns = policy["egress"]
    assert rabbitmq["ports"] == [{"port": 5671, "protocol": "TCP"}]
    assert rabbitmq["to"] == EVERYTHING["networkPolicy"]["rabbitmq"]["to"]
    assert mongodb["ports"] == [{"port": 27017, "protocol": "TCP"}]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_network_policy_defaults(helm_python: Any) -> None:
    policy = render(helm_python, {"networkPolicy": {"enabled": True}})["NetworkPolicy", "prod-speechjobs"]
    rabbitmq, mongodb, _ = policy["spec"]["egress"]
    assert [p["port"] for p in rabbitmq["ports"]] == [5672, 5671]
    assert [p["port"] for p in mongodb["ports"]] == [27017]
    assert "to" not in rabbitmq
    assert "from" not in policy["spec"]["ingress"][0]


# --- PrometheusRule ---------------------------------------------------------------------------------

ALERTS = [
    "SpeechjobsUnroutedEvents",
    "SpeechjobsDeadLetters",
    "SpeechjobsNotReady",
    "SpeechjobsInboundStalled",
    "SpeechjobsPublishFailing",
    "SpeechjobsReceiverNotReady",
    "SpeechjobsReceiverErrors",
    "SpeechjobsReceiverAuthFailures",
    "SpeechjobsPollerNotReady",
    "SpeechjobsPollerCredentialsRejected",
    "SpeechjobsPollerThrottled",
    "SpeechjobsJobsPastPollingAge",
]
# Critical: the consumer stops moving messages. The rest can wait for working hours.
CRITICAL = {"SpeechjobsInboundStalled", "SpeechjobsPublishFailing"}
RUNBOOKS = "https://github.com/speechjobs/speechjobs/blob/main/docs"
# What Prometheus itself fills in when an alert fires; anything else in braces would be a Helm leftover.
PROMETHEUS_TEMPLATE = re.compile(r"\{\{ \$(value|labels\.\w+)( \| humanize(Percentage)?)? \}\}")


def rule_group(manifests: Manifests, name: str) -> dict[str, Any]:
    rule = manifests["PrometheusRule", name]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    (group,) = rule["spec"]["groups"]
    assert isinstance(group, dict)
    return group


def alerts(manifests: Manifests, name: str) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rule_group(manifests, name)["rules"]}


@pytest.fixture(scope="module")
def with_rule(helm_python: Any) -> Manifests:
    return render(helm_python, {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}})


def test_prometheus_rule_is_off_by_default(default: Manifests) -> None:
    assert VALUES["prometheusRule"]["enabled"] is False
    assert not any(kind == "PrometheusRule" for kind, _ in default)


def test_prometheus_rule_alerts(with_rule: Manifests) -> None:
    rule = with_rule["PrometheusRule", "prod-speechjobs"]
    assert rule["metadata"]["labels"] == with_rule["ConfigMap", "prod-speechjobs"]["metadata"]["labels"]
    group = rule_group(with_rule, "prod-speechjobs")
    assert group["name"] == "prod-speechjobs"
    assert "interval" not in group  # Prometheus' global evaluation_interval
    found = alerts(with_rule, "prod-speechjobs")
    assert list(found) == ALERTS
    for name, alert in found.items():
        assert alert["labels"] == {"severity": "critical" if name in CRITICAL else "warning"}
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        assert annotations["summary"]
        assert annotations["description"]
        assert annotations["runbook_url"] == f"{RUNBOOKS}/runbooks.md#{name.lower()}"
        leftovers = PROMETHEUS_TEMPLATE.sub("", " ".join(annotations.values()))
        assert not re.search(r"\{\{|\}\}", leftovers), annotations
    # The service's own metrics are the ServiceMonitor's targets: job is the Service's name.
    mine = '{job="prod-speechjobs", namespace="speech"}'
    unrouted, dead_letters, not_ready = (found[name] for name in ALERTS[:3])
    assert f"speechjobs_events_unrouted{mine}" in unrouted["expr"]
    assert unrouted["for"] == "15m"
    assert (
        "{{ $value }} events wait in queue speechjobs.events.unrouted"
        in unrouted["annotations"]["description"]
    )
    assert f"increase(speechjobs_dead_letters_total{mine}[15m])" in dead_letters["expr"]
    assert f"speechjobs_dead_letters_total{mine} offset 15m" in dead_letters["expr"]  # a reason's first one
    assert "{{ $labels.reason }}" in dead_letters["annotations"]["description"]
    assert not_ready["for"] == "15m"
    deployment = '{namespace="speech", deployment="prod-speechjobs"}'
    assert f"kube_deployment_status_replicas_available{deployment}" in not_ready["expr"]
    assert f"kube_deployment_spec_replicas{deployment}" in not_ready["expr"]
    assert ("Deployment", "prod-speechjobs") in with_rule
    # The receiver's and the poller's series are their own ServiceMonitors' targets, their Deployments theirs.
    for component in ("receiver", "poller"):
        own = [a for n, a in found.items() if component.title() in n and not n.endswith("NotReady")]
        assert own
        assert all(f'job="prod-speechjobs-{component}", namespace="speech"' in a["expr"] for a in own)
        not_ready = found[f"Speechjobs{component.title()}NotReady"]
        assert f'deployment="prod-speechjobs-{component}"' in not_ready["expr"]
        assert ("Deployment", f"prod-speechjobs-{component}") in with_rule
    past_age = found["SpeechjobsJobsPastPollingAge"]
    poller = 'job="prod-speechjobs-poller", namespace="speech"'
    assert f'speechjobs_polls_stopped_total{{{poller}, reason="max-age"}}' in past_age["expr"]
    assert "172800 s" in past_age["annotations"]["description"]


def exported_metrics() -> set[str]:
    """The sample names consumer/runtime/metrics.py exposes on /metrics."""
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
    return {
        family.name + suffix
        for name in metrics.__all__
        for family in getattr(metrics, name).describe()
        for suffix in suffixes[family.type]
    }


def test_prometheus_rule_reads_metrics_the_service_exports(with_rule: Manifests) -> None:
    used = {
        metric
        for alert in alerts(with_rule, "prod-speechjobs").values()
        for metric in re.findall(r"\b(speechjobs_\w+)\{", alert["expr"])
    }
    assert used == {
        "speechjobs_events_unrouted",
        "speechjobs_dead_letters_total",
        "speechjobs_in_flight_messages",
        "speechjobs_inbound_ready_messages",
        "speechjobs_messages_total",
        "speechjobs_publish_failures_total",
        "speechjobs_receiver_requests_total",
        "speechjobs_receiver_auth_failures_total",
        "speechjobs_polls_total",
        "speechjobs_polls_stopped_total",
    }
    assert used <= exported_metrics()


def test_prometheus_rule_non_default_values(everything: Manifests) -> None:
    assert everything["PrometheusRule", "sj"]["metadata"]["labels"]["release"] == "prometheus"
    assert rule_group(everything, "sj")["interval"] == "1m"
    found = alerts(everything, "sj")
    # config.eventsUnrouted is empty: the service declares no unrouted queue, so there is nothing to watch.
    assert list(found) == ALERTS[1:]
    assert {n: a["annotations"]["runbook_url"] for n, a in found.items()} == {
        n: f"https://wiki.example.com/speechjobs/runbooks.md#{n.lower()}" for n in ALERTS[1:]
    }
    assert "2592000 s" in found["SpeechjobsJobsPastPollingAge"]["annotations"]["description"]
    assert 'deployment="sj-receiver"' in found["SpeechjobsReceiverNotReady"]["expr"]
    assert (
        'speechjobs_dead_letters_total{job="sj", namespace="speech"}'
        in found["SpeechjobsDeadLetters"]["expr"]
    )
    assert 'deployment="sj"' in found["SpeechjobsNotReady"]["expr"]


def test_prometheus_rule_needs_to_know_where_the_metrics_are(helm_python: Any) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"needs serviceMonitor\.enabled"):
        render(helm_python, {"prometheusRule": {"enabled": True}})
    manifests = render(helm_python, {"prometheusRule": {"enabled": True, "metricsSelector": 'app="sj"'}})
    assert not any(kind == "ServiceMonitor" for kind, _ in manifests)
    found = alerts(manifests, "prod-speechjobs")
    assert 'speechjobs_events_unrouted{app="sj"}' in found["SpeechjobsUnroutedEvents"]["expr"]
    assert 'speechjobs_dead_letters_total{app="sj"}[15m]' in found["SpeechjobsDeadLetters"]["expr"]
    # The one selector serves the receiver's and the poller's alerts too: their metric names are their own.
    receiver_errors = found["SpeechjobsReceiverErrors"]["expr"]
    assert 'speechjobs_receiver_requests_total{app="sj", status=~"5.."}' in receiver_errors
    credentials = found["SpeechjobsPollerCredentialsRejected"]["expr"]
    assert 'speechjobs_polls_total{app="sj", verdict="auth"}' in credentials
    assert "job=" not in " ".join(a["expr"] for a in found.values())


def test_prometheus_rule_leaves_out_the_alerts_of_disabled_components(helm_python: Any) -> None:
    values = {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "receiver": {"enabled": False},
        "poller": {"enabled": False},
    }
    found = alerts(render(helm_python, values), "prod-speechjobs")
    assert list(found) == [n for n in ALERTS if "Receiver" not in n and "Poll" not in n]


def promtool_or_skip(what: str) -> str:
    """promtool's path. Without it the test fails under CI (CI set), where a skip would hide that the PromQL
    went unchecked, and is skipped elsewhere."""
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = f"promtool is not installed (Debian package prometheus): {what}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return promtool


def test_prometheus_rule_passes_promtool(with_rule: Manifests, everything: Manifests, tmp_path: Path) -> None:
    promtool = promtool_or_skip("the alerts' PromQL was not parsed")
    # Two renders of the chart are two deployments: a file each, or promtool's lint calls them duplicates.
    files, expected = [], []
    for name, (manifests, fullname, count) in {
        "rule": (with_rule, "prod-speechjobs", len(ALERTS)),
        "all": (everything, "sj", len(ALERTS) - 1),  # no unrouted-events queue
    }.items():
        path = tmp_path / f"{name}.yaml"
        group = rule_group(manifests, fullname)
        assert len(group["rules"]) == count
        path.write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
        files.append(str(path))
        expected.append(f"{path}\n  SUCCESS: {len(group['rules'])} rules found")
    checked = subprocess.run(
        [promtool, "check", "rules", "--lint-fatal", *files],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert all(check in output for check in expected), output
    assert "FAILED" not in output, output


# --- the callback receiver ----------------------------------------------------------------------------

RECEIVER = "prod-speechjobs-receiver"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes LabelSelector (matchLabels and matchExpressions) selects these labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        found = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not found:
            return False
    return True


def pod_labels(manifests: Manifests, kind: str, name: str) -> dict[str, str]:
    labels: dict[str, str] = manifests[kind, name]["spec"]["template"]["metadata"]["labels"]
    return labels


def component_objects(manifests: Manifests, component: str) -> list[tuple[str, str]]:
    """Whatever belongs to a component (receiver, poller): by name, or by its component label."""
    return sorted(
        (kind, name)
        for (kind, name), doc in manifests.items()
        if component in name
        or doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    )


def test_default_receiver_deployment(default: Manifests) -> None:
    deployment = default["Deployment", RECEIVER]
    pod = deployment["spec"]["template"]["spec"]
    c = container(default, "Deployment", RECEIVER)
    assert deployment["spec"]["replicas"] == 2
    assert c["image"] == container(default, "Deployment", "prod-speechjobs")["image"]
    assert c["args"] == ["receive"]  # the image's entrypoint is `speechjobs`
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["envFrom"] == [{"configMapRef": {"name": "prod-speechjobs"}}]
    secret = {"name": "prod-speechjobs"}
    assert secret_refs(c) == {
        "SPEECHJOBS_AMQP_URL": secret | {"key": "amqp-url"},
        # Optional: the pods start without them (without tokens every callback is answered 404).
        "SPEECHJOBS_CALLBACK_TOKENS": secret | {"key": "callback-tokens", "optional": True},
        "SPEECHJOBS_ICE_AUTH_KEYS": secret | {"key": "ice-auth-keys", "optional": True},
        "SPEECHJOBS_ICE_CALLBACK_URL": secret | {"key": "ice-callback-url", "optional": True},
    }
    assert not [e["name"] for e in c["env"] if "MONGODB" in e["name"]]  # it never talks to MongoDB
    assert {k: pod["securityContext"].get(k) for k in POD_SECURITY} == POD_SECURITY
    assert {k: c["securityContext"].get(k) for k in CONTAINER_SECURITY} == CONTAINER_SECURITY
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    # Serving on during the preStop pause, then the shutdown grace, then 10 s to close the connection.
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}
    assert pod["terminationGracePeriodSeconds"] == 5 + 20 + 10
    assert pod["terminationGracePeriodSeconds"] > VALUES["config"]["shutdownGraceSeconds"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    consumer = default["Deployment", "prod-speechjobs"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] == consumer["checksum/config"]  # the same ConfigMap
    selector = deployment["spec"]["selector"]
    assert selector["matchLabels"]["app.kubernetes.io/component"] == "receiver"
    assert pod["topologySpreadConstraints"][0]["labelSelector"] == selector


def test_receiver_and_consumer_select_only_their_own_pods(default: Manifests) -> None:
    consumer_pod = pod_labels(default, "Deployment", "prod-speechjobs")
    receiver_pod = pod_labels(default, "Deployment", RECEIVER)
    for kind in ("Deployment", "PodDisruptionBudget"):
        consumer_selector = default[kind, "prod-speechjobs"]["spec"]["selector"]
        receiver_selector = default[kind, RECEIVER]["spec"]["selector"]
        assert selects(consumer_selector, consumer_pod)
        assert not selects(consumer_selector, receiver_pod)
        assert selects(receiver_selector, receiver_pod)
        assert not selects(receiver_selector, consumer_pod)
    assert default["Service", "prod-speechjobs"]["spec"]["selector"].items() <= consumer_pod.items()
    assert not default["Service", RECEIVER]["spec"]["selector"].items() <= consumer_pod.items()
    # The consumer's selector is the one of earlier releases: a Deployment's selector is immutable.
    assert default["Deployment", "prod-speechjobs"]["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "speechjobs",
        "app.kubernetes.io/instance": "prod",
        "app.kubernetes.io/component": "consumer",
    }


def test_receiver_service(default: Manifests) -> None:
    service = default["Service", RECEIVER]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == default["Deployment", RECEIVER]["spec"]["selector"]["matchLabels"]


def test_receiver_pdb(default: Manifests, everything: Manifests) -> None:
    pdb = default["PodDisruptionBudget", RECEIVER]["spec"]
    assert (pdb["maxUnavailable"], pdb["unhealthyPodEvictionPolicy"]) == (1, "AlwaysAllow")
    assert "minAvailable" not in pdb
    assert pdb["selector"] == default["Deployment", RECEIVER]["spec"]["selector"]
    pdb = everything["PodDisruptionBudget", "sj-receiver"]["spec"]
    assert (pdb["minAvailable"], pdb["unhealthyPodEvictionPolicy"]) == (2, "IfHealthyBudget")
    assert "maxUnavailable" not in pdb


def test_receiver_pdb_can_be_disabled(helm_python: Any) -> None:
    manifests = render(helm_python, {"receiver": {"podDisruptionBudget": {"enabled": False}}})
    assert ("PodDisruptionBudget", RECEIVER) not in manifests
    assert ("PodDisruptionBudget", "prod-speechjobs") in manifests


def test_receiver_hpa(default: Manifests, everything: Manifests) -> None:
    assert not any(kind == "HorizontalPodAutoscaler" for kind, _ in default)
    assert "replicas" not in everything["Deployment", "sj-receiver"]["spec"]  # the HPA owns the count
    hpa = everything["HorizontalPodAutoscaler", "sj-receiver"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sj-receiver"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 12)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in spec["metrics"]}
    assert targets == {"cpu": 60, "memory": 75}
    assert spec["behavior"] == EVERYTHING["receiver"]["autoscaling"]["behavior"]
    # The consumer's autoscaler is still KEDA's, on the queue.
    assert everything["ScaledObject", "sj"]["spec"]["scaleTargetRef"]["name"] == "sj"


def test_receiver_hpa_bounds(helm_python: Any) -> None:
    bad = {"receiver": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 4}}}
    with pytest.raises(helm_python.HelmRenderError, match=r"receiver\.autoscaling\.minReplicas"):
        render(helm_python, bad)


def test_receiver_ingress(everything: Manifests) -> None:
    ingress = everything["Ingress", "sj-receiver"]
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    spec = ingress["spec"]
    hosts = EVERYTHING["receiver"]["ingress"]["hosts"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": hosts, "secretName": "callbacks-tls"}]
    backend = {"service": {"name": "sj-receiver", "port": {"name": "http"}}}
    # Only the callbacks are public: /healthz, /readyz and /metrics are not routed.
    assert spec["rules"] == [
        {"host": host, "http": {"paths": [{"path": "/callbacks/", "pathType": "Prefix", "backend": backend}]}}
        for host in hosts
    ]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == str(
        EVERYTHING["config"]["maxBodyBytes"]
    )
    # The receiver's read timeout (10 s) plus its confirm timeout (3.5 s), plus 2 s, rounded up.
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "16"
    # The chart's values yield to the user's.
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "30"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert everything["Service", "sj-receiver"]["spec"]["ports"][0] == {
        "name": "http",
        "port": 80,
        "targetPort": "http",
        "protocol": "TCP",
    }


def test_receiver_ingress_defaults(helm_python: Any, default: Manifests) -> None:
    assert not any(kind == "Ingress" for kind, _ in default)
    values = {
        "receiver": {"ingress": {"enabled": True, "hosts": ["cb.example.com"], "tlsSecretName": "cb-tls"}}
    }
    ingress = render(helm_python, values)["Ingress", RECEIVER]
    annotations = ingress["metadata"]["annotations"]
    assert annotations == {
        "nginx.ingress.kubernetes.io/proxy-body-size": "1048576",  # config.maxBodyBytes, in bytes
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "10",  # 5 + 2.5 + 2, rounded up
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "10",
    }
    assert (
        int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
        > VALUES["receiver"]["config"]["readTimeoutSeconds"]
        + VALUES["receiver"]["config"]["confirmTimeoutSeconds"]
    )
    assert "ingressClassName" not in ingress["spec"]
    assert ingress["spec"]["tls"] == [{"hosts": ["cb.example.com"], "secretName": "cb-tls"}]
    # The body cap follows config.maxBodyBytes.
    bigger = merged(values, {"config": {"maxBodyBytes": 4 * MiB}})
    ingress = render(helm_python, bigger)["Ingress", RECEIVER]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == str(4 * MiB)


def test_receiver_ingress_needs_hosts(helm_python: Any) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"receiver\.ingress\.hosts"):
        render(helm_python, {"receiver": {"ingress": {"enabled": True}}})


def test_receiver_network_policy(everything: Manifests) -> None:
    policy = everything["NetworkPolicy", "sj-receiver"]["spec"]
    assert policy["podSelector"] == everything["Deployment", "sj-receiver"]["spec"]["selector"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == EVERYTHING["receiver"]["networkPolicy"]["from"]
    rabbitmq, dns, extra = policy["egress"]
    assert rabbitmq["ports"] == [{"port": 5671, "protocol": "TCP"}]
    assert rabbitmq["to"] == EVERYTHING["networkPolicy"]["rabbitmq"]["to"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert extra == EVERYTHING["receiver"]["networkPolicy"]["extraEgress"][0]
    ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert 27017 not in ports


def test_receiver_network_policy_defaults(helm_python: Any) -> None:
    manifests = render(helm_python, {"networkPolicy": {"enabled": True}})
    policy = manifests["NetworkPolicy", RECEIVER]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert "from" not in policy["ingress"][0]  # any source: the ingress controller's pods vary
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {(5672, "TCP"), (5671, "TCP"), (53, "UDP"), (53, "TCP")}  # no MongoDB
    # Policies add up: the consumer's, which allows MongoDB, must not select the receiver's pods.
    consumer_policy = manifests["NetworkPolicy", "prod-speechjobs"]["spec"]["podSelector"]
    assert not selects(consumer_policy, pod_labels(manifests, "Deployment", RECEIVER))
    assert selects(consumer_policy, pod_labels(manifests, "Deployment", "prod-speechjobs"))
    assert selects(policy["podSelector"], pod_labels(manifests, "Deployment", RECEIVER))


def test_consumer_network_policy_still_covers_the_replay_job(everything: Manifests) -> None:
    selector = everything["NetworkPolicy", "sj"]["spec"]["podSelector"]
    assert selects(selector, pod_labels(everything, "Job", "sj-dlq-replay-7"))
    assert selects(selector, pod_labels(everything, "Deployment", "sj"))
    assert not selects(selector, pod_labels(everything, "Deployment", "sj-receiver"))
    assert not selects(selector, pod_labels(everything, "Deployment", "sj-poller"))


def test_receiver_service_monitor(everything: Manifests) -> None:
    monitor = everything["ServiceMonitor", "sj-receiver"]["spec"]
    receiver_service = everything["Service", "sj-receiver"]["metadata"]["labels"]
    consumer_service = everything["Service", "sj"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= receiver_service.items()
    assert not monitor["selector"]["matchLabels"].items() <= consumer_service.items()
    consumer_monitor = everything["ServiceMonitor", "sj"]["spec"]["selector"]["matchLabels"]
    assert not consumer_monitor.items() <= receiver_service.items()
    (endpoint,) = monitor["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")


def test_everything_receiver_deployment(everything: Manifests) -> None:
    deployment = everything["Deployment", "sj-receiver"]
    pod = deployment["spec"]["template"]["spec"]
    c = container(everything, "Deployment", "sj-receiver")
    assert c["image"] == container(everything, "Deployment", "sj")["image"]
    assert c["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert c["envFrom"] == [{"configMapRef": {"name": "sj"}}]
    secret = "speechjobs-credentials"
    assert {name: (ref["name"], ref["key"]) for name, ref in secret_refs(c).items()} == {
        "SPEECHJOBS_AMQP_URL": (secret, "amqp"),
        "SPEECHJOBS_CALLBACK_TOKENS": (secret, "tokens"),
        "SPEECHJOBS_ICE_AUTH_KEYS": (secret, "ice-keys"),
        "SPEECHJOBS_ICE_CALLBACK_URL": (secret, "ice-url"),
    }
    names = [e["name"] for e in c["env"]]
    assert names[-2:] == ["TZ", "RECEIVER_ONLY"]  # extraEnv, then receiver.extraEnv
    # The AMQP URL's TLS files: the shared extra volumes.
    assert {"name": "tls", "mountPath": "/etc/speechjobs/tls", "readOnly": True} in c["volumeMounts"]
    assert {"name": "tls", "secret": {"secretName": "speechjobs-tls"}} in pod["volumes"]
    assert c["livenessProbe"]["periodSeconds"] == 20
    assert c["readinessProbe"]["failureThreshold"] == 1
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "10"]}}
    assert pod["terminationGracePeriodSeconds"] == 10 + math.ceil(45.5) + 10
    assert pod["serviceAccountName"] == "speechjobs-sa"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["tolerations"] == EVERYTHING["tolerations"]
    zone, host = pod["topologySpreadConstraints"]
    assert zone["labelSelector"] == deployment["spec"]["selector"]
    assert host["labelSelector"] == {"matchLabels": {"team": "platform"}}
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "platform"
    assert template["labels"]["app.kubernetes.io/component"] == "receiver"
    assert everything["Service", "sj-receiver"]["metadata"]["annotations"] == {"example.com/exposed": "no"}


def test_receiver_memory_follows_its_settings(default: Manifests, everything: Manifests) -> None:
    # 128 MiB + 2 * maxInFlight * maxBodyBytes: 128 + 2 * 256 * 1 = 640 by default.
    res = resources(default, RECEIVER)
    assert res == {"limits": {"memory": "640Mi"}, "requests": {"cpu": "100m", "memory": "640Mi"}}
    # 128 + 2 * 64 * 2 = 384; an explicit CPU limit leaves the memory derived.
    res = resources(everything, "sj-receiver")
    assert res == {"limits": {"cpu": "1", "memory": "384Mi"}, "requests": {"cpu": "200m", "memory": "384Mi"}}


def test_receiver_explicit_memory_wins(helm_python: Any) -> None:
    values = {"receiver": {"resources": {"limits": {"memory": "256Mi"}, "requests": {"memory": "128Mi"}}}}
    res = resources(render(helm_python, values), RECEIVER)
    assert res == {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}}


def test_receiver_checksum_follows_its_settings(helm_python: Any, default: Manifests) -> None:
    def checksum(manifests: Manifests) -> str:
        return str(
            manifests["Deployment", RECEIVER]["spec"]["template"]["metadata"]["annotations"][
                "checksum/config"
            ]
        )

    changed = render(helm_python, {"receiver": {"config": {"maxInFlight": 64}}})
    assert checksum(changed) != checksum(default)
    assert changed["ConfigMap", "prod-speechjobs"]["data"]["SPEECHJOBS_RECEIVER_MAX_IN_FLIGHT"] == "64"


def test_receiver_without_pre_stop_pause(helm_python: Any) -> None:
    manifests = render(helm_python, {"receiver": {"preStopSleepSeconds": 0}})
    assert "lifecycle" not in container(manifests, "Deployment", RECEIVER)
    assert (
        manifests["Deployment", RECEIVER]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    )


def test_receiver_disabled_renders_none_of_its_objects(helm_python: Any, everything: Manifests) -> None:
    assert (
        len(component_objects(everything, "receiver")) == 7
    )  # Deployment, Service, Ingress, HPA, PDB, policy, monitor
    off = render(
        helm_python, merged(EVERYTHING, {"receiver": {"enabled": False}}), revision=7, is_upgrade=True
    )
    assert component_objects(off, "receiver") == []
    assert sorted(off) == sorted(set(everything) - set(component_objects(everything, "receiver")))
    # Its settings stay in the shared ConfigMap: they change nothing for the other processes.
    assert off["ConfigMap", "sj"] == everything["ConfigMap", "sj"]


def test_receiver_pdb_needs_a_bound(helm_python: Any) -> None:
    values = {"receiver": {"podDisruptionBudget": {"minAvailable": None, "maxUnavailable": None}}}
    with pytest.raises(helm_python.HelmRenderError, match=r"receiver\.podDisruptionBudget"):
        render(helm_python, values)


# --- the poller -------------------------------------------------------------------------------------------

POLLER = "prod-speechjobs-poller"
VENDOR_VARIABLES = {f"SPEECHJOBS_{name.upper()}" for name in VENDOR_SECRETS}


def test_default_poller_deployment(default: Manifests) -> None:
    deployment = default["Deployment", POLLER]
    pod = deployment["spec"]["template"]["spec"]
    c = container(default, "Deployment", POLLER)
    assert deployment["spec"]["replicas"] == 1
    assert c["image"] == container(default, "Deployment", "prod-speechjobs")["image"]
    assert c["args"] == ["poll"]  # the image's entrypoint is `speechjobs`
    # Its HTTP server listens on SPEECHJOBS_HTTP_PORT, the consumer's.
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["envFrom"] == [{"configMapRef": {"name": "prod-speechjobs"}}]
    secret = {"name": "prod-speechjobs"}
    assert secret_refs(c) == {
        "SPEECHJOBS_AMQP_URL": secret | {"key": "amqp-url"},
        "SPEECHJOBS_MONGODB_URL": secret | {"key": "mongodb-url"},
        # Optional: a provider without its credentials is not polled, and the pods start anyway.
        "SPEECHJOBS_ALIBABA_ACCESS_KEY_ID": secret | {"key": "alibaba-access-key-id", "optional": True},
        "SPEECHJOBS_ALIBABA_ACCESS_KEY_SECRET": secret
        | {"key": "alibaba-access-key-secret", "optional": True},
        "SPEECHJOBS_ALIBABA_SECURITY_TOKEN": secret | {"key": "alibaba-security-token", "optional": True},
        "SPEECHJOBS_TENCENT_SECRET_ID": secret | {"key": "tencent-secret-id", "optional": True},
        "SPEECHJOBS_TENCENT_SECRET_KEY": secret | {"key": "tencent-secret-key", "optional": True},
        "SPEECHJOBS_HUAWEI_ACCESS_KEY": secret | {"key": "huawei-access-key", "optional": True},
        "SPEECHJOBS_HUAWEI_SECRET_KEY": secret | {"key": "huawei-secret-key", "optional": True},
    }
    assert {k: pod["securityContext"].get(k) for k in POD_SECURITY} == POD_SECURITY
    assert {k: c["securityContext"].get(k) for k in CONTAINER_SECURITY} == CONTAINER_SECURITY
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "prod-speechjobs"
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    # The polls in flight finish within the shutdown grace; 10 s more to close the connections.
    assert pod["terminationGracePeriodSeconds"] == 20 + 10
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    consumer = default["Deployment", "prod-speechjobs"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] == consumer["checksum/config"]  # the same ConfigMap
    selector = deployment["spec"]["selector"]
    assert selector["matchLabels"]["app.kubernetes.io/component"] == "poller"
    assert pod["topologySpreadConstraints"][0]["labelSelector"] == selector
    assert resources(default, POLLER) == {
        "limits": {"memory": "256Mi"},
        "requests": {"cpu": "50m", "memory": "256Mi"},
    }


def test_vendor_credentials_reach_the_poller_only(default: Manifests, everything: Manifests) -> None:
    assert set(secret_refs(container(default, "Deployment", POLLER))) >= VENDOR_VARIABLES
    assert set(secret_refs(container(everything, "Deployment", "sj-poller"))) >= VENDOR_VARIABLES
    others = [
        (default, "Deployment", "prod-speechjobs"),
        (default, "Deployment", RECEIVER),
        (everything, "Deployment", "sj"),
        (everything, "Deployment", "sj-receiver"),
        (everything, "Job", "sj-dlq-replay-7"),
    ]
    for manifests, kind, name in others:
        names = {e["name"] for e in container(manifests, kind, name)["env"]}
        assert not names & VENDOR_VARIABLES, (kind, name)
    for manifests, name in ((default, "prod-speechjobs"), (everything, "sj")):
        assert not VENDOR_VARIABLES & set(manifests["ConfigMap", name]["data"])


def test_everything_poller_deployment(everything: Manifests) -> None:
    deployment = everything["Deployment", "sj-poller"]
    pod = deployment["spec"]["template"]["spec"]
    c = container(everything, "Deployment", "sj-poller")
    assert deployment["spec"]["replicas"] == 3  # no autoscaler: KEDA's is the consumer's
    assert c["image"] == container(everything, "Deployment", "sj")["image"]
    assert c["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    assert c["envFrom"] == [{"configMapRef": {"name": "sj"}}]
    secret = "speechjobs-credentials"
    assert {name: (ref["name"], ref["key"], ref.get("optional")) for name, ref in secret_refs(c).items()} == {
        "SPEECHJOBS_AMQP_URL": (secret, "amqp", None),
        "SPEECHJOBS_MONGODB_URL": (secret, "mongo", None),
        "SPEECHJOBS_ALIBABA_ACCESS_KEY_ID": (secret, "ali-id", True),
        "SPEECHJOBS_ALIBABA_ACCESS_KEY_SECRET": (secret, "ali-secret", True),
        "SPEECHJOBS_ALIBABA_SECURITY_TOKEN": (secret, "ali-token", True),
        "SPEECHJOBS_TENCENT_SECRET_ID": (secret, "tc-id", True),
        "SPEECHJOBS_TENCENT_SECRET_KEY": (secret, "tc-key", True),
        "SPEECHJOBS_HUAWEI_ACCESS_KEY": (secret, "hw-ak", True),
        "SPEECHJOBS_HUAWEI_SECRET_KEY": (secret, "hw-sk", True),
    }
    names = [e["name"] for e in c["env"]]
    assert names[-2:] == ["TZ", "POLLER_ONLY"]  # extraEnv, then poller.extraEnv
    assert "POLLER_ONLY" not in {e["name"] for e in container(everything, "Deployment", "sj")["env"]}
    assert {"name": "tls", "mountPath": "/etc/speechjobs/tls", "readOnly": True} in c["volumeMounts"]
    assert {"name": "tls", "secret": {"secretName": "speechjobs-tls"}} in pod["volumes"]
    assert c["livenessProbe"]["periodSeconds"] == 30
    assert c["readinessProbe"]["failureThreshold"] == 5
    assert pod["terminationGracePeriodSeconds"] == math.ceil(45.5) + 10
    assert pod["serviceAccountName"] == "speechjobs-sa"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["tolerations"] == EVERYTHING["tolerations"]
    zone, host = pod["topologySpreadConstraints"]
    assert zone["labelSelector"] == deployment["spec"]["selector"]
    assert host["labelSelector"] == {"matchLabels": {"team": "platform"}}
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "platform"
    assert template["labels"]["app.kubernetes.io/component"] == "poller"
    # An explicit CPU limit leaves the memory limit at its default.
    assert resources(everything, "sj-poller") == {
        "limits": {"cpu": "500m", "memory": "256Mi"},
        "requests": {"cpu": "20m", "memory": "256Mi"},
    }


@pytest.mark.parametrize("replicas", [1, 4])
def test_poller_replicas_follow_the_values(helm_python: Any, replicas: int) -> None:
    manifests = render(helm_python, {"poller": {"replicaCount": replicas}})
    assert manifests["Deployment", POLLER]["spec"]["replicas"] == replicas


def test_poller_render_refuses_no_replica(helm_python: Any) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="replicaCount"):
        render(helm_python, {"poller": {"replicaCount": 0}})


def test_poller_explicit_memory_wins(helm_python: Any) -> None:
    values = {"poller": {"resources": {"limits": {"memory": "512Mi"}, "requests": {"memory": "128Mi"}}}}
    res = resources(render(helm_python, values), POLLER)
    assert res == {"limits": {"memory": "512Mi"}, "requests": {"cpu": "50m", "memory": "128Mi"}}


def test_poller_selects_only_its_own_pods(default: Manifests) -> None:
    poller_pod = pod_labels(default, "Deployment", POLLER)
    for name in ("prod-speechjobs", RECEIVER):
        other_pod = pod_labels(default, "Deployment", name)
        assert not selects(default["Deployment", POLLER]["spec"]["selector"], other_pod)
        assert not selects(default["Deployment", name]["spec"]["selector"], poller_pod)
        assert not default["Service", name]["spec"]["selector"].items() <= poller_pod.items()
        assert not selects(default["PodDisruptionBudget", name]["spec"]["selector"], poller_pod)
    service = default["Service", POLLER]
    assert service["spec"]["selector"] == default["Deployment", POLLER]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]


def test_poller_configmap_defaults(default: Manifests) -> None:
    data: dict[str, str] = default["ConfigMap", "prod-speechjobs"]["data"]
    assert {k: v for k, v in data.items() if k.startswith("SPEECHJOBS_POLL_")} == {
        "SPEECHJOBS_POLL_INTERVAL_S": "60",
        "SPEECHJOBS_POLL_MAX_INTERVAL_S": "300",
        "SPEECHJOBS_POLL_FAST_INTERVAL_S": "3",
        "SPEECHJOBS_POLL_SILENCE": "600",
        "SPEECHJOBS_POLL_RATE": "5",
        "SPEECHJOBS_POLL_MAX_AGE_S": "172800",
        "SPEECHJOBS_POLL_NOT_FOUND_LIMIT": "3",
        "SPEECHJOBS_POLL_CONCURRENCY": "16",
        "SPEECHJOBS_POLL_LEASE_S": "120",
        "SPEECHJOBS_POLL_RECONCILE_EVERY_S": "60",
    }
    assert data["SPEECHJOBS_ICE_SIGNATURE"] == "v3"
    assert data["SPEECHJOBS_VENDOR_TIMEOUT_S"] == "10"
    # Unset, not empty: the service would take an empty bucket for a set one.
    assert not {f"SPEECHJOBS_{name.upper()}" for name in UNSET_BY_DEFAULT} & set(data)


def test_poller_checksum_follows_its_settings(helm_python: Any, default: Manifests) -> None:
    def checksum(manifests: Manifests) -> str:
        annotations = manifests["Deployment", POLLER]["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    changed = render(helm_python, {"poller": {"vendors": {"huaweiProjectId": "p1"}}})
    assert checksum(changed) != checksum(default)
    assert changed["ConfigMap", "prod-speechjobs"]["data"]["SPEECHJOBS_HUAWEI_PROJECT_ID"] == "p1"


def test_poller_network_policy(everything: Manifests) -> None:
    policy = everything["NetworkPolicy", "sj-poller"]["spec"]
    assert policy["podSelector"] == everything["Deployment", "sj-poller"]["spec"]["selector"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == EVERYTHING["networkPolicy"]["metricsFrom"]  # the consumer's metrics peers
    rabbitmq, mongodb, dns, vendors, extra = policy["egress"]
    assert rabbitmq["ports"] == [{"port": 5671, "protocol": "TCP"}]
    assert rabbitmq["to"] == EVERYTHING["networkPolicy"]["rabbitmq"]["to"]
    assert mongodb["ports"] == [{"port": 27017, "protocol": "TCP"}]
    assert mongodb["to"] == EVERYTHING["networkPolicy"]["mongodb"]["to"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert vendors["ports"] == [{"port": 443, "protocol": "TCP"}, {"port": 8443, "protocol": "TCP"}]
    assert vendors["to"] == EVERYTHING["poller"]["networkPolicy"]["vendors"]["to"]
    assert extra == EVERYTHING["poller"]["networkPolicy"]["extraEgress"][0]
    # The consumer's extra egress stays the consumer's.
    assert "extraEgress" not in EVERYTHING["networkPolicy"]


def test_poller_network_policy_defaults(helm_python: Any) -> None:
    manifests = render(helm_python, {"networkPolicy": {"enabled": True}})
    policy = manifests["NetworkPolicy", POLLER]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert "from" not in policy["ingress"][0]
    rules = {(p["port"], p["protocol"]): rule for rule in policy["egress"] for p in rule["ports"]}
    assert set(rules) == {
        (5672, "TCP"),
        (5671, "TCP"),
        (27017, "TCP"),
        (53, "UDP"),
        (53, "TCP"),
        (443, "TCP"),
    }
    assert "to" not in rules[443, "TCP"]  # HTTPS to anywhere: the vendors' addresses change
    # Policies add up: the consumer's, which allows no HTTPS, must not select the poller's pods.
    poller_pod = pod_labels(manifests, "Deployment", POLLER)
    assert selects(policy["podSelector"], poller_pod)
    assert not selects(manifests["NetworkPolicy", "prod-speechjobs"]["spec"]["podSelector"], poller_pod)
    assert not selects(manifests["NetworkPolicy", RECEIVER]["spec"]["podSelector"], poller_pod)
    assert not selects(policy["podSelector"], pod_labels(manifests, "Deployment", "prod-speechjobs"))
    assert not selects(policy["podSelector"], pod_labels(manifests, "Deployment", RECEIVER))
    consumer_ports = {
        p["port"]
        for rule in manifests["NetworkPolicy", "prod-speechjobs"]["spec"]["egress"]
        for p in rule["ports"]
    }
    assert 443 not in consumer_ports


def test_poller_service_monitor(everything: Manifests) -> None:
    monitor = everything["ServiceMonitor", "sj-poller"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    poller_service = everything["Service", "sj-poller"]
    assert poller_service["spec"]["ports"] == [
        {"name": "http", "port": 9200, "targetPort": "http", "protocol": "TCP"}
    ]
    assert poller_service["metadata"]["annotations"] == {"example.com/scrape": "yes"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= poller_service["metadata"]["labels"].items()
    for other in ("sj", "sj-receiver"):
        assert not selector.items() <= everything["Service", other]["metadata"]["labels"].items()
        other_selector = everything["ServiceMonitor", other]["spec"]["selector"]["matchLabels"]
        assert not other_selector.items() <= poller_service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")


def test_poller_disabled_renders_none_of_its_objects(helm_python: Any, everything: Manifests) -> None:
    found = component_objects(everything, "poller")
    assert found == [
        ("Deployment", "sj-poller"),
        ("NetworkPolicy", "sj-poller"),
        ("Service", "sj-poller"),
        ("ServiceMonitor", "sj-poller"),
    ]
    off = render(helm_python, merged(EVERYTHING, {"poller": {"enabled": False}}), revision=7, is_upgrade=True)
    assert component_objects(off, "poller") == []
    assert sorted(off) == sorted(set(everything) - set(found))
    # Its settings stay in the shared ConfigMap: the consumer reads SPEECHJOBS_POLL_INTERVAL_S too.
    assert off["ConfigMap", "sj"] == everything["ConfigMap", "sj"]
