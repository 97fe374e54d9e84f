"""docs/asyncapi.json: generated from the code, naming every constant of the contract, true to real bodies."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any, get_args

import pytest
from jsonschema import Draft7Validator

from consumer.amqp.publisher import DeadLetter, OutboundEvent, dead_letter_message, event_properties
from consumer.cli import main
from consumer.cli.tools import event_schema_json
from consumer.core import contract
from consumer.core.contract import CHANNELS, Inbound
from consumer.core.decode import parse_document
from consumer.core.errors import Reason, Rejection
from consumer.core.normalize import Limits
from consumer.core.state import event_id
from consumer.ops.asyncapi import document, render
from consumer.settings import AmqpSettings, ConsumerSettings, LimitsSettings
from consumer.vendors import normalize
from schemas.event import JobEvent
from schemas.job import PROVIDERS, EventRecord, JobStatus, TrackRequest
from tests.conftest import FIXTURES

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / "docs/asyncapi.json"
DOC = document()
_SCHEMAS = "#/components/schemas/"


def _resolve(node: Any) -> Any:
    """The node a local $ref points to, followed until it is no reference."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = DOC
        for part in str(node["$ref"]).removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _validator(pointer: str) -> Draft7Validator:
    # The document itself as the root, so that the references in it resolve as an AsyncAPI reader's do.
    return Draft7Validator({**DOC, "$ref": pointer})


def _channels_on(exchange: str) -> dict[str, Any]:
    return {
        name: channel
        for name, channel in DOC["channels"].items()
        if channel["bindings"]["amqp"]["exchange"]["name"] == exchange
    }


def _routing_keys(channel: dict[str, Any]) -> set[str]:
    """Every routing key a channel's address stands for, its parameters expanded over their enums."""
    address = channel["address"]
    names = re.findall(r"\{(\w+)\}", address)
    keys = set()
    for values in product(*(channel["parameters"][name]["enum"] for name in names)):
        key = address
        for name, value in zip(names, values, strict=True):
            key = key.replace(f"{{{name}}}", value)
        keys.add(key)
    return keys


def _header_properties() -> dict[str, set[str]]:
    """Each message's header names, by message."""
    return {
        name: set(_resolve(message["headers"])["properties"])
        for name, message in DOC["components"]["messages"].items()
    }


def _contract_headers() -> set[str]:
    """Every header name the contract defines: its text constants and the members of its groups of them."""
    found: set[str] = set()
    for name in contract.__all__:
        value = getattr(contract, name)
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, tuple | frozenset) and all(isinstance(v, str) for v in value):
            found.update(value)
    return found - set(CHANNELS)


# --- the committed file ---------------------------------------------------------------------------------


def test_the_committed_document_is_the_generated_one() -> None:
    # Regenerate with: .venv/bin/speechjobs schema > docs/asyncapi.json
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        "regenerate: speechjobs schema > docs/asyncapi.json"
    )


def test_the_rendering_is_indented_json_with_a_trailing_newline() -> None:
    text = render()
    assert text.endswith("}\n")
    assert text.splitlines()[1] == '  "asyncapi": "3.0.0",'
    assert json.loads(text) == DOC


def test_the_rendering_does_not_depend_on_hash_order_or_the_environment() -> None:
    # A set iterated unsorted would change the document between runs; settings read from the environment
    # would make it depend on the machine.
    env = {**os.environ, "PYTHONHASHSEED": "12345", "SPEECHJOBS_EVENTS_EXCHANGE": "elsewhere"}
    script = "import sys; from consumer.ops.asyncapi import render; sys.stdout.write(render())"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == render()


def test_exchange_names_are_the_settings_class_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("INBOUND_EXCHANGE", "EVENTS_EXCHANGE", "EVENTS_UNROUTED", "DEAD_LETTER_EXCHANGE"):
        monkeypatch.setenv(f"SPEECHJOBS_{variable}", "from-the-environment")
    assert AmqpSettings().inbound_exchange == "from-the-environment"  # the environment is really set
    exchanges = {
        name: (c["bindings"]["amqp"]["exchange"]["name"], c["bindings"]["amqp"]["exchange"]["type"])
        for name, c in document()["channels"].items()
    }
    fields = AmqpSettings.model_fields
    assert exchanges == {
        "notifications": (fields["inbound_exchange"].default, "topic"),
        "track": (fields["inbound_exchange"].default, "topic"),
        "events": (fields["events_exchange"].default, "topic"),
        "unroutedEvents": (fields["events_unrouted"].default, "fanout"),
        "deadLetters": (fields["dead_letter_exchange"].default, "fanout"),
    }


# --- the contract, all of it ----------------------------------------------------------------------------


def test_inbound_routing_keys_are_every_channel_with_every_provider() -> None:
    keys = set().union(
        *map(_routing_keys, _channels_on(AmqpSettings.model_fields["inbound_exchange"].default).values())
    )
    assert {f"{channel}.{provider}" for channel in CHANNELS for provider in PROVIDERS} <= keys
    assert {key.partition(".")[0] for key in keys} == set(CHANNELS)
    assert {key.partition(".")[2] for key in keys} <= {*PROVIDERS, "unknown"}


