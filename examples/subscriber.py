"""An example speechjobs subscriber: its own quorum queue, manual acks, each event_id processed once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity
from pydantic import ValidationError

from schemas.event import JobEvent

# Defaults match speechjobs' own (SPEECHJOBS_AMQP_URL, SPEECHJOBS_EVENTS_EXCHANGE).
AMQP_URL = os.environ.get("SUBSCRIBER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
EXCHANGE = os.environ.get("SUBSCRIBER_EXCHANGE", "speechjobs.events")
QUEUE = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SUBSCRIBER_QUEUE", "example.speech-jobs")
ROUTING_KEYS = os.environ.get("SUBSCRIBER_ROUTING_KEYS", "job.#").replace(" ", "").split(",")  # or job.failed
DB_PATH = os.environ.get("SUBSCRIBER_DB", "subscriber.sqlite3")
PREFETCH = int(os.environ.get("SUBSCRIBER_PREFETCH", "16"))
DELIVERY_LIMIT = 5  # a message that keeps failing on our side goes to our dead-letter queue, not round again

log = logging.getLogger("subscriber")

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed_events (event_id TEXT PRIMARY KEY, processed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    provider TEXT NOT NULL, task_id TEXT NOT NULL, status TEXT NOT NULL, event_id TEXT NOT NULL,
    results TEXT NOT NULL, PRIMARY KEY (provider, task_id)
);
"""


class Subscriber:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.busy = asyncio.Lock()  # aio-pika runs a task per delivery; one at a time keeps stopping simple
        self.stopping = False
        self.processed = self.duplicates = self.rejected = 0

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        async with self.busy:
            if self.stopping:
                return  # left unacked: the broker hands it back (to another replica) when our channel closes
            await self.handle(message)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = JobEvent.model_validate_json(message.body)
        except ValidationError as exc:
            # No retry can fix a body, so no requeue: it goes to our dead-letter queue for a person to read.
            self.rejected += 1
            log.warning(
                "rejected message %s: not a JobEvent (%d errors)", message.message_id, exc.error_count()
            )
            await message.reject(requeue=False)
            return
        row = (event.provider, event.task_id, event.status.value, event.event_id, json.dumps(event.results))
        try:
            with self.db:  # one transaction: the event id and the side effect commit together, or neither
                fresh = self.db.execute(
                    "INSERT INTO processed_events VALUES (?, datetime('now')) ON CONFLICT DO NOTHING",
                    (event.event_id,),
                ).rowcount
                # The side effect, for a new id only; an external call would take event_id as idempotency key.
                if fresh:
                    self.db.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?)", row)
        except sqlite3.Error:
            # Ours, maybe passing (a locked database): requeue; the queue's delivery limit ends a poison one.
            log.exception("could not store event %s", event.event_id)
            await message.nack(requeue=True)
            return
        # Acked only after the commit: a crash before the ack means a redelivery, which the stored id absorbs.
        await message.ack()
        if fresh:
            self.processed += 1
            log.info(
                "processed %s %s %s (event %s)", event.type, event.provider, event.task_id, event.event_id
            )
        else:
            self.duplicates += 1
            log.info("duplicate event %s: already processed, acked", event.event_id)


async def consume(subscriber: Subscriber, stop: asyncio.Event) -> int:
    # Robust: after a broker restart it reconnects and consumes again; what was unacked comes back, deduped.
    async with await aio_pika.connect_robust(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)  # bounds what sits unacked with us, not throughput
        try:  # passive: speechjobs owns the exchange and its arguments (its alternate exchange)
            exchange = await channel.get_exchange(EXCHANGE, ensure=True)
        except ChannelNotFoundEntity:
            log.error("exchange %s does not exist: start speechjobs first", EXCHANGE)
            return 1
        # Our own dead-letter exchange and queue: bodies we reject, and messages past the delivery limit.
        dead_letters = f"{QUEUE}.dead-letter"
        dlx = await channel.declare_exchange(dead_letters, aio_pika.ExchangeType.FANOUT, durable=True)
        parked = await channel.declare_queue(dead_letters, durable=True, arguments={"x-queue-type": "quorum"})
        await parked.bind(dlx)
        queue = await channel.declare_queue(
            QUEUE,
            durable=True,  # quorum queues are always durable: replicated, they survive a node's loss
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": dead_letters,
                "x-delivery-limit": DELIVERY_LIMIT,
            },
        )
        for key in ROUTING_KEYS:
            await queue.bind(exchange, routing_key=key)
        tag = await queue.consume(subscriber.on_message)  # manual acks: no_ack is False by default
        log.info("consuming %s from %s with %s", QUEUE, EXCHANGE, ", ".join(ROUTING_KEYS))
        await stop.wait()
        subscriber.stopping = True
        await queue.cancel(tag)  # no new deliveries
        async with subscriber.busy:  # the message in hand is finished: committed and acked
            pass
    return 0


async def main() -> int:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    with contextlib.closing(sqlite3.connect(DB_PATH)) as db:
        db.executescript(SCHEMA)
        subscriber = Subscriber(db)
        code = await consume(subscriber, stop)
    log.info(
        "stopped: processed %d, duplicates %d, rejected %d",
        subscriber.processed,
        subscriber.duplicates,
        subscriber.rejected,
    )
    return code


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(main()))
