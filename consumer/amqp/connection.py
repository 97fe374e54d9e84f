"""RabbitMQ connections and topology: a producer declares the inbound exchange only, the consumer the rest."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)

from consumer.settings import AmqpSettings, ConsumerSettings

__all__ = [
    "TRANSIENT",
    "Broker",
    "Producer",
    "Topology",
    "TopologyError",
    "connect_consumer",
    "connect_producer",
    "declare_consumer_topology",
    "declare_events",
    "declare_inbound",
    "inbound_queue_arguments",
    "open_connection",
]

log = logging.getLogger("speechjobs.amqp")

T = TypeVar("T")

# Faults of the network or the broker's state that a later attempt may not meet; anything else (a refused
# declaration, a frame the client cannot encode) is a fault of configuration or input.
TRANSIENT: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ConnectionClosed,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
)


class TopologyError(Exception):
    """The broker refused a declaration (PRECONDITION_FAILED, ACCESS_REFUSED, ...): a configuration error
    that no retry fixes, such as a queue redeclared with another type."""


@dataclass(slots=True)
class Topology:
    inbound: AbstractQueue
    inbound_exchange: AbstractExchange
    dead_letter: AbstractExchange
    dead_letter_queue: AbstractQueue
    events: AbstractExchange


@dataclass(slots=True)
class Broker:
    """The consumer's connection: a consuming channel and a confirming publishing channel kept apart so
    that slow confirms never hold up deliveries."""

    connection: AbstractRobustConnection
    consume_channel: AbstractChannel
    publish_channel: AbstractChannel
    topology: Topology

    async def close(self) -> None:
        await self.connection.close()


@dataclass(slots=True)
class Producer:
    """A producer's connection (receiver, poller, `speechjobs send`): one confirming channel."""

    connection: AbstractRobustConnection
    channel: AbstractChannel
    inbound_exchange: AbstractExchange

    async def close(self) -> None:
        await self.connection.close()


async def open_connection(amqp: AmqpSettings, *, name: str) -> AbstractRobustConnection:
    # Host and pid in the name let an operator (or a test) find this process's connection.
    return await aio_pika.connect_robust(
        amqp.amqp_url.get_secret_value(),
        client_properties={"connection_name": f"{name} {socket.gethostname()} pid {os.getpid()}"},
        reconnect_interval=1,
    )


async def connect_consumer(amqp: AmqpSettings, consumer: ConsumerSettings) -> Broker:
    connection = await open_connection(amqp, name="speechjobs")
    try:
        consume_channel = await connection.channel(publisher_confirms=False)
        await consume_channel.set_qos(prefetch_count=consumer.prefetch)
        publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare_consumer_topology(publish_channel, consume_channel, amqp, consumer)
    except BaseException:
        await _close_quietly(connection)  # every failed attempt would otherwise leave one open
        raise
    return Broker(connection, consume_channel, publish_channel, topology)


async def connect_producer(amqp: AmqpSettings, *, name: str) -> Producer:
    connection = await open_connection(amqp, name=name)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await declare_inbound(channel, amqp)
    except BaseException:
        await _close_quietly(connection)
        raise
    return Producer(connection, channel, exchange)


async def declare_inbound(channel: AbstractChannel, amqp: AmqpSettings) -> AbstractExchange:
    """The inbound exchange, all a producer needs: it never declares the consumer's queue or prefetch."""
    return await _declared(
        channel.declare_exchange(amqp.inbound_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    )


async def declare_events(channel: AbstractChannel, amqp: AmqpSettings) -> AbstractExchange:
    """The events exchange; with an alternate exchange, an event no subscriber's binding matches lands in
    a bounded queue instead of coming back unroutable."""
    arguments: dict[str, Any] = {}
    if amqp.events_unrouted:
        unrouted = await _declared(
            channel.declare_exchange(amqp.events_unrouted, aio_pika.ExchangeType.FANOUT, durable=True)
        )
        queue = await _declared(
            channel.declare_queue(
                amqp.events_unrouted,
                durable=True,
                arguments={"x-max-length": amqp.events_unrouted_max_length, "x-overflow": "drop-head"},
            )
        )
        await queue.bind(unrouted, routing_key="")
        arguments["alternate-exchange"] = amqp.events_unrouted
    return await _declared(
        channel.declare_exchange(
            amqp.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True, arguments=arguments
        )
    )


def inbound_queue_arguments(amqp: AmqpSettings, consumer: ConsumerSettings) -> dict[str, Any]:
    args: dict[str, Any] = {"x-dead-letter-exchange": amqp.dead_letter_exchange}
    if consumer.queue_type == "quorum":
        # Our own counter dead-letters with a reason first; the broker's limit is the backstop.
        args |= {
            "x-queue-type": "quorum",
            "x-delivery-limit": consumer.max_deliveries + 2,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    return args


async def declare_consumer_topology(
    channel: AbstractChannel,
    consume_channel: AbstractChannel,
    amqp: AmqpSettings,
    consumer: ConsumerSettings,
) -> Topology:
    """Declare every exchange and queue the consumer relies on; idempotent, safe on every start."""
    dead_letter = await _declared(
        channel.declare_exchange(amqp.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    )
    dead_letter_queue = await _declared(channel.declare_queue(consumer.dead_letter_queue, durable=True))
    await dead_letter_queue.bind(dead_letter, routing_key="")
    inbound_exchange = await declare_inbound(channel, amqp)
    events = await declare_events(channel, amqp)
    # Declared on the consuming channel so that the queue object consumes there.
    inbound = await _declared(
        consume_channel.declare_queue(
            consumer.inbound_queue, arguments=inbound_queue_arguments(amqp, consumer), durable=True
        )
    )
    await inbound.bind(amqp.inbound_exchange, routing_key="#")
    return Topology(inbound, inbound_exchange, dead_letter, dead_letter_queue, events)


async def _declared(declaration: Awaitable[T]) -> T:
    try:
        return await declaration
    except aiormq.exceptions.ChannelClosed as exc:
        raise TopologyError(f"the broker refused a declaration: {exc}") from exc


async def _close_quietly(connection: AbstractRobustConnection) -> None:
    try:
        await connection.close()
    except Exception as exc:  # the connection is being abandoned; its close failing changes nothing
        log.debug("closing an abandoned connection failed: %r", exc)
