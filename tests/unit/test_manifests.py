"""Every manifest the chart renders, checked as the API server would check it, and `helm lint --strict`.

- Built-in kinds: against the Kubernetes OpenAPI schemas of each supported version, which kubernetes-validate
  bundles, in its strict mode (a field the version does not know fails, as `kubectl apply --validate=strict`).
- Custom resources (KEDA, Prometheus Operator): against the openAPIV3Schema of their CRDs, vendored under
  tests/schemas/crds, made strict where the API server would prune: a field the schema does not list fails.
- `helm lint --strict` (warnings fail) for each supported version, through helm-python-sdk: helm-sdkpy's Lint,
  which tests/unit/test_helm_chart.py uses, has neither a strict mode nor values.

Each runs on the default values and with every option on; KEDA and the HPA are exclusive, so "everything"
renders KEDA's objects and "everything-hpa" the HPA (the options are test_helm_chart.py's EVERYTHING, plus
any `enabled` switch it leaves off).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

from tests.unit.test_helm_chart import CHART, EVERYTHING, HPA, VALUES, Manifests, merged, render

CRDS = Path(__file__).resolve().parents[1] / "schemas" / "crds"

# --- the supported Kubernetes versions ---------------------------------------------------------------------

# The oldest Kubernetes the chart supports (the chart's README says so); the newest is the newest
# kubernetes-validate bundles, 1.37 with the version pyproject.toml asks for. 1.26 and 1.27 would pass too;
# 1.25 would not: its PodDisruptionBudget has no unhealthyPodEvictionPolicy.
OLDEST_SUPPORTED = (1, 28)


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


# all_versions() lists "1.37.0" once per schema flavour (strict or not); validate() takes "1.37".
BUNDLED: list[str] = sorted({"{}.{}".format(*_minor(v)) for v in kv_utils.all_versions()}, key=_minor)
SUPPORTED = [v for v in BUNDLED if _minor(v) >= OLDEST_SUPPORTED]


def test_supported_versions() -> None:
    assert SUPPORTED[0] == "1.28"
    assert _minor(SUPPORTED[-1]) >= (1, 37)
    assert [_minor(v)[1] for v in SUPPORTED] == list(range(28, _minor(SUPPORTED[-1])[1] + 1))  # no gap


# --- rendering ---------------------------------------------------------------------------------------------

# Release options as in tests/unit/test_helm_chart.py's fixtures: a first install, and an upgrade (the
# replay Job's name carries the revision).
INSTALL: dict[str, Any] = {}
UPGRADE: dict[str, Any] = {"revision": 7, "is_install": False, "is_upgrade": True}


def flags(values: dict[str, Any], prefix: str = "") -> dict[str, bool]:
    """Every `enabled` switch in the values, by its dotted path."""
    found: dict[str, bool] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            found |= flags(value, f"{prefix}{key}.")
        elif key == "enabled" and isinstance(value, bool):
            found[f"{prefix}{key}"] = value
    return found


def switch_on(paths: set[str]) -> dict[str, Any]:
    """The values that set each of these dotted paths (`....enabled`) to true."""
    override: dict[str, Any] = {}
    for path in paths:
        *parents, leaf = path.split(".")
        node = override
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = True
    return override


# KEDA and the HPA are exclusive: the HPA is on in a variant of its own.
EXCLUSIVE = {"autoscaling.enabled"}
# test_helm_chart.py's EVERYTHING, with whatever switch it leaves off turned on (bar the HPA's), so that an
# option added to values.yaml is validated here even before EVERYTHING turns it on.
ALL_ON = merged(EVERYTHING, switch_on({path for path, on in flags(VALUES).items() if not on} - EXCLUSIVE))
VARIANTS: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    "default": (None, INSTALL),
    "everything": (ALL_ON, UPGRADE),
    "everything-hpa": (merged(ALL_ON, {"keda": {"enabled": False}} | HPA), UPGRADE),
}

Document = tuple[str, dict[str, Any]]  # its template (e.g. "templates/deployment.yaml"), the object


def render_documents(helm_python: Any, values: dict[str, Any] | None, **release: Any) -> list[Document]:
    """As test_helm_chart.render(), but every document, with its template: render() keys the objects by
    (kind, name), which would hide a duplicate and forget where an object came from."""
    options = {"name": "prod", "namespace": "speech", "revision": 1, "is_install": True} | release
    files: dict[str, str] = helm_python.Chart.load(CHART).render(values, **options)
    return [
        (path.split("/", 1)[1], doc)
        for path, text in files.items()
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@pytest.fixture(scope="module")
def rendered(helm_python: Any) -> dict[str, list[Document]]:
    return {name: render_documents(helm_python, values, **opts) for name, (values, opts) in VARIANTS.items()}


def describe(template: str, doc: dict[str, Any]) -> str:
    return f"{template}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def set_at(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def test_the_variants_turn_every_option_on() -> None:
    variants = [merged(VALUES, values or {}) for values, _ in VARIANTS.values()]
    switched_on = {path for values in variants for path, on in flags(values).items() if on}
    assert {path for path, on in flags(VALUES).items() if not on} - switched_on == set()
    assert "receiver.ingress.enabled" in switched_on  # nested switches are found
    assert {path for path, on in flags(merged(VALUES, ALL_ON)).items() if not on} == EXCLUSIVE


def test_everything_values_turn_every_option_on() -> None:
    """test_helm_chart.py's `everything` tests see every option: its EVERYTHING leaves off only the HPA."""
    assert {path for path, on in flags(merged(VALUES, EVERYTHING)).items() if not on} == EXCLUSIVE


