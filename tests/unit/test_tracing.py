"""Tracing: when the OTEL_* variables turn it on, the spans the hot paths make; off, nothing changes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from consumer.core.contract import Inbound, valid_traceparent
from consumer.poller.service import PollerService
from consumer.receiver.app import Receiver
from consumer.runtime import tracing
from consumer.runtime.health import Health
from consumer.settings import load_settings
from consumer.store.polls import Claim, PollStore
from consumer.vendors._client import Answer, StatusClient
from tests.conftest import fixture_bytes
from tests.unit.test_pipeline import FakeMessage, rig, tingwu

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT = Path(__file__).parents[2]
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CALLER_TRACE, CALLER_SPAN = int(CALLER[3:35], 16), int(CALLER[36:52], 16)
TOKEN = "tw-secret-token-1"


# When it is on --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "x"}, []),  # naming the service alone configures no exporter
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": " console, otlp ,console"}, ["console", "otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, []),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "false"}, ["console"]),
    ],
)
def test_the_standard_variables_decide_whether_tracing_is_on(
    environ: dict[str, str], exporters: list[str]
) -> None:
    assert tracing.configured_exporters(environ) == exporters


def _unconfigured_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def test_unconfigured_the_processes_neither_trace_nor_import_opentelemetry() -> None:
    # A fresh interpreter: this one may have imported the SDK for the other tests.
    script = (
        "import sys\n"
        "import consumer.cli, consumer.receiver.app, consumer.worker.pipeline, consumer.poller.service\n"
        "from consumer.runtime import tracing\n"
        "print(tracing.setup('consumer'), tracing.enabled)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=_unconfigured_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines() == ["False False", "[]"]


# Off: the traceparent travels exactly as before -----------------------------------------------------------


class Published:
    """The receiver's publish function, recording what it was given."""

    def __init__(self) -> None:
        self.messages: list[Inbound] = []

    async def __call__(self, message: Inbound, timeout: float) -> None:
        self.messages.append(message)


async def post(receiver: Receiver, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"{}") -> int:
    """One request through the ASGI app; its status."""
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(event: MutableMapping[str, Any]) -> None:
        sent.append(event)

    await receiver(scope, receive, send)
    status: int = sent[0]["status"]
    return status


def receiver_with(published: Published) -> Receiver:
    settings = load_settings(callback_tokens=f"tingwu={TOKEN}")
    return Receiver(settings.receiver, settings.limits.max_body_bytes, published, Health(working=True))


@pytest.fixture
def untraced() -> None:
    tracing.shutdown()  # whatever an earlier test left, the service's default state
    assert not tracing.enabled


@pytest.mark.usefixtures("untraced")
async def test_off_the_receiver_passes_a_valid_traceparent_on_as_it_came_and_makes_one_otherwise() -> None:
    published = Published()
    receiver = receiver_with(published)
    path = f"/callbacks/tingwu/{TOKEN}"
    assert await post(receiver, path, [(b"traceparent", CALLER.encode())]) == 200
    assert await post(receiver, path, [(b"traceparent", b"garbage")]) == 200
    assert await post(receiver, path, []) == 200
    given, replaced, fresh = (m.headers.get("traceparent") for m in published.messages)
    assert given == CALLER
    for made in (replaced, fresh):
        assert isinstance(made, str)
        assert valid_traceparent(made) == made
        assert made[3:35] != CALLER[3:35]
    assert replaced != fresh


@pytest.mark.usefixtures("untraced")
async def test_off_an_event_carries_its_messages_traceparent_unchanged() -> None:
    r = rig()
    await r.run(tingwu(1, "COMPLETED", headers={"traceparent": CALLER}), tingwu(2, "COMPLETED"))
    assert [event.traceparent for event in r.publisher.events] == [CALLER, None]


# On: the spans ---------------------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    memory = pytest.importorskip(
        "opentelemetry.sdk.trace.export.in_memory_span_exporter",
        reason="the otel extra is not installed (pip install -e '.[otel]')",
    )
    exporter: InMemorySpanExporter = memory.InMemorySpanExporter()
    assert tracing.setup("test", exporter=exporter)
    yield exporter
    tracing.shutdown()
    assert not tracing.enabled


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    tracing.flush()
    return list(exporter.get_finished_spans())


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def texts(span: ReadableSpan) -> str:
    """Everything a span tells a tracing backend, as one text to search for secrets."""
    attributes = dict(span.attributes or {})
    return " ".join([span.name, *map(str, attributes.keys()), *map(str, attributes.values())])


