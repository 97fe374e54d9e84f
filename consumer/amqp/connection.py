"""RabbitMQ edge (aio-pika): robust connection, topology, and the channels the service uses."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)

from consumer.settings import Settings

__all__ = ["Broker", "Topology", "connect", "declare_topology", "inbound_queue_arguments"]

log = logging.getLogger("speechjobs.broker")


@dataclass(slots=True)
class Topology:
    inbound: AbstractQueue
    inbound_exchange: AbstractExchange
    dead_letter: AbstractExchange
    dead_letter_queue: AbstractQueue
    events: AbstractExchange


@dataclass(slots=True)
class Broker:
    """One connection; a consuming channel and a confirming publishing channel kept apart so that
    slow confirms never hold up deliveries."""

    connection: AbstractRobustConnection
    consume_channel: AbstractChannel
    publish_channel: AbstractChannel
    topology: Topology

    async def close(self) -> None:
        await self.connection.close()


def inbound_queue_arguments(settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {"x-dead-letter-exchange": settings.dead_letter_exchange}
    if settings.queue_type == "quorum":
        # Our own counter dead-letters with a reason first; the broker's limit is the backstop.
        args |= {
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.max_deliveries + 2,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    return args


async def connect(settings: Settings, *, name: str = "speechjobs") -> Broker:
    # Host and pid in the name let an operator (or a test) find this replica's connection.
    connection = await aio_pika.connect_robust(
        settings.amqp_url.get_secret_value(),
        client_properties={"connection_name": f"{name} {socket.gethostname()} pid {os.getpid()}"},
        reconnect_interval=1,
    )
    consume_channel = await connection.channel(publisher_confirms=False)
    await consume_channel.set_qos(prefetch_count=settings.prefetch)
    publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    topology = await declare_topology(publish_channel, settings, consume_channel=consume_channel)
    return Broker(connection, consume_channel, publish_channel, topology)


async def declare_topology(
    channel: AbstractChannel, settings: Settings, *, consume_channel: AbstractChannel | None = None
) -> Topology:
    """Declare every exchange and queue the service relies on; idempotent, safe on every start."""
    dead_letter = await channel.declare_exchange(
        settings.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead_letter_queue = await channel.declare_queue(settings.dead_letter_queue, durable=True)
    await dead_letter_queue.bind(dead_letter, routing_key="")
    inbound_exchange = await channel.declare_exchange(
        settings.inbound_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    events = await channel.declare_exchange(
        settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    if settings.events_queue:
        events_queue = await channel.declare_queue(settings.events_queue, durable=True)
        await events_queue.bind(events, routing_key="#")
    # Declared on the consuming channel so that the queue object consumes there.
    inbound = await (consume_channel or channel).declare_queue(
        settings.inbound_queue, arguments=inbound_queue_arguments(settings), durable=True
    )
    await inbound.bind(settings.inbound_exchange, routing_key="#")
    return Topology(inbound, inbound_exchange, dead_letter, dead_letter_queue, events)