def test_every_template_renders_in_some_variant(rendered: dict[str, list[Document]]) -> None:
    templates = {f"templates/{path.name}" for path in (CHART / "templates").glob("*.yaml")}
    assert len(templates) > 20
    assert templates - {template for docs in rendered.values() for template, _ in docs} == set()


@pytest.mark.parametrize("variant", VARIANTS)
def test_render_matches_the_shared_helper(
    helm_python: Any, rendered: dict[str, list[Document]], variant: str
) -> None:
    """The documents validated here are the objects test_helm_chart.py tests, and no two share a kind and a
    name (the second would overwrite the first on install)."""
    values, release = VARIANTS[variant]
    by_name: Manifests = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in rendered[variant]}
    assert len(by_name) == len(rendered[variant])
    assert by_name == render(helm_python, values, **release)


# --- built-in kinds: kubernetes-validate, strict --------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _parse_each_schema_once() -> Iterator[None]:
    """kubernetes-validate reads and parses a version's 1.8 MB _definitions.json on every validate() call;
    parsed once, the 700 validations here take a second instead of ten. Its validation is unchanged."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kv_utils, "schema_contents", functools.cache(kv_utils.schema_contents))
        yield


def builtin_errors(doc: dict[str, Any], version: str) -> list[str]:
    """What the strict OpenAPI schema of Kubernetes `version` finds wrong with `doc`; empty when valid."""
    try:
        validated: str = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]  # a kind the version does not serve, or a custom resource without its CRD
    # kubernetes-validate falls back to an older version's schemas when it lacks the one asked for.
    return [] if validated == version else [f"validated against {validated}, not {version}"]


@pytest.mark.parametrize("version", SUPPORTED)
@pytest.mark.parametrize("variant", VARIANTS)
def test_builtin_kinds_validate(rendered: dict[str, list[Document]], variant: str, version: str) -> None:
    builtin = [(t, doc) for t, doc in rendered[variant] if crd_key(doc) not in CRD_SCHEMAS]
    assert len(builtin) >= 10
    failures = [f"{describe(t, doc)}: {e}" for t, doc in builtin for e in builtin_errors(doc, version)]
    assert failures == []


def default_object(rendered: dict[str, list[Document]], kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(doc for _, doc in rendered["default"] if doc["kind"] == kind))


@pytest.mark.parametrize("version", SUPPORTED)
def test_strict_schemas_reject_an_unknown_field(rendered: dict[str, list[Document]], version: str) -> None:
    deployment = default_object(rendered, "Deployment")
    assert builtin_errors(deployment, version) == []
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    (error,) = builtin_errors(deployment, version)
    assert error.startswith("spec.template.spec.containers.0: ")
    assert "'readinesProbe' was unexpected" in error


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        ("Deployment", ("spec", "replicas"), "2", "'2' is not of type 'integer', 'null'"),
        ("Service", ("spec", "ports", 0, "port"), "http", "'http' is not of type 'integer'"),
        ("PodDisruptionBudget", ("spec", "selector", "matchLabel"), {}, "'matchLabel' was unexpected"),
        ("ConfigMap", ("data", "SPEECHJOBS_PREFETCH"), 512, "512 is not of type 'string', 'null'"),
        ("ServiceAccount", ("metadata", "label"), {}, "'label' was unexpected"),
    ],
)
def test_strict_schemas_reject_a_wrong_object(
    rendered: dict[str, list[Document]], kind: str, path: tuple[str | int, ...], value: Any, message: str
) -> None:
    doc = default_object(rendered, kind)
    set_at(doc, path, value)
    (error,) = builtin_errors(doc, SUPPORTED[-1])
    assert message in error


def test_validation_follows_the_version(rendered: dict[str, list[Document]]) -> None:
    """A field newer than a version fails against it: each version's own schemas are used."""
    if "1.25" not in BUNDLED:
        pytest.skip("kubernetes-validate no longer bundles Kubernetes 1.25")
    pdb = default_object(rendered, "PodDisruptionBudget")
    assert builtin_errors(pdb, SUPPORTED[0]) == []
    (error,) = builtin_errors(pdb, "1.25")
    assert "'unhealthyPodEvictionPolicy' was unexpected" in error