def test_every_header_the_contract_defines_is_described() -> None:
    described = set().union(*_header_properties().values())
    missing = _contract_headers() - described
    assert not missing, f"headers without AsyncAPI coverage: {sorted(missing)}"
    assert set(contract.INBOUND_HEADERS) <= _header_properties()["tingwuNotification"]


def test_the_dead_letter_reasons_are_the_reason_literal() -> None:
    headers = _resolve(DOC["components"]["messages"]["deadLetter"]["headers"])
    assert headers["properties"][contract.REASON]["enum"] == list(get_args(Reason))


def test_every_provider_has_a_notification_message_with_its_payload_model() -> None:
    messages = DOC["channels"]["notifications"]["messages"]
    assert len(messages) == len(PROVIDERS)
    names = {_resolve(m)["name"] for m in messages.values()}
    assert names == {f"{provider}.notification" for provider in PROVIDERS}
    received = DOC["operations"]["receiveNotifications"]["messages"]
    assert [_resolve(m)["name"] for m in received] == [f"{provider}.notification" for provider in PROVIDERS]


def test_the_limits_are_the_settings_defaults_which_the_core_enforces() -> None:
    limits = DOC["channels"]["notifications"]["x-speechjobs-limits"]
    assert limits == {name: field.default for name, field in LimitsSettings.model_fields.items()}
    assert limits == dataclasses.asdict(Limits())
    assert (
        f"`SPEECHJOBS_MAX_BODY_BYTES` = {limits['max_body_bytes']}"
        in DOC["channels"]["notifications"]["description"]
    )


def test_the_track_body_is_the_track_request_model() -> None:
    payload = _resolve(DOC["components"]["messages"]["trackRequest"]["payload"])
    assert payload == TrackRequest.model_json_schema()


# --- events ---------------------------------------------------------------------------------------------


def test_the_job_event_schema_is_the_models_and_the_committed_ones() -> None:
    schema = DOC["components"]["schemas"]["JobEvent"]
    text = json.dumps(schema)
    names = set(re.findall(r'"#/components/schemas/(\w+)"', text))
    rebuilt = json.loads(text.replace(_SCHEMAS, "#/$defs/")) | {
        "$defs": {name: DOC["components"]["schemas"][name] for name in names}
    }
    model = JobEvent.model_json_schema(mode="serialization")
    # Its $id is left out of the document on purpose: it would rebase the references in it.
    assert model.pop("$id") == json.loads(event_schema_json())["$id"]
    assert rebuilt == model
    committed = json.loads((ROOT / "schemas/job-event.schema.json").read_text())
    committed.pop("$id")
    assert rebuilt == committed


def test_the_event_messages_are_the_event_types_with_their_statuses() -> None:
    messages = {_resolve(m)["name"]: _resolve(m) for m in DOC["channels"]["events"]["messages"].values()}
    assert set(messages) == set(get_args(JobEvent.model_fields["type"].annotation))
    assert _routing_keys(DOC["channels"]["events"]) == set(messages)
    statuses = {
        name: m["payload"]["allOf"][1]["properties"]["status"]["enum"] for name, m in messages.items()
    }
    assert statuses["job.completed"] == [JobStatus.COMPLETED.value]
    assert set(statuses["job.failed"]) == {s.value for s in JobStatus if s.terminal} - {
        JobStatus.COMPLETED.value
    }
    for name, message in messages.items():
        assert message["bindings"]["amqp"]["messageType"] == name


def _outbound(kind: str, traceparent: str | None) -> OutboundEvent:
    record = EventRecord(
        event_id=event_id("tingwu", "t-1", JobStatus.COMPLETED),
        routing_key="job.completed",
        body="{}",
        created_at=datetime.now(UTC),
    )
    return OutboundEvent(record=record, provider="tingwu", kind=kind, traceparent=traceparent)


def test_the_event_headers_and_properties_are_what_the_publisher_sets() -> None:
    headers = _resolve(DOC["components"]["messages"]["jobCompleted"]["headers"])
    example = headers["properties"][contract.TRACEPARENT]["examples"][0]
    properties = event_properties(_outbound("transcription", example), datetime.now(UTC))
    assert set(properties.headers or {}) == set(headers["properties"])
    assert set(headers["required"]) <= set(
        event_properties(_outbound("x", None), datetime.now(UTC)).headers or {}
    )
    assert properties.content_type == DOC["components"]["messages"]["jobCompleted"]["contentType"]
    assert properties.delivery_mode == DOC["operations"]["publishEvents"]["bindings"]["amqp"]["deliveryMode"]
    assert properties.message_id == _outbound("x", None).record.event_id
    longest = headers["properties"]["kind"]["maxLength"]
    assert "kind" in (event_properties(_outbound("k" * longest, None), datetime.now(UTC)).headers or {})
    assert "kind" not in (
        event_properties(_outbound("k" * (longest + 1), None), datetime.now(UTC)).headers or {}
    )


