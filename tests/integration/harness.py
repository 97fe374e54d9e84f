"""Run the real `speechjobs run` process against the local broker and MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

AMQP_URL = os.environ.get("SPEECHJOBS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def mongodb_url() -> str:
    url = os.environ.get("SPEECHJOBS_MONGODB_URL")
    if not url:
        raise RuntimeError("integration tests need SPEECHJOBS_MONGODB_URL (scripts/test starts SecantusDB)")
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Names:
    """Unique exchange, queue and database names so that tests never see each other's messages."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def env(self) -> dict[str, str]:
        s = self.suffix
        return {
            "SPEECHJOBS_INBOUND_EXCHANGE": f"t.{s}.inbound",
            "SPEECHJOBS_INBOUND_QUEUE": f"t.{s}.inbound",
            "SPEECHJOBS_DEAD_LETTER_EXCHANGE": f"t.{s}.dead-letter",
            "SPEECHJOBS_DEAD_LETTER_QUEUE": f"t.{s}.dead-letter",
            "SPEECHJOBS_EVENTS_EXCHANGE": f"t.{s}.events",
            # No subscriber binds in most tests: every event lands in the unrouted queue, where they read it.
            "SPEECHJOBS_EVENTS_UNROUTED": f"t.{s}.events.unrouted",
            "SPEECHJOBS_MONGODB_DATABASE": f"t_{s}",
        }

    @property
    def events_queue(self) -> str:
        return self.env["SPEECHJOBS_EVENTS_UNROUTED"]

    def __getattr__(self, name: str) -> str:
        key = f"SPEECHJOBS_{name.upper()}"
        if key in self.env:
            return self.env[key]
        raise AttributeError(name)


class ServiceProcess:
    """One `python -m consumer run` (or `poll`) child process with its own HTTP port."""

    started: ClassVar[list[ServiceProcess]] = []  # so a failing test cannot leak a running service

    def __init__(self, names: Names, *, command: str = "run", **env: str) -> None:
        self.names = names
        self.command = command
        self.port = free_port()
        self.env = {
            **os.environ,
            **names.env,
            "SPEECHJOBS_AMQP_URL": AMQP_URL,
            "SPEECHJOBS_MONGODB_URL": mongodb_url(),
            "SPEECHJOBS_HTTP_PORT": str(self.port),
            "SPEECHJOBS_LOG_FORMAT": "json",
            **env,
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = f"/tmp/speechjobs-test-{names.suffix}-{self.port}.log"

    async def start(self, *, wait_ready: bool = True) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - the child owns it
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumer", self.command, env=self.env, stdout=log, stderr=log
        )
        log.close()
        ServiceProcess.started.append(self)
        if wait_ready:
            await self.wait_ready()

    async def http_get(self, path: str) -> tuple[int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
        writer.close()
        head, _, body = raw.decode().partition("\r\n\r\n")
        return int(head.split(" ")[1]), body

    async def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}: {self.logs()[-2000:]}")
            try:
                status, _ = await self.http_get("/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError(f"service not ready: {self.logs()[-2000:]}")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def logs(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.logs().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return lines


class Bus:
    """The test's own broker connection: publish as the relay, read events and dead letters."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None

    async def open(self) -> None:
        self.connection = await aio_pika.connect(AMQP_URL)
        self.channel = await self.connection.channel(publisher_confirms=True)

    async def publish(
        self,
        body: bytes,
        routing_key: str = "",
        headers: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        message_id: str | None = None,
    ) -> None:
        assert self.channel is not None
        exchange = await self.channel.get_exchange(self.names.inbound_exchange)
        await exchange.publish(
            aio_pika.Message(
                body,
                headers=dict(headers or {}),
                content_type=content_type,
                message_id=message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )

    async def drain(
        self, queue_name: str, *, expect: int, timeout: float = 20, settle: float = 0.5
    ) -> list[AbstractIncomingMessage]:
        """Take messages until `expect` arrived and nothing more came for `settle` seconds."""
        assert self.channel is not None
        queue = await self.channel.get_queue(queue_name)
        got: list[AbstractIncomingMessage] = []
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                got.append(message)
                quiet_since = None
                continue
            if len(got) >= expect:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    break
            await asyncio.sleep(0.05)
        return got

    async def queue_depth(self, queue_name: str) -> int:
        assert self.channel is not None
        queue = await self.channel.declare_queue(queue_name, passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)

    async def cleanup(self) -> None:
        assert self.connection is not None
        for queue in (self.names.inbound_queue, self.names.dead_letter_queue, self.names.events_queue):
            channel = await self.connection.channel()
            with contextlib.suppress(Exception):  # best effort: a test may not have created it
                await channel.queue_delete(queue)
        for exchange in (
            self.names.inbound_exchange,
            self.names.dead_letter_exchange,
            self.names.events_exchange,
            self.names.events_queue,  # the unrouted-events exchange has the queue's name
        ):
            channel = await self.connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)
        await self.connection.close()


def mongo() -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(mongodb_url(), tz_aware=True)


DB = AsyncDatabase[dict[str, Any]]


async def published_ids(db: DB) -> set[str]:
    """Ids of the events whose broker confirm the service logged."""
    return {doc["_id"] async for doc in db.published_events.find({}, {"_id": 1})}


async def jobs_with_published_event(db: DB, query: Mapping[str, Any] | None = None) -> int:
    """How many jobs matching `query` have an event whose broker confirm is logged."""
    published = await published_ids(db)
    cursor = db.jobs.find({**(query or {}), "event": {"$ne": None}}, {"event.event_id": 1})
    return sum([1 async for doc in cursor if doc["event"]["event_id"] in published])


@dataclass
class Run:
    """What one `speechjobs ...` command did: its exit code, output, and how long it took."""

    code: int
    out: str
    err: str
    seconds: float = 0.0

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


Cli = Callable[..., Awaitable[Run]]
