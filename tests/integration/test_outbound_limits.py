"""On the real broker: dead letters and events near the frame limit or with unencodable headers go out, and
the connection stays open."""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pamqp.encode
import pytest
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from consumer.amqp.publisher import DeadLetter, OutboundEvent, Publisher
from consumer.core.contract import CONVERTED_HEADERS, DROPPED_HEADERS
from consumer.core.errors import Rejection
from schemas.job import EventRecord
from tests.integration.harness import AMQP_URL

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Rig:
    connection: AbstractConnection
    channel: AbstractChannel
    publisher: Publisher
    inbound: AbstractExchange
    inbound_queue: AbstractQueue
    dead_letter_queue: AbstractQueue
    events_queue: AbstractQueue

    async def alive(self) -> None:
        """The connection is open and answers: a broker that refused a frame would have closed it."""
        await asyncio.sleep(0.3)
        assert not self.connection.is_closed
        await self.channel.declare_queue(self.dead_letter_queue.name, passive=True)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    suffix = uuid.uuid4().hex[:10]
    connection = await aio_pika.connect(AMQP_URL)
    # Confirming, and returns raise: the publisher's channel as consumer.amqp.connection opens it.
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    inbound = await channel.declare_exchange(f"t.{suffix}.inbound", aio_pika.ExchangeType.TOPIC)
    inbound_queue = await channel.declare_queue(f"t.{suffix}.inbound")
    await inbound_queue.bind(inbound, routing_key="#")
    dead_letter = await channel.declare_exchange(f"t.{suffix}.dead-letter", aio_pika.ExchangeType.FANOUT)
    dead_letter_queue = await channel.declare_queue(f"t.{suffix}.dead-letter")
    await dead_letter_queue.bind(dead_letter, routing_key="")
    events = await channel.declare_exchange(f"t.{suffix}.events", aio_pika.ExchangeType.TOPIC)
    events_queue = await channel.declare_queue(f"t.{suffix}.events")
    await events_queue.bind(events, routing_key="#")
    publisher = Publisher(channel, events, dead_letter, timeout=10)
    yield Rig(connection, channel, publisher, inbound, inbound_queue, dead_letter_queue, events_queue)
    # A fresh connection: the test's may be the one the broker closed.
    async with await aio_pika.connect(AMQP_URL) as cleanup:
        tidy = await cleanup.channel()
        for queue in (inbound_queue, dead_letter_queue, events_queue):
            await tidy.queue_delete(queue.name)
        for exchange in (inbound, dead_letter, events):
            await tidy.exchange_delete(exchange.name)
    if not connection.is_closed:
        await connection.close()


async def take(queue: AbstractQueue, timeout: float = 10) -> AbstractIncomingMessage:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        assert asyncio.get_running_loop().time() < deadline, f"nothing arrived on {queue.name}"
        await asyncio.sleep(0.05)


async def received(rig: Rig, body: bytes, headers: dict[str, Any]) -> AbstractIncomingMessage:
    """Publish on the inbound exchange and take it back: the headers exactly as the consumer gets them."""
    message = aio_pika.Message(body, headers=headers, message_id="m-1", content_type="application/json")
    await rig.inbound.publish(message, routing_key="callback.tingwu")
    return await take(rig.inbound_queue)


def letter_of(message: AbstractIncomingMessage) -> DeadLetter:
    """The dead letter the pipeline makes of a rejected delivery (Pipeline._dead_letter)."""
    return DeadLetter(
        body=message.body,
        routing_key=message.routing_key or "",
        exchange=message.exchange or "",
        headers=dict(message.headers),
        content_type=message.content_type,
        message_id=message.message_id,
        rejection=Rejection("malformed", "body is neither JSON nor XML"),
        deliveries=1,
    )


async def test_a_dead_letter_of_headers_near_the_frame_limit_goes_out_and_the_connection_stays(
    rig: Rig,
) -> None:
    body = b"not json " * 20_000
    inbound = await received(rig, body, {"x-big": "h" * 131_000, "x-small": "kept"})
    assert len(pamqp.encode.field_table(dict(inbound.headers))) > 131_000  # accepted inbound as it was

    await rig.publisher.dead_letter(letter_of(inbound))  # confirmed by the broker, or it raises

    dead = await take(rig.dead_letter_queue)
    await rig.alive()
    assert dead.headers[DROPPED_HEADERS] == ["x-big"]
    assert dead.headers["x-small"] == "kept"
    assert dead.headers["x-speechjobs-reason"] == "malformed"
    assert dead.body == body


async def test_a_dead_letter_with_non_utf8_bytes_in_a_nested_table_goes_out(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode_value = pamqp.encode.encode_table_value

    def raw_bytes_as_long_string(value: Any) -> bytes:
        # How another client can send what pamqp refuses to: a long string that is not UTF-8.
        if isinstance(value, bytes):
            return b"S" + struct.pack(">I", len(value)) + value
        return encode_value(value)

    with monkeypatch.context() as patched:
        patched.setattr(pamqp.encode, "encode_table_value", raw_bytes_as_long_string)
        inbound = await received(rig, b"not json", {"x-nested": {"raw": b"\xff\xfe\xfa"}, "x-ok": "1"})
    assert inbound.headers["x-nested"] == {"raw": b"\xff\xfe\xfa"}  # as pamqp decodes it

    await rig.publisher.dead_letter(letter_of(inbound))

    dead = await take(rig.dead_letter_queue)
    await rig.alive()
    assert dead.headers["x-nested"] == {"raw": "base64:" + base64.b64encode(b"\xff\xfe\xfa").decode()}
    assert dead.headers[CONVERTED_HEADERS] == ["x-nested.raw"]
    assert dead.headers["x-ok"] == "1"
    assert dead.body == b"not json"


async def test_an_event_with_a_huge_traceparent_goes_out_without_it(rig: Rig) -> None:
    def event(traceparent: str) -> OutboundEvent:
        record = EventRecord(
            event_id=str(uuid.uuid4()),
            routing_key="job.completed",
            body='{"type": "job.completed"}',
            created_at=datetime.now(UTC),
        )
        return OutboundEvent(record, "tingwu", "transcription", traceparent)

    await rig.publisher.publish_events([event("0" * 130_963), event(TRACEPARENT)])

    first, second = await take(rig.events_queue), await take(rig.events_queue)
    await rig.alive()
    assert first.headers == {"provider": "tingwu", "kind": "transcription"}
    assert second.headers["traceparent"] == TRACEPARENT
    assert first.body == b'{"type": "job.completed"}'
