"""Optional OpenTelemetry tracing, from the standard OTEL_* variables: off, and free, unless configured."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, TypeVar

from consumer.core.contract import TRACEPARENT, header_text, valid_traceparent
from consumer.core.redact import redact

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.util.types import AttributeValue
else:
    Span = object  # annotations only: the hot paths never touch OpenTelemetry's classes themselves

__all__ = [
    "CALLBACK_ROUTE",
    "Batch",
    "Delivery",
    "Span",
    "client_span",
    "configured_exporters",
    "enabled",
    "end",
    "end_client_span",
    "end_server_span",
    "flush",
    "producer_span",
    "server_span",
    "setup",
    "shutdown",
    "traceparent_of",
]

log = logging.getLogger("speechjobs.tracing")

T = TypeVar("T")

# The one thing a hot path reads when tracing is off: `if tracing.enabled:`. OpenTelemetry is imported by
# setup() only, and only when configured, so a process without it pays neither the import nor a no-op
# tracer's calls per request.
enabled = False

# The callback path holds a secret token: spans name the route, never the path as requested.
CALLBACK_ROUTE = "/callbacks/{provider}/{token}"
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"))
_RABBITMQ = "rabbitmq"
_MAX_TEXT = 255  # routing keys and message ids are AMQP short strings; producers' text is cut to that


@dataclass(frozen=True, slots=True)
class _Otel:
    """What setup() bound once, so that the helpers below import nothing per call."""

    provider: TracerProvider
    tracer: Tracer
    propagator: TraceContextTextMapPropagator
    kind: type[SpanKind]
    link: type[Link]
    status: type[Status]
    error: StatusCode
    in_context: Callable[[Span], Context]
    span_of: Callable[[Context], Span]
    root: Context  # an empty context: a span started in it is a trace's root, whatever is current


_otel: _Otel | None = None


def configured_exporters(environ: Mapping[str, str]) -> list[str]:
    """The exporters the standard variables ask for; empty when tracing is to stay off.

    On when OTEL_TRACES_EXPORTER names anything but `none`, or when an OTLP endpoint is given (the
    exporter is then `otlp`); OTEL_SDK_DISABLED=true turns it off whatever else is set.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if names:
        return [] if "none" in names else list(dict.fromkeys(names))
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


