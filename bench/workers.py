"""python -m bench.workers KIND: the baseline consumers, each in its own process so CPU is attributable."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import uvloop
from aio_pika.abc import AbstractIncomingMessage
from pymongo import AsyncMongoClient, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection

from bench.workload import WORKLOADS, make
from consumer.core.adapter import Context, Ignored, Result
from consumer.core.contract import TASK_ID, Inbound, header_text, parse_routing_key
from consumer.core.decode import decode
from consumer.core.errors import Rejection
from consumer.core.normalize import Limits
from consumer.core.state import apply, event_id, job_key
from consumer.settings import Settings, load_settings
from consumer.store.mongo import MongoStore, job_document
from consumer.vendors import normalize
from consumer.vendors.aliyun_ice import parse as aliyun_ice
from consumer.vendors.huawei_metastudio import parse as huawei_metastudio
from consumer.vendors.tencent_ci import parse as tencent_ci
from consumer.vendors.tingwu import parse as tingwu
from schemas.job import Job, JobUpdate, Origin

__all__ = ["KINDS", "main"]

Headers = dict[str, Any]
Publish = Callable[[dict[str, Any], str, str, Headers], Awaitable[None]]
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


async def store_and_publish(updates: Iterable[JobUpdate], jobs: Jobs, publish: Publish) -> None:
    """What a first implementation does with a message's updates: one upsert each, an event for each
    terminal one.

    It keeps no version and reads nothing back, so it cannot tell a vendor's retry of a terminal
    callback from the first one: every terminal update publishes. (find_one_and_update could return
    the previous status, but SecantusDB serves findAndModify on an existing document with a
    collection scan, which would measure the stand-in rather than the design.)
    """
    now = datetime.now(UTC)
    for update in updates:
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
            await publish(event, routing, eid, {"provider": update.provider, "kind": update.kind})


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
    """aio-pika as its documentation shows it: a queue iterator, `message.process()` (ack on success,
    reject on an exception), prefetch 50; per message: the service's normalize, an upsert per update, an
    event per terminal update awaited on a confirming channel, one log line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log = logging.getLogger("straightforward")
    client = _mongo(settings)
    jobs = client[settings.mongodb.mongodb_database]["jobs"]
    connection = await aio_pika.connect(settings.amqp.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()  # publisher confirms: aio-pika's default
        await channel.set_qos(prefetch_count=50)
        events = await channel.get_exchange(settings.amqp.events_exchange)
        queue = await channel.get_queue(settings.consumer.inbound_queue)

        async def publish(event: dict[str, Any], routing_key: str, message_id: str, headers: Headers) -> None:
            message = aio_pika.Message(
                orjson.dumps(event),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
                headers=headers,
            )
            await events.publish(message, routing_key=routing_key)  # returns once confirmed

        async def consume() -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    tracker.consumed()
                    async with message.process():
                        inbound = Inbound(message.body, message.routing_key or "", message.headers)
                        try:
                            normalized = normalize(inbound)
                        except Rejection as exc:
                            log.warning("rejected %s: %s", message.routing_key, exc.reason)
                            continue
                        await store_and_publish(normalized.updates, jobs, publish)
                        log.info("processed %s (%d updates)", message.routing_key, len(normalized.updates))
                    tracker.acked()

        task = asyncio.create_task(consume())
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await client.close()


def _decoder(unwrap: Callable[[Any], Any] = lambda document: document) -> Any:
    """A FastStream decoder for the inbound bodies: JSON or XML (xmltodict), CloudEvents unwrapped, with
    the service's own size and shape limits (consumer.core.decode), then the vendor's own unwrapping."""
    from faststream.rabbit import RabbitMessage

    async def decode_body(message: RabbitMessage) -> Any:
        decoded = decode(
            message.body,
            content_type=message.content_type,
            headers=message.headers,
            max_bytes=_LIMITS.max_body_bytes,
            max_depth=_LIMITS.max_depth,
            max_members=_LIMITS.max_members,
        )
        return unwrap(decoded.document)

    return decode_body


_LIMITS = Limits()  # the service's defaults


def _context(message: Any) -> Context:
    """What the vendor code needs besides the payload, as the service builds it (consumer.core.normalize)."""
    channel, _ = parse_routing_key(message.raw_message.routing_key or "")
    origin = Origin(
        channel=channel,
        body_sha256=hashlib.sha256(message.body).hexdigest(),
        envelope="cloudevents" if channel == "mq" else None,  # the workload's mq.* bodies are CloudEvents
    )
    return Context(
        origin=origin,
        task_id_hint=header_text(message.headers, TASK_ID),
        max_depth=_LIMITS.max_depth,
        max_members=_LIMITS.max_members,
    )


async def _faststream(settings: Settings, tracker: Tracker, stop: asyncio.Event) -> None:
    """A FastStream application as its documentation shows it: one subscriber on the inbound queue with a
    typed handler per vendor (FastStream validates the body into the vendor's pydantic model; a filter on
    the routing key picks the handler; a decoder reads XML and CloudEvents), the vendor's own code from
    model to job updates, an upsert, and each event through a publisher object. FastStream's defaults
    otherwise: its log lines (to the process's output, a file here), no prefetch limit, and acks after the
    handler returns."""
    from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
    from faststream.rabbit.annotations import RabbitMessage
    from faststream.rabbit.schemas import Channel

    client = _mongo(settings)
    jobs = client[settings.mongodb.mongodb_database]["jobs"]
    prefetch = os.environ.get("BENCH_FASTSTREAM_PREFETCH")  # an A/B of FastStream's default (no limit)
    broker = RabbitBroker(
        settings.amqp.amqp_url.get_secret_value(),
        default_channel=Channel(prefetch_count=int(prefetch)) if prefetch else None,
    )
    inbound = broker.subscriber(RabbitQueue(settings.consumer.inbound_queue, declare=False))
    events = broker.publisher(
        exchange=RabbitExchange(settings.amqp.events_exchange, type=ExchangeType.TOPIC, declare=False),
        persist=True,
        content_type="application/json",
    )

    async def publish(event: dict[str, Any], routing_key: str, message_id: str, headers: Headers) -> None:
        await events.publish(event, routing_key=routing_key, message_id=message_id, headers=headers)

    def vendor(provider: str) -> Callable[[Any], Awaitable[bool]]:
        # An async filter: FastStream runs a plain function in a thread pool, a hop per message per handler.
        suffix = f".{provider}"

        async def matches(message: RabbitMessage) -> bool:
            return (message.raw_message.routing_key or "").endswith(suffix)

        return matches

    async def done(updates: Result, message: RabbitMessage) -> None:
        tracker.consumed()
        if not isinstance(updates, Ignored):
            await store_and_publish(updates, jobs, publish)
        tracker.acked()  # FastStream acks right after the handler returns

    @inbound(filter=vendor("tingwu"), decoder=_decoder())
    async def on_tingwu(body: tingwu.Payload, message: RabbitMessage) -> None:
        await done(tingwu.updates(body, _context(message)), message)

    @inbound(filter=vendor("tencent-ci"), decoder=_decoder(tencent_ci.content))
    async def on_tencent_ci(body: tencent_ci.Payload, message: RabbitMessage) -> None:
        await done(tencent_ci.updates(body, _context(message)), message)

    @inbound(filter=vendor("aliyun-ice"), decoder=_decoder(aliyun_ice.from_xml))
    async def on_aliyun_ice(body: aliyun_ice.Payload, message: RabbitMessage) -> None:
        await done(aliyun_ice.updates(body, _context(message)), message)

    @inbound(filter=vendor("huawei-metastudio"), decoder=_decoder())
    async def on_huawei_metastudio(body: huawei_metastudio.Payload, message: RabbitMessage) -> None:
        await done(huawei_metastudio.updates(body, _context(message)), message)

    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.stop()
        await client.close()


async def _db_ceiling(
    settings: Settings, tracker: Tracker, stop: asyncio.Event, kind: str, seed: int, prefix: str
) -> None:
    """The database's own ceiling: the workload's job documents as unordered bulk upserts, one per batch,
    into a jobs collection indexed as speechjobs indexes it."""
    workload = make(kind, tracker.expect, seed=seed, prefix=prefix)
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
        await _db_ceiling(settings, tracker, stop, args.workload, args.seed, args.prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--result", required=True, help="where to write first/last/count once done")
    parser.add_argument("--expect", type=int, required=True, help="messages in the measured window")
    parser.add_argument("--seed", type=int, default=1, help="workload seed (db-ceiling)")
    parser.add_argument("--prefix", default="b", help="workload task-id prefix (db-ceiling)")
    parser.add_argument("--workload", choices=tuple(WORKLOADS), default="mix", help="workload (db-ceiling)")
    args = parser.parse_args(argv)
    # uvloop, as `faststream run` picks it when installed and as speechjobs runs by default: the comparison
    # is about the pipelines, not the event loops.
    uvloop.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