# --- custom resources: their CRDs' schemas ----------------------------------------------------------------

# A custom resource's metadata is an ObjectMeta, which the API server checks as such, while the CRD's schema
# says only `type: object`: it is checked against the newest bundled ObjectMeta (stable for years).
NEWEST = max(kv_utils.all_versions(), key=lambda v: tuple(map(int, v.split("."))))
DEFINITIONS: dict[str, Any] = kv_utils.schema_contents(
    f"kubernetes-json-schema/v{NEWEST}-local-strict/_definitions.json", NEWEST
)
OBJECT_META = {"$ref": f"{DEFINITIONS['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
REGISTRY: referencing.Registry[Any] = referencing.Resource.from_contents(DEFINITIONS) @ referencing.Registry()


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's schema as the API server applies it, with pruning made an error: an object refuses the fields
    it does not list (with none listed, any field) unless it preserves unknown fields or is a map
    (additionalProperties); an int-or-string is an integer or a string; `nullable` admits null."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(child) for name, child in out["properties"].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if "items" in out:
        out["items"] = strict(out["items"])
    for junctor in ("allOf", "anyOf", "oneOf"):
        if junctor in out:
            out[junctor] = [strict(child) for child in out[junctor]]
    if "not" in out:
        out["not"] = strict(out["not"])
    if (
        out.get("type") == "object"
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["type"] = ["integer", "string"]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


# The CEL rules (x-kubernetes-validations) of the vendored CRDs, in Python: jsonschema cannot run CEL. A CRD
# refreshed with a new rule fails test_every_cel_rule_is_checked, and so does any object that reaches it.
CEL_RULES: dict[str, Callable[[Any], bool]] = {
    # ScaledObject.spec
    "!has(self.minReplicaCount) || self.minReplicaCount <= "
    "(has(self.maxReplicaCount) ? self.maxReplicaCount : 100)": lambda spec: (
        "minReplicaCount" not in spec or spec["minReplicaCount"] <= spec.get("maxReplicaCount", 100)
    ),
}


def _cel(validator: Any, rules: list[dict[str, str]], instance: Any, schema: Any) -> Iterator[Any]:
    for rule in rules:
        check = CEL_RULES.get(rule["rule"])
        if check is None:
            yield jsonschema.ValidationError(f"CEL rule not checked by these tests: {rule['rule']}")
        elif not check(instance):
            yield jsonschema.ValidationError(rule.get("message", rule["rule"]))


def _list_type(validator: Any, list_type: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """The API server refuses a `set` list with a repeated item, and a `map` list with a repeated key (two
    rule groups of one name in a PrometheusRule, say)."""
    if not isinstance(instance, list) or list_type not in ("set", "map"):
        return
    if list_type == "set":
        keys = [json.dumps(item, sort_keys=True) for item in instance]
    else:
        names = schema.get("x-kubernetes-list-map-keys", [])
        keys = [json.dumps([item.get(n) for n in names]) for item in instance if isinstance(item, dict)]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        yield jsonschema.ValidationError(f"repeated in a list of type {list_type}: {', '.join(repeated)}")


# The stubs leave extend() untyped.
CRValidator: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {"x-kubernetes-validations": _cel, "x-kubernetes-list-type": _list_type}
)


def load_crd_schemas() -> dict[tuple[str, str], Any]:
    """A strict validator for each served version of each vendored CRD, by (apiVersion, kind)."""
    schemas: dict[tuple[str, str], Any] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition", path
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = OBJECT_META
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                schemas[key] = CRValidator(schema, registry=REGISTRY)
    return schemas


CRD_SCHEMAS = load_crd_schemas()


def crd_key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["apiVersion"], doc["kind"]


def crd_errors(doc: dict[str, Any]) -> list[str]:
    errors = CRD_SCHEMAS[crd_key(doc)].iter_errors(doc)
    return sorted(f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in errors)


def test_vendored_crds() -> None:
    assert set(CRD_SCHEMAS) == {
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
    files = {path.name for path in CRDS.iterdir()}
    assert {Path(name).suffix for name in files} == {".md", ".yaml"}  # the CRDs and their README only
    readme = (CRDS / "README.md").read_text()
    assert [name for name in files - {"README.md"} if f"`{name}`" not in readme] == []


def test_every_cel_rule_is_checked() -> None:
    def rules(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            yield from (rule["rule"] for rule in node.get("x-kubernetes-validations", []))
            for child in node.values():
                yield from rules(child)
        elif isinstance(node, list):
            for child in node:
                yield from rules(child)

    found = {rule for path in CRDS.glob("*.yaml") for rule in rules(yaml.safe_load(path.read_text()))}
    assert found == set(CEL_RULES)


def test_every_vendored_crd_is_used(rendered: dict[str, list[Document]]) -> None:
    used = {crd_key(doc) for docs in rendered.values() for _, doc in docs if crd_key(doc) in CRD_SCHEMAS}
    assert used == set(CRD_SCHEMAS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_resources_validate(rendered: dict[str, list[Document]], variant: str) -> None:
    custom = [(t, doc) for t, doc in rendered[variant] if crd_key(doc) in CRD_SCHEMAS]
    assert len(custom) >= (0 if variant == "default" else 4)
    failures = [f"{describe(t, doc)}: {e}" for t, doc in custom for e in crd_errors(doc)]
    assert failures == []


def everything_object(rendered: dict[str, list[Document]], kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(doc for _, doc in rendered["everything"] if doc["kind"] == kind))


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        ("ScaledObject", ("spec", "pollingIntervall"), 30, "'pollingIntervall' was unexpected"),
        ("ScaledObject", ("spec", "triggers", 0, "metadata", "value"), 1000, "1000 is not of type 'string'"),
        ("ScaledObject", ("spec", "advanced", "restoreToOriginalReplicaCount"), "y", "not of type 'boolean'"),
        ("ScaledObject", ("spec", "minReplicaCount"), 21, "minReplicaCount must be less than or equal to"),
        ("ScaledObject", ("metadata", "label"), {}, "'label' was unexpected"),
        ("TriggerAuthentication", ("spec", "secretTargetRef", 0, "secret"), "x", "'secret' was unexpected"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "15", "'15' does not match"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "targetPort"), 1.5, "1.5 is not valid under any"),
        ("ServiceMonitor", ("spec", "selector", "matchLabel"), {}, "'matchLabel' was unexpected"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "for"), 5, "5 is not of type 'string'"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "alerts"), "x", "'alerts' was unexpected"),
    ],
)
def test_crd_schemas_reject_a_wrong_object(
    rendered: dict[str, list[Document]], kind: str, path: tuple[str | int, ...], value: Any, message: str
) -> None:
    doc = everything_object(rendered, kind)
    assert crd_errors(doc) == []
    set_at(doc, path, value)
    (error,) = crd_errors(doc)
    assert message in error


