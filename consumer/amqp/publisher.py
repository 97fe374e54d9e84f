"""Publishing edge: job events and dead letters, each awaited until the broker confirms it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from pamqp.commands import Basic

from consumer.amqp.connection import Broker, Producer
from consumer.core.contract import (
    DEAD_LETTER_PROVIDER,
    DEAD_LETTERED_AT,
    DELIVERIES,
    ERROR,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    REASON,
    TRACEPARENT,
    Inbound,
)
from consumer.core.errors import Rejection
from consumer.core.redact import redact
from schemas.job import EventRecord

__all__ = ["DeadLetter", "EventPublisher", "OutboundEvent", "Publisher", "publish_inbound"]

log = logging.getLogger("speechjobs.publisher")


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    record: EventRecord
    provider: str
    kind: str
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    body: bytes
    routing_key: str
    exchange: str
    headers: Mapping[str, object]
    content_type: str | None
    message_id: str | None
    rejection: Rejection
    deliveries: int


class EventPublisher(Protocol):
    """What the pipeline needs of a publisher: job events and dead letters, each confirmed by the broker."""

    async def publish_events(self, events: Sequence[OutboundEvent]) -> None: ...
    async def dead_letter(self, letter: DeadLetter) -> None: ...


class Publisher:
    def __init__(
        self,
        channel: AbstractChannel,
        events: AbstractExchange,
        dead_letter: AbstractExchange | None,
        *,
        timeout: float,
    ) -> None:
        self._channel = channel  # the confirming channel the exchanges were declared on
        self._events = events
        self._dead_letter = dead_letter
        self._timeout = timeout

    @classmethod
    def on(cls, broker: Broker, *, timeout: float) -> Publisher:
        topology = broker.topology
        return cls(broker.publish_channel, topology.events, topology.dead_letter, timeout=timeout)

    async def publish_events(self, events: Sequence[OutboundEvent]) -> None:
        """Publish all at once and wait for every confirm (pipelined, not one round trip each).

        Straight on the aiormq channel underneath aio-pika's, which spends a quarter less CPU per
        event. Returns and nacks still raise: `mandatory`, on a channel opened with on_return_raises.
        """
        channel = await self._channel.get_underlay_channel()
        now = datetime.now(UTC)
        await asyncio.gather(
            *(
                channel.basic_publish(
                    event.record.body.encode(),
                    exchange=self._events.name,
                    routing_key=event.record.routing_key,
                    properties=_event_properties(event, now),
                    mandatory=True,
                    timeout=self._timeout,
                )
                for event in events
            )
        )

    async def dead_letter(self, letter: DeadLetter) -> None:
        if self._dead_letter is None:
            raise RuntimeError("this publisher was built without a dead-letter exchange")
        rejection = letter.rejection
        headers = _safe_headers(letter.headers)
        headers |= {
            REASON: rejection.reason,
            ERROR: rejection.message,
            ORIGINAL_EXCHANGE: letter.exchange,
            ORIGINAL_ROUTING_KEY: letter.routing_key,
            DEAD_LETTERED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
            DELIVERIES: letter.deliveries,
        }
        if rejection.provider:
            headers[DEAD_LETTER_PROVIDER] = rejection.provider
        message = aio_pika.Message(
            letter.body,
            content_type=letter.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=letter.message_id,
            headers=headers,
            timestamp=datetime.now(UTC),
        )
        await self._dead_letter.publish(
            message, routing_key=letter.routing_key, mandatory=True, timeout=self._timeout
        )


def _event_properties(event: OutboundEvent, now: datetime) -> Basic.Properties:
    headers: dict[str, aio_pika.abc.FieldValue] = {"provider": event.provider, "kind": event.kind}
    if event.traceparent:
        headers[TRACEPARENT] = event.traceparent
    return Basic.Properties(
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.record.event_id,
        message_type=event.record.routing_key,
        headers=headers,
        timestamp=now,
    )


_SECRET_HEADERS = frozenset(
    {"authorization", "x-ice-signature", "x-auth-token", "proxy-authorization", "cookie"}
)


def _safe_headers(headers: Mapping[str, object]) -> dict[str, aio_pika.abc.FieldValue]:
    """The original headers, minus secrets: signature headers blanked, signed URLs redacted."""
    safe: dict[str, aio_pika.abc.FieldValue] = {}
    for key, value in headers.items():
        if key.lower() in _SECRET_HEADERS:
            safe[key] = "***"
        elif isinstance(value, str):
            safe[key] = redact(value)
        elif isinstance(value, bytes | int | float | bool | dict | list | datetime) or value is None:
            safe[key] = value
    return safe


async def publish_inbound(producer: Producer, message: Inbound, *, timeout: float) -> None:
    """Publish one inbound message (persistent, mandatory) and wait for the broker's confirm."""
    await producer.inbound_exchange.publish(
        aio_pika.Message(
            message.body,
            headers={k: v for k, v in message.headers.items() if isinstance(v, str | int)},
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=datetime.now(UTC),
        ),
        routing_key=message.routing_key,
        mandatory=True,
        timeout=timeout,
    )
