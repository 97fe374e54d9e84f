"""The client's own CPU for one upsert (pymongo) and one confirmed publish (aio-pika), measured in the run.

A peer that does one of each per message can cost no less than their sum, whatever its framework; the
figures put the peers' CPU per message in proportion (a peer far above it pays for its framework, one
near it does nothing more). Measured in-process, on uvloop, sequentially and 50 at a time, against the
run's own broker and database, in a collection and an exchange of their own, removed afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from pymongo import AsyncMongoClient

__all__ = ["measure"]

_BODY = b"x" * 900  # about a Tingwu COMPLETED event
_OPS = 1000


async def _per_op_us(op: Callable[[int], Awaitable[Any]], concurrency: int) -> float:
    await asyncio.gather(*(op(-1 - i) for i in range(concurrency)))  # warm: connections, pools
    cpu = time.process_time()
    for start in range(0, _OPS, concurrency):
        await asyncio.gather(*(op(i) for i in range(start, start + concurrency)))
    return round((time.process_time() - cpu) / _OPS * 1e6, 1)


async def measure(amqp_url: str, mongodb_url: str) -> dict[str, float]:
    """µs of this process's CPU per operation: upsert and confirmed publish, one at a time and 50 at once."""
    suffix = uuid.uuid4().hex[:10]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    jobs = client[f"bench_floor_{suffix}"]["jobs"]
    connection = await aio_pika.connect(amqp_url)
    results: dict[str, float] = {}
    try:
        channel = await connection.channel()  # publisher confirms, aio-pika's default
        exchange = await channel.declare_exchange(f"bench.floor.{suffix}", aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue(f"bench.floor.{suffix}", exclusive=True)
        await queue.bind(
            exchange, "#"
        )  # routed, as an event is: an unrouted publish is cheaper for the broker

        async def upsert(i: int) -> None:
            await jobs.update_one({"_id": f"job-{i}"}, {"$set": {"status": "completed", "n": i}}, upsert=True)

        async def publish(i: int) -> None:
            message = aio_pika.Message(_BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, routing_key="job.completed")

        for name, op in (("upsert", upsert), ("publish", publish)):
            for concurrency in (1, 50):
                results[f"{name}_us_x{concurrency}"] = await _per_op_us(op, concurrency)
        await exchange.delete()
    finally:
        await connection.close()
        await client.drop_database(f"bench_floor_{suffix}")
        await client.close()
    return results


if __name__ == "__main__":
    import json
    import sys

    import uvloop

    # Its own process on uvloop, as the peers run: `python -m bench.iofloor AMQP_URL MONGODB_URL`.
    print(json.dumps(uvloop.run(measure(sys.argv[1], sys.argv[2]))))
