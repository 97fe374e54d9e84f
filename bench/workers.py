"""python -m bench.workers KIND: the baseline consumers, each in its own process so CPU is attributable."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from pymongo import AsyncMongoClient, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection

from bench.workload import generate
from consumer.core.contract import Inbound
from consumer.core.errors import Rejection
from consumer.core.state import apply, event_id, job_key
from consumer.settings import Settings, load_settings
from consumer.store.mongo import MongoStore, job_document
from consumer.vendors import normalize
from schemas.job import Job

__all__ = ["KINDS", "main"]

Publish = Callable[[bytes, str, str, dict[str, Any]], Awaitable[None]]
Jobs = AsyncCollection[dict[str, Any]]


class Tracker:
    """First consumed and last acked wall-clock times; written to a file once `expect` messages are done."""

    def __init__(self, result: Path, expect: int) -> None:
        self.result = result
        self.expect = expect
        self.first: float | None = None
        self.last = 0.0
        self.count = 0

    def consumed(self) -> None:
        if self.first is None:
            self.first = time.time()

    def acked(self, n: int = 1) -> None:
        self.count += n
        self.last = time.time()
        if self.count >= self.expect and self.count - n < self.expect:
            self.write()

    def write(self) -> None:
        tmp = self.result.with_suffix(".tmp")
        tmp.write_text(json.dumps({"first": self.first, "last": self.last, "count": self.count}))
        tmp.replace(self.result)


def _mongo(settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    assert settings.mongodb.mongodb_url is not None, "SPEECHJOBS_MONGODB_URL is not set"
    return AsyncMongoClient(settings.mongodb.mongodb_url.get_secret_value(), tz_aware=True, appname="bench")


async def handle(
    body: bytes, routing_key: str, headers: Mapping[str, object], jobs: Jobs, publish: Publish
) -> None:
    """What a first implementation does: normalize, one upsert per update, publish each terminal event.

    It keeps no version and reads nothing back, so it cannot tell a vendor's retry of a terminal
    callback from the first one: every terminal update publishes. (find_one_and_update could return
    the previous status, but SecantusDB serves findAndModify on an existing document with a
    collection scan, which would measure the stand-in rather than the design.)
    """
    try:
        normalized = normalize(Inbound(body, routing_key, headers))
    except Rejection:
        return
    now = datetime.now(UTC)
    for update in normalized.updates:
        key = job_key(update.provider, update.task_id)
        fields = update.model_dump(exclude={"origin"})
        fields["status"] = update.status.value
        await jobs.update_one(
            {"_id": key},
            {
                "$set": {**fields, "updated_at": now},
                "$setOnInsert": {"created_at": now},
                "$addToSet": {
                    "history": {"status": update.status.value, "provider_status": update.provider_status}
                },
            },
            upsert=True,
        )
        if update.status.terminal:
            routing = "job.completed" if update.status.value == "completed" else "job.failed"
            eid = event_id(update.provider, update.task_id, update.status)
            event = {
                "event_id": eid,
                "type": routing,
                "schema_version": 1,
                "occurred_at": now.isoformat(),
                **update.model_dump(mode="json", exclude={"origin", "source", "reported_at"}),
            }
            await publish(
                orjson.dumps(event), routing, eid, {"provider": update.provider, "kind": update.kind}
            )


async def _bare(settings: Settings, tracker: Tracker, stop: asyncio.Event) -> None:
    """The client + broker ceiling: consume and ack, nothing else."""
    connection = await aio_pika.connect(settings.amqp.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=settings.consumer.prefetch)
        queue = await channel.get_queue(settings.consumer.inbound_queue)

        async def on_message(message: AbstractIncomingMessage) -> None:
            tracker.consumed()
            await message.ack()
            tracker.acked()

        await queue.consume(on_message)
        await stop.wait()


async def _straightforward(settings: Settings, tracker: Tracker, stop: asyncio.Event) -> None:
    """One message at a time: normalize, await each upsert, await each event's confirm, then ack."""
    client = _mongo(settings)
    jobs = client[settings.mongodb.mongodb_database]["jobs"]
    connection = await aio_pika.connect(settings.amqp.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=settings.consumer.prefetch)
        publish_channel = await connection.channel(publisher_confirms=True)
        events = await publish_channel.get_exchange(settings.amqp.events_exchange)
        queue = await channel.get_queue(settings.consumer.inbound_queue)

        async def publish(body: bytes, routing_key: str, message_id: str, headers: dict[str, Any]) -> None:
            message = aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
                headers=headers,
            )
            await events.publish(message, routing_key=routing_key, mandatory=True)

        async def consume() -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    tracker.consumed()
                    await handle(message.body, message.routing_key or "", message.headers, jobs, publish)
                    await message.ack()
                    tracker.acked()

        task = asyncio.create_task(consume())
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await client.close()


