"""Run the real `speechjobs receive` process, and the raw-socket and probe-queue helpers its tests use."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from tests.integration.harness import Bus, Names, ServiceProcess

TOKENS = {"tingwu": "tw-token-1", "tencent-ci": "ci-token-1", "huawei-metastudio": "hw-token-1"}
TOKENS["aliyun-ice"] = "ice-token-1"
ICE_KEYS = ("ice-key-old", "ice-key-new")
ICE_CALLBACK_URL = "https://callbacks.example.com/callbacks/aliyun-ice/ice-token-1"


def tokens_env(tokens: dict[str, str] | None = None, *extra: str) -> str:
    """SPEECHJOBS_CALLBACK_TOKENS for one token per provider, plus extra provider=token pairs."""
    pairs = [f"{provider}={token}" for provider, token in (tokens or TOKENS).items()]
    return ",".join([*pairs, *extra])


class ReceiverProcess(ServiceProcess):
    """One `python -m consumer receive` child process on its own port (registered with the services
    so that the conftest's leak guard kills it when a test fails)."""

    def __init__(self, names: Names, **env: str) -> None:
        super().__init__(names)
        defaults = {
            "SPEECHJOBS_RECEIVER_PORT": str(self.port),
            "SPEECHJOBS_CALLBACK_TOKENS": tokens_env(),
            "SPEECHJOBS_ICE_AUTH_KEYS": "",
        }
        self.env = {**self.env, **defaults, **env}
        self.log_path = f"/tmp/speechjobs-test-receiver-{names.suffix}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def callback_url(self, provider: str, token: str | None = None) -> str:
        return f"{self.url}/callbacks/{provider}/{token or TOKENS[provider]}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, *, wait_ready: bool = True) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - the child owns it
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumer", "receive", env=self.env, stdout=log, stderr=log
        )
        log.close()
        ServiceProcess.started.append(self)
        if wait_ready:
            await self.wait_ready()
        else:
            await self.wait_serving()

    async def http_get(self, path: str) -> tuple[int, str]:
        # uvicorn keeps HTTP/1.1 connections open: ask it to close so that the read ends.
        response = await raw_request(
            self.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        return response.status, response.body.decode()

    async def wait_serving(self, timeout: float = 30) -> None:
        """Until /healthz answers (the process serves, ready or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(f"receiver exited with {self.proc.returncode}: {self.logs()[-2000:]}")
            try:
                if (await self.http_get("/healthz"))[0] == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise TimeoutError(f"receiver not serving: {self.logs()[-2000:]}")


class BrokerProxy:
    """A TCP relay to the broker that refuses new connections while `refusing` is set: with
    `rabbitmqctl close_connection`, a broker that goes away for as long as the test wants."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.upstream = upstream
        self.refusing = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def __aenter__(self) -> BrokerProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            if self.refusing:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                writer.transport.abort()
                return
            pipes = [
                asyncio.create_task(_pipe(reader, up_writer)),
                asyncio.create_task(_pipe(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                writer.transport.abort()
                up_writer.transport.abort()
        finally:
            self._relays.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()


@dataclass(frozen=True, slots=True)
class RawResponse:
    """What came back on a raw connection: nothing at all (status 0), or a whole response."""

    status: int
    head: bytes
    body: bytes
    complete: bool  # the body is as long as the head's content-length says

    @property
    def empty(self) -> bool:
        return self.status == 0 and not self.head


def parse_response(raw: bytes) -> RawResponse:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not raw:
        return RawResponse(0, b"", b"", False)
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return RawResponse(-1, head, body, False)
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"content-length:")
        ),
        None,
    )
    complete = bool(sep) and (length is None or len(body) == length)
    return RawResponse(status, head, body[:length] if length is not None else body, complete)


async def raw_request(
    port: int, data: bytes, *, half_close: bool = False, timeout: float = 10
) -> RawResponse:
    """Send bytes on a fresh connection and read until the server closes it (it must: Connection: close,
    an error, or a timeout of its own)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(data)
            await writer.drain()
            if half_close and writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass  # the server answered and closed before taking everything: read what it said
        raw = await asyncio.wait_for(read_all(reader), timeout)
    finally:
        writer.close()
    return parse_response(raw)


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One whole response: its head and body may come in separate reads."""
    raw = b""
    while not (response := parse_response(raw)).complete:
        chunk = await reader.read(65536)
        if not chunk:
            break
        raw += chunk
    return response


async def read_all(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except ConnectionError:
        pass  # what arrived before a reset still counts
    return b"".join(chunks)


def post_bytes(path: str, body: bytes, *headers: str) -> bytes:
    """A well-formed HTTP/1.1 POST that asks the server to close the connection after answering."""
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode() + body


async def probe_queue(bus: Bus) -> AbstractQueue:
    """An exclusive queue bound with # to the inbound exchange: every message the receiver publishes
    is there. Declares the exchange as the receiver does, so it may come first."""
    assert bus.channel is not None
    exchange = await bus.channel.declare_exchange(
        bus.names.inbound_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await bus.channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="#")
    return queue


async def take_all(queue: AbstractQueue, *, settle: float = 0.3) -> list[AbstractIncomingMessage]:
    """Every message in the queue, once nothing more arrived for `settle` seconds."""
    got: list[AbstractIncomingMessage] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settle:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.02)
            continue
        got.append(message)
        quiet_since = time.monotonic()
    return got