def test_the_dead_letter_headers_are_what_the_publisher_sets() -> None:
    original = {contract.PROVIDER: "tingwu", "x-relay": "edge-1"}
    letter = DeadLetter(
        body=b"{oops",
        routing_key="callback.tingwu",
        exchange=AmqpSettings.model_fields["inbound_exchange"].default,
        headers=original,
        content_type="application/json",
        message_id="m-1",
        rejection=Rejection("malformed", "invalid JSON", provider="tingwu"),
        deliveries=1,
    )
    sent = set(dead_letter_message(letter, datetime.now(UTC)).headers)
    schema = _resolve(DOC["components"]["messages"]["deadLetter"]["headers"])
    verdict = sent - set(original)
    assert verdict <= set(schema["properties"])
    assert set(schema["required"]) <= verdict
    assert schema["additionalProperties"] is True  # the original headers travel along


def test_unrouted_events_and_dead_letters_are_described_with_their_queues() -> None:
    amqp, consumer = AmqpSettings.model_fields, ConsumerSettings.model_fields
    assert f"`{amqp['events_unrouted'].default}`" in DOC["channels"]["events"]["description"]
    assert str(amqp["events_unrouted_max_length"].default) in DOC["channels"]["unroutedEvents"]["description"]
    assert f"`{consumer['dead_letter_queue'].default}`" in DOC["channels"]["deadLetters"]["description"]
    assert (
        f"`{consumer['inbound_queue'].default}`" in DOC["operations"]["receiveNotifications"]["description"]
    )


# --- examples and real bodies ---------------------------------------------------------------------------


def _examples() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, message in DOC["components"]["messages"].items():
        for example in message.get("examples", []):
            yield name, example


@pytest.mark.parametrize(
    ("message", "example"), list(_examples()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_examples_fit_their_message(message: str, example: dict[str, Any]) -> None:
    pointer = f"#/components/messages/{message}"
    _validator(f"{pointer}/payload").validate(example["payload"])
    if "headers" in example:
        _validator(f"{pointer}/headers").validate(example["headers"])
    if message.startswith("job"):
        event = JobEvent.model_validate(example["payload"])
        assert event.event_id == event_id(event.provider, event.task_id, event.status)
        assert example["headers"]["provider"] == event.provider


def _accepted_fixtures() -> Iterator[tuple[str, str, Any]]:
    """(file, provider, document) of every fixture the parser accepts, XML without its root element."""
    for path in sorted(FIXTURES.glob("**/*")):
        if path.suffix not in (".json", ".xml"):
            continue
        try:
            provider = normalize(Inbound(path.read_bytes())).provider
        except Rejection:
            continue
        parsed, syntax = parse_document(path.read_bytes(), None, max_depth=64)
        if syntax == "xml":
            ((_, parsed),) = parsed.items()
        yield str(path.relative_to(FIXTURES)), provider, parsed


@pytest.mark.parametrize(
    ("name", "provider", "body"),
    list(_accepted_fixtures()),
    ids=lambda v: v if isinstance(v, str) and "/" in v else "",
)
def test_every_body_the_parser_accepts_fits_its_providers_message(
    name: str, provider: str, body: Any
) -> None:
    message = next(
        key for key, m in DOC["components"]["messages"].items() if m.get("name") == f"{provider}.notification"
    )
    errors = [
        e.message[:200] for e in _validator(f"#/components/messages/{message}/payload").iter_errors(body)
    ]
    assert not errors, f"{name}: {errors}"


def test_every_provider_has_an_accepted_fixture_and_a_wrong_shape_fails() -> None:
    assert {provider for _, provider, _ in _accepted_fixtures()} == set(PROVIDERS)
    # Not a schema that takes anything: a Tingwu envelope whose Data is a list does not fit.
    assert not _validator("#/components/schemas/TingwuPayload").is_valid({"Data": ["not", "an", "object"]})


# --- the command ----------------------------------------------------------------------------------------


def test_speechjobs_schema_prints_the_committed_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text(encoding="utf-8")


def test_speechjobs_schema_event_prints_the_event_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--event"]) == 0
    assert capsys.readouterr().out == (ROOT / "schemas/job-event.schema.json").read_text()


def test_schema_check_passes_on_the_committed_file_and_fails_on_a_changed_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", "--check", str(COMMITTED)]) == 0
    assert capsys.readouterr() == ("", "")
    stale = tmp_path / "asyncapi.json"
    stale.write_text(render().replace('"speechjobs.inbound"', '"renamed"', 1))
    assert main(["schema", "--check", str(stale)]) == 1
    assert (
        f"{stale} differs from the code's; regenerate: speechjobs schema > {stale}" in capsys.readouterr().err
    )
    assert main(["schema", "--check", str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().err