async def _faststream(settings: Settings, tracker: Tracker, stop: asyncio.Event) -> None:
    """The same per-message work as a FastStream subscriber (default ack policy and logging)."""
    from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
    from faststream.rabbit.annotations import RabbitMessage
    from faststream.rabbit.schemas import Channel

    client = _mongo(settings)
    jobs = client[settings.mongodb.mongodb_database]["jobs"]
    broker = RabbitBroker(
        settings.amqp.amqp_url.get_secret_value(),
        default_channel=Channel(prefetch_count=settings.consumer.prefetch),
    )
    events = RabbitExchange(settings.amqp.events_exchange, type=ExchangeType.TOPIC, declare=False)

    async def publish(body: bytes, routing_key: str, message_id: str, headers: dict[str, Any]) -> None:
        await broker.publish(
            body,
            exchange=events,
            routing_key=routing_key,
            message_id=message_id,
            headers=headers,
            content_type="application/json",
            persist=True,
            mandatory=True,
        )

    @broker.subscriber(RabbitQueue(settings.consumer.inbound_queue, declare=False))
    async def on_message(message: RabbitMessage) -> None:
        tracker.consumed()
        raw = message.raw_message
        await handle(raw.body, raw.routing_key or "", raw.headers, jobs, publish)
        tracker.acked()  # FastStream acks right after the handler returns

    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.stop()
        await client.close()


async def _db_ceiling(
    settings: Settings, tracker: Tracker, stop: asyncio.Event, seed: int, prefix: str
) -> None:
    """The database's own ceiling: the workload's job documents as unordered bulk upserts, one per batch,
    into a jobs collection indexed as speechjobs indexes it."""
    workload = generate(tracker.expect, seed=seed, prefix=prefix)
    now = datetime.now(UTC)
    state: dict[str, Job] = {}
    batches: list[tuple[int, list[ReplaceOne[dict[str, Any]]]]] = []
    size = settings.consumer.batch_size
    for start in range(0, len(workload.messages), size):
        chunk = workload.messages[start : start + size]
        ops: list[ReplaceOne[dict[str, Any]]] = []
        for message in chunk:
            for update in normalize(Inbound(message.body, message.routing_key, message.headers)).updates:
                key = job_key(update.provider, update.task_id)
                job = apply(state.get(key), update, now=now).job
                state[key] = job
                ops.append(ReplaceOne({"_id": key}, job_document(key, job), upsert=True))
        batches.append((len(chunk), ops))
    client = _mongo(settings)
    # The same collections and indexes speechjobs writes to: index upkeep is part of the database's cost.
    await MongoStore(client, settings.mongodb.mongodb_database).setup()
    jobs = client[settings.mongodb.mongodb_database]["jobs"]
    tracker.consumed()
    for count, ops in batches:
        await jobs.bulk_write(ops, ordered=False)
        tracker.acked(count)
    await stop.wait()
    await client.close()


KINDS = ("bare", "straightforward", "faststream", "db-ceiling")


async def _main(args: argparse.Namespace) -> None:
    settings = load_settings()
    tracker = Tracker(Path(args.result), args.expect)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.kind == "bare":
        await _bare(settings, tracker, stop)
    elif args.kind == "straightforward":
        await _straightforward(settings, tracker, stop)
    elif args.kind == "faststream":
        await _faststream(settings, tracker, stop)
    else:
        await _db_ceiling(settings, tracker, stop, args.seed, args.prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--result", required=True, help="where to write first/last/count once done")
    parser.add_argument("--expect", type=int, required=True, help="messages in the measured window")
    parser.add_argument("--seed", type=int, default=1, help="workload seed (db-ceiling)")
    parser.add_argument("--prefix", default="b", help="workload task-id prefix (db-ceiling)")
    args = parser.parse_args(argv)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
