"""One callback over HTTP to the receiver, through RabbitMQ and the consumer to a subscriber: one trace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from consumer.amqp.connection import Broker, connect_consumer
from consumer.amqp.publisher import Publisher
from consumer.receiver.app import Receiver
from consumer.receiver.service import ReceiverService
from consumer.runtime import tracing
from consumer.runtime.health import Health
from consumer.settings import Settings, load_settings
from consumer.store.mongo import MongoStore
from consumer.worker.pipeline import Pipeline
from tests.integration.faults import tingwu_body
from tests.integration.harness import AMQP_URL, DB, Bus, Names, free_port, mongodb_url

# The SDK's in-memory exporter is the test's collector: without the otel extra there is nothing to test.
memory = pytest.importorskip(
    "opentelemetry.sdk.trace.export.in_memory_span_exporter",
    reason="the otel extra is not installed (pip install -e '.[otel]')",
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.integration

TOKEN = "tw-trace-token-1"
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CALLER_TRACE, CALLER_SPAN = int(CALLER[3:35], 16), int(CALLER[36:52], 16)


@dataclass
class Stack:
    """The receiver on a real HTTP port and the consumer's pipeline, in this process, on real RabbitMQ and
    the MongoDB-protocol server, traced into memory; and a subscriber's queue on the events exchange."""

    url: str
    broker: Broker
    pipeline: Pipeline
    subscriber: AbstractQueue
    spans: InMemorySpanExporter


async def take(queue: AbstractQueue, timeout: float = 10) -> AbstractIncomingMessage:
    deadline = asyncio.get_running_loop().time() + timeout
    while (message := await queue.get(no_ack=False, fail=False)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"nothing arrived on {queue.name}"
        await asyncio.sleep(0.05)
    return message


def settings_of(names: Names, port: int) -> Settings:
    # The test's own exchanges, queues and database, by their setting names.
    own = {key.removeprefix("SPEECHJOBS_").lower(): value for key, value in names.env.items()}
    return load_settings(
        **own,
        amqp_url=AMQP_URL,
        mongodb_url=mongodb_url(),
        callback_tokens=f"tingwu={TOKEN}",
        receiver_port=port,
    )


@pytest.fixture
async def stack(names: Names, bus: Bus, db: DB) -> AsyncIterator[Stack]:  # db: dropped afterwards
    exporter: InMemorySpanExporter = memory.InMemorySpanExporter()
    assert tracing.setup("test", exporter=exporter)
    port = free_port()
    settings = settings_of(names, port)
    broker = await connect_consumer(settings.amqp, settings.consumer)  # declares the whole topology
    store = MongoStore.from_settings(settings.mongodb, settings.consumer, settings.limits)
    await store.setup()
    health = Health(working=True)
    pipeline = Pipeline(
        settings.amqp,
        settings.consumer,
        settings.limits,
        store=store,
        publisher=Publisher.on(broker, timeout=settings.amqp.publish_timeout_s),
        health=health,
    )
    assert bus.channel is not None
    subscriber = await bus.channel.declare_queue(f"t.{names.suffix}.subscriber", exclusive=True)
    await subscriber.bind(names.events_exchange, routing_key="job.*")
    # The receiver as `speechjobs receive` wires it: the service's confirmed publish, behind uvicorn.
    service = ReceiverService(settings)
    await service._connect()
    receiver = Receiver(settings.receiver, settings.limits.max_body_bytes, service._publish, service.health)
    config = uvicorn.Config(
        receiver, host="127.0.0.1", port=port, loop="none", lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        yield Stack(f"http://127.0.0.1:{port}", broker, pipeline, subscriber, exporter)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        if service._producer is not None:
            await service._producer.close()
        await broker.close()
        await store.close()
        tracing.shutdown()


def of(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def traceparent(span: ReadableSpan) -> str:
    trace_id, span_id = of(span)
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def parent_of(span: ReadableSpan) -> tuple[int, int] | None:
    return None if span.parent is None else (span.parent.trace_id, span.parent.span_id)


async def test_a_callback_and_its_event_are_one_trace_from_the_caller_to_the_subscriber(stack: Stack) -> None:
    from opentelemetry.trace import SpanKind

    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stack.url}/callbacks/tingwu/{TOKEN}",
            content=tingwu_body(7, "COMPLETED"),
            headers={"content-type": "application/json", "traceparent": CALLER},
        )
    assert response.status_code == 200
    inbound = await take(stack.broker.topology.inbound)
    await stack.pipeline.process([inbound])
    event = await take(stack.subscriber)
    await event.ack()
    tracing.flush()
    spans = list(stack.spans.get_finished_spans())

    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (consumer,) = [s for s in spans if s.kind is SpanKind.CONSUMER]
    (producer,) = [s for s in spans if s.kind is SpanKind.PRODUCER]
    (batch,) = [s for s in spans if s.name.endswith(" batch")]
    (write,) = [s for s in spans if s.name == "apply jobs"]
    # One trace, the caller's: caller -> SERVER -> (the inbound message) -> CONSUMER -> PRODUCER -> event.
    assert parent_of(server) == (CALLER_TRACE, CALLER_SPAN)
    assert inbound.headers["traceparent"] == traceparent(server)
    assert parent_of(consumer) == of(server)
    assert parent_of(producer) == of(consumer)
    assert event.headers["traceparent"] == traceparent(producer)
    assert {of(s)[0] for s in (server, consumer, producer)} == {CALLER_TRACE}
    # The batch and its write are their own trace, linked to what they processed.
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [of(server)]
    assert parent_of(write) == of(batch)
    assert [(link.context.trace_id, link.context.span_id) for link in write.links] == [of(consumer)]
    # The conventions' attributes, and nothing secret in any span.
    assert dict(server.attributes or {})["http.response.status_code"] == 200
    assert dict(producer.attributes or {})["messaging.destination.name"] == stack.broker.topology.events.name
    assert dict(producer.attributes or {})["messaging.rabbitmq.destination.routing_key"] == "job.completed"
    assert dict(producer.attributes or {})["messaging.message.id"] == event.message_id
    assert dict(consumer.attributes or {})["speechjobs.outcome"] == "stored"
    for span in spans:
        told = " ".join([span.name, *(f"{k}={v!r}" for k, v in (span.attributes or {}).items())])
        assert TOKEN not in told
        assert "s3cr3t" not in told  # the body's signed result URL


async def test_a_subscriber_of_an_untraced_caller_still_gets_the_receivers_trace(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stack.url}/callbacks/tingwu/{TOKEN}", content=tingwu_body(8, "COMPLETED")
        )
    assert response.status_code == 200
    await stack.pipeline.process([await take(stack.broker.topology.inbound)])
    event = await take(stack.subscriber)
    await event.ack()
    tracing.flush()
    (server,) = [s for s in stack.spans.get_finished_spans() if s.name.startswith("POST ")]
    assert server.parent is None  # the receiver started the trace
    header = event.headers["traceparent"]
    assert isinstance(header, str)
    assert int(header[3:35], 16) == of(server)[0]
