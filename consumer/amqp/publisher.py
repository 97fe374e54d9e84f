"""Publishing edge: job events and dead letters, each awaited until the broker confirms it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from pamqp.commands import Basic

from consumer.amqp.connection import Broker
from consumer.core.errors import Rejection
from consumer.core.redact import redact
from schemas.job import EventRecord

__all__ = ["DeadLetter", "OutboundEvent", "Publisher"]

log = logging.getLogger("speechjobs.publisher")

# Headers a dead letter carries; `dlq` tooling reads them back.
REASON = "x-speechjobs-reason"
ERROR = "x-speechjobs-error"
PROVIDER = "x-speechjobs-provider"
ORIGINAL_EXCHANGE = "x-original-exchange"
ORIGINAL_ROUTING_KEY = "x-original-routing-key"
DEAD_LETTERED_AT = "x-speechjobs-dead-lettered-at"
DELIVERIES = "x-speechjobs-deliveries"


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


class Publisher:
    def __init__(
        self,
        channel: AbstractChannel,
        events: AbstractExchange,
        dead_letter: AbstractExchange,
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
            headers[PROVIDER] = rejection.provider
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
        headers["traceparent"] = event.traceparent
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