def setup(process: str, *, exporter: SpanExporter | None = None) -> bool:
    """Start tracing for this process if the OTEL_* variables ask for it; whether it is now on.

    The SDK reads the rest of its configuration itself: the exporters the OTLP endpoint, headers and
    timeouts (OTEL_EXPORTER_OTLP_*), the batch processor its queue (OTEL_BSP_*), the provider its sampler
    (OTEL_TRACES_SAMPLER) and the resource OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the service is
    named `speechjobs-<process>` when they do not name it. `exporter` (tests) replaces the configured ones
    and turns tracing on without any variable; the process-wide provider is then left alone.
    """
    global _otel, enabled
    names = [] if exporter is not None else configured_exporters(os.environ)
    if exporter is None and not names:
        return False
    try:
        from opentelemetry import context, trace
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        log.warning("OTEL_* variables ask for tracing, but the otel extra is not installed: tracing is off")
        return False
    exporters = [exporter] if exporter is not None else _exporters(names)
    if not exporters:
        log.warning("no usable trace exporter in %s: tracing is off", names)
        return False
    shutdown()  # a second setup (tests) replaces the first
    # The variables win over the default name: the detector reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES.
    resource = Resource.create({"service.name": f"speechjobs-{process}"}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    for each in exporters:
        provider.add_span_processor(BatchSpanProcessor(each))
    if exporter is None:
        trace.set_tracer_provider(provider)  # for any other OpenTelemetry-aware library in the process
    _otel = _Otel(
        provider=provider,
        tracer=provider.get_tracer("speechjobs"),
        # W3C trace context only: the wire contract is the one `traceparent` header (core/contract.py).
        propagator=TraceContextTextMapPropagator(),
        kind=trace.SpanKind,
        link=trace.Link,
        status=trace.Status,
        error=trace.StatusCode.ERROR,
        in_context=trace.set_span_in_context,
        span_of=trace.get_current_span,
        root=context.Context(),
    )
    enabled = True
    log.info("tracing on", extra={"exporters": names or [type(exporter).__name__]})
    return True


def _exporters(names: Sequence[str]) -> list[SpanExporter]:
    found: list[SpanExporter] = []
    for name in names:
        entry = name
        if name == "otlp":
            # The SDK's `otlp` means the protocol of OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, http/protobuf
            # by default; the extra installs the HTTP exporter (no grpcio), gRPC needs its own package.
            protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            entry = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
        # The exporters' own registry, as the SDK's auto-configuration reads it: console, otlp_proto_*, ...
        loaded = entry_points(group="opentelemetry_traces_exporter", name=entry)
        if not loaded:
            log.warning("trace exporter %r (OTEL_TRACES_EXPORTER=%s) is not installed", entry, name)
            continue
        try:
            found.append(next(iter(loaded)).load()())  # each reads its own OTEL_* variables
        except Exception as exc:
            log.warning("trace exporter %r failed to start: %s", entry, type(exc).__name__)
    return found


def flush(timeout_ms: int = 5000) -> None:
    """Export the spans ended so far (tests; shutdown() does it too)."""
    if _otel is not None:
        _otel.provider.force_flush(timeout_ms)


def shutdown() -> None:
    """Turn tracing off, exporting what is still queued; safe to call when it was never on."""
    global _otel, enabled
    otel, _otel, enabled = _otel, None, False
    if otel is not None:
        otel.provider.shutdown()


def _on() -> _Otel:
    assert _otel is not None, "tracing helpers run only when tracing.enabled"
    return _otel


def _parent(traceparent: str | None) -> Context:
    """The context of a valid traceparent (a remote parent); a fresh root otherwise."""
    otel = _on()
    if traceparent is None or valid_traceparent(traceparent) is None:
        return otel.root
    return otel.propagator.extract({TRACEPARENT: traceparent}, context=otel.root)


def traceparent_of(span: Span) -> str:
    """The span's context as a traceparent: what the next hop continues the trace from."""
    otel = _on()
    carrier: dict[str, str] = {}
    otel.propagator.inject(carrier, context=otel.in_context(span))
    return carrier[TRACEPARENT]


def end(span: Span, error: BaseException | str | None = None) -> None:
    """End a span; with an error, its type (an exception's class name, never its message) and status."""
    if error is not None:
        kind = error if isinstance(error, str) else type(error).__name__
        span.set_attribute("error.type", kind)
        otel = _on()
        span.set_status(otel.status(otel.error, kind))
    span.end()


# The receiver --------------------------------------------------------------------------------------------


def server_span(method: str, provider: str | None, parent: str | None, *, scheme: str = "http") -> Span:
    """The SERVER span of one callback request, child of the caller's traceparent when it is valid.

    Named and described by the route: the token is never in it, and the provider only when it is one
    of ours (an unknown one is the caller's text).
    """
    otel = _on()
    known = method if method in _METHODS else "_OTHER"
    return otel.tracer.start_span(
        f"{known if known != '_OTHER' else 'HTTP'} {CALLBACK_ROUTE}",
        context=_parent(parent),
        kind=otel.kind.SERVER,
        attributes={
            "http.request.method": known,
            "http.route": CALLBACK_ROUTE,
            "url.path": CALLBACK_ROUTE.replace("{provider}", provider) if provider else CALLBACK_ROUTE,
            "url.scheme": scheme,
            **({"speechjobs.provider": provider} if provider else {}),
        },
    )


def end_server_span(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    end(span, str(status) if status >= 500 else None)  # a 4xx is the client's error, not the server's


# The poller ----------------------------------------------------------------------------------------------


def client_span(provider: str, operation: str, task_id: str | None = None) -> Span:
    """The CLIENT span of one vendor status request, the root of the trace its answer starts."""
    otel = _on()
    attributes: dict[str, AttributeValue] = {
        "http.request.method": "GET",  # every vendor status API is a signed GET (consumer/vendors)
        "speechjobs.provider": provider,
        "speechjobs.poll.operation": operation,
    }
    if task_id is not None:
        attributes["speechjobs.task_id"] = task_id[:_MAX_TEXT]
    return otel.tracer.start_span(
        f"poll {provider} {operation}", context=otel.root, kind=otel.kind.CLIENT, attributes=attributes
    )


def end_client_span(span: Span, verdict: str, http_status: int) -> None:
    span.set_attribute("speechjobs.poll.verdict", verdict)
    if http_status:
        span.set_attribute("http.response.status_code", http_status)
    end(span, None if verdict in ("ok", "not-found") else verdict)


# The consumer --------------------------------------------------------------------------------------------


class Delivery(Protocol):
    """What the spans read of an incoming message (aio-pika's, or a test's)."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, object]: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def exchange(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def delivery_tag(self) -> int | None: ...


class Batch:
    """The spans of one batch: the batch's own, linked to every message's context, and per message a
    CONSUMER span, child of its traceparent (a root when it has none) and linked to the batch's."""

    __slots__ = ("_messages", "span")

    def __init__(self, messages: Sequence[Delivery], *, queue: str) -> None:
        otel = _on()
        parents = [_parent(header_text(m.headers, TRACEPARENT)) for m in messages]
        remote = [otel.span_of(parent).get_span_context() for parent in parents]
        self.span = otel.tracer.start_span(
            f"process {queue} batch",
            context=otel.root,
            kind=otel.kind.INTERNAL,
            links=[otel.link(context) for context in remote if context.is_valid],
            attributes={
                "messaging.system": _RABBITMQ,
                "messaging.operation.type": "process",
                "messaging.destination.subscription.name": queue,
                "messaging.batch.message_count": len(messages),
            },
        )
        batch = [otel.link(self.span.get_span_context())]
        self._messages = {
            id(message): otel.tracer.start_span(
                f"process {queue}",
                context=parent,
                kind=otel.kind.CONSUMER,
                links=batch,
                attributes=_delivery_attributes(message, queue),
            )
            for message, parent in zip(messages, parents, strict=True)
        }

    def traceparent(self, message: Delivery) -> str:
        """The message's CONSUMER span as a traceparent: the parent of what it publishes."""
        return traceparent_of(self._messages[id(message)])

    async def writing(self, messages: Iterable[Delivery], updates: int, work: Awaitable[T]) -> T:
        """Await the batch's job write in one span, child of the batch's and linked to each message's."""
        otel = _on()
        spans = {id(m): self._messages[id(m)] for m in messages}.values()
        span = otel.tracer.start_span(
            "apply jobs",
            context=otel.in_context(self.span),
            kind=otel.kind.CLIENT,
            links=[otel.link(s.get_span_context()) for s in spans],
            attributes={"db.operation.name": "apply", "db.operation.batch.size": updates},
        )
        try:
            result = await work
        except Exception as exc:
            end(span, exc)
            raise
        end(span)
        return result

    def end(self, outcomes: Iterable[tuple[Delivery, str, str | None]]) -> None:
        """End each message's span with its outcome (and a dead letter's reason), then the batch's."""
        for message, outcome, reason in outcomes:
            span = self._messages[id(message)]
            span.set_attribute("speechjobs.outcome", outcome)
            end(span, reason if outcome == "dead-lettered" else "requeued" if outcome == "requeued" else None)
        end(self.span)


def _delivery_attributes(message: Delivery, queue: str) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "messaging.system": _RABBITMQ,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        # RabbitMQ's conventions: the destination is the exchange, the queue the subscription.
        "messaging.destination.name": message.exchange or "",
        "messaging.destination.subscription.name": queue,
        "messaging.message.body.size": len(message.body),
    }
    # A producer's text: redacted and cut as the logs have it.
    if message.routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = redact(message.routing_key[:_MAX_TEXT])
    if message.message_id:
        attributes["messaging.message.id"] = redact(message.message_id[:_MAX_TEXT])
    if message.delivery_tag is not None:
        attributes["messaging.rabbitmq.message.delivery_tag"] = message.delivery_tag
    return attributes


def producer_span(parent: str | None, *, exchange: str, routing_key: str, message_id: str) -> Span:
    """The PRODUCER span of one event publish (until its confirm), child of the span that made it."""
    otel = _on()
    return otel.tracer.start_span(
        f"publish {exchange}",
        context=_parent(parent),
        kind=otel.kind.PRODUCER,
        attributes={
            "messaging.system": _RABBITMQ,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": exchange,
            "messaging.rabbitmq.destination.routing_key": routing_key,
            "messaging.message.id": message_id,
        },
    )