async def test_a_callback_is_a_server_span_under_the_callers_and_its_context_is_published(
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry.trace import SpanKind

    published = Published()
    receiver = receiver_with(published)
    body = b'{"Signature": "s3cr3t-body"}'
    status = await post(receiver, f"/callbacks/tingwu/{TOKEN}", [(b"traceparent", CALLER.encode())], body)
    assert status == 200
    (span,) = finished(spans)
    assert span.kind is SpanKind.SERVER
    assert span.name == "POST /callbacks/{provider}/{token}"
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert published.messages[0].headers["traceparent"] == traceparent(span)
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/callbacks/tingwu/{token}"
    assert TOKEN not in texts(span)
    assert "s3cr3t" not in texts(span)


async def test_a_refused_callback_is_traced_without_its_token_or_its_unknown_provider(
    spans: InMemorySpanExporter,
) -> None:
    receiver = receiver_with(Published())
    assert await post(receiver, "/callbacks/tingwu/wrong-token-9", []) == 404
    assert await post(receiver, "/callbacks/nosuch-vendor/some-token-7", []) == 404
    wrong, unknown = finished(spans)
    assert [dict(s.attributes or {})["http.response.status_code"] for s in (wrong, unknown)] == [404, 404]
    assert wrong.parent is None  # no traceparent from the caller: a trace of its own
    assert "wrong-token-9" not in texts(wrong)
    assert dict(unknown.attributes or {})["url.path"] == "/callbacks/{provider}/{token}"
    assert "nosuch-vendor" not in texts(unknown)
    assert "some-token-7" not in texts(unknown)


async def test_a_batch_traces_each_message_under_its_traceparent_its_write_and_the_events_parent(
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry.trace import SpanKind

    r = rig()
    traced, untraced = tingwu(1, "COMPLETED", headers={"traceparent": CALLER}), tingwu(2, "COMPLETED")
    garbage = FakeMessage(b"not json")
    await r.run(traced, untraced, garbage)
    found = finished(spans)
    consumers = [s for s in found if s.kind is SpanKind.CONSUMER]
    (batch,) = [s for s in found if s.name.endswith(" batch")]
    (write,) = [s for s in found if s.name == "apply jobs"]
    assert len(consumers) == 3
    first, second, third = consumers  # in the batch's order
    # The message that came with a traceparent continues its trace; the others start their own.
    assert first.parent is not None
    assert (first.parent.trace_id, first.parent.span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert second.parent is None
    assert third.parent is None
    # The events' parents are their messages' spans (the publisher's PRODUCER spans are their children).
    assert [event.traceparent for event in r.publisher.events] == [traceparent(first), traceparent(second)]
    # The batch links to the context each message came with; every message's span links back to it.
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [
        (CALLER_TRACE, CALLER_SPAN)
    ]
    for span in consumers:
        assert [link.context.span_id for link in span.links] == [batch.context.span_id]
    # One write for the batch, under it, linked to the messages whose jobs it wrote.
    assert write.kind is SpanKind.CLIENT
    assert write.parent is not None
    assert write.parent.span_id == batch.context.span_id
    assert [link.context.span_id for link in write.links] == [first.context.span_id, second.context.span_id]
    assert dict(write.attributes or {})["db.operation.batch.size"] == 2
    outcomes = [dict(s.attributes or {})["speechjobs.outcome"] for s in consumers]
    assert outcomes == ["stored", "stored", "dead-lettered"]
    assert dict(third.attributes or {})["error.type"] == "malformed"
    attributes = dict(first.attributes or {})
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == "speechjobs.inbound"
    assert attributes["messaging.rabbitmq.destination.routing_key"] == "callback.tingwu"
    assert not any("s3cr3t" in texts(s) for s in found)  # the bodies' signed URLs stay out


class _Vendor:
    """A status client that answers one Tingwu job as completed."""

    provider = "tingwu"

    async def status(self, task_id: str) -> Answer:
        return Answer(
            "ok", 200, fixture_bytes("samples/tingwu_gettaskinfo_completed_1.json"), "application/json"
        )

    async def aclose(self) -> None:
        pass


class _Polls:
    """The poll store's one call after an answer is published."""

    async def finish(self, claim: Claim, **_: object) -> None:
        pass


async def test_a_poll_is_a_client_span_whose_context_the_answer_carries(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.trace import SpanKind

    sent: list[Inbound] = []

    async def publish_inbound(producer: object, message: Inbound, *, timeout: float) -> None:
        sent.append(message)

    monkeypatch.setattr("consumer.poller.service.publish_inbound", publish_inbound)
    poller = PollerService(load_settings())
    claim = Claim("tingwu:t-1", "tingwu", "t-1", "tracked", datetime.now(UTC), None, 0, None)
    await poller._ask(claim, cast(StatusClient, _Vendor()), cast(PollStore, _Polls()), cast(Any, None))
    (span,) = finished(spans)
    assert span.kind is SpanKind.CLIENT
    assert span.parent is None
    assert span.name == "poll tingwu status"
    assert dict(span.attributes or {})["speechjobs.poll.verdict"] == "ok"
    assert dict(span.attributes or {})["http.response.status_code"] == 200
    assert [m.headers.get("traceparent") for m in sent] == [traceparent(span)]