def test_crd_schemas_reject_repeated_keys(rendered: dict[str, list[Document]]) -> None:
    rule = everything_object(rendered, "PrometheusRule")
    rule["spec"]["groups"].append(copy.deepcopy(rule["spec"]["groups"][0]))
    (error,) = crd_errors(rule)
    assert error.startswith("spec.groups: repeated in a list of type map")


# --- helm lint --strict -----------------------------------------------------------------------------------


def lint(helm_python: Any, values: dict[str, Any] | None, version: str, *, strict: bool = True) -> Any:
    """`helm lint --strict helm/speechjobs -n speech --kube-version <version>`, `values` over values.yaml."""
    return helm_python.lint(CHART, values, strict=strict, namespace="speech", kube_version=f"v{version}.0")


@pytest.mark.parametrize("version", SUPPORTED)
@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_strict(helm_python: Any, variant: str, version: str) -> None:
    values, _ = VARIANTS[variant]
    result = lint(helm_python, values, version)
    assert result["total_charts_linted"] == 1
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []  # 1 is info: "icon is recommended"


def test_strict_lint_fails_on_a_warning(helm_python: Any) -> None:
    """Values reach the linted templates, and strict mode makes Helm's warnings errors: a name the API server
    would refuse is only a warning. (Lint does not stop at a template's `fail`: Helm's lint mode only logs
    it, so the chart's own guards are tested by rendering, in test_helm_chart.py.)"""
    values = {"fullnameOverride": "Speech_Jobs"}
    lenient = lint(helm_python, values, SUPPORTED[0], strict=False)
    assert lenient["errors"] == []
    warnings = [m for m in lenient["messages"] if m["severity"] == 2]
    assert {m["path"] for m in warnings} >= {"templates/deployment.yaml", "templates/service.yaml"}
    errors = lint(helm_python, values, SUPPORTED[0])["errors"]
    assert errors == [m["error"] for m in warnings]
    assert all('"Speech_Jobs' in error for error in errors)
