"""python -m bench.receiver: `speechjobs receive` against the relay a user would write, under HTTP load.

Each server runs as a process of its own (one uvicorn worker, as the receiver runs) on the same broker,
publishing to its own inbound exchange with a queue bound to it, purged after every phase and deleted at
the end. The servers: the receiver, the FastAPI + aio-pika relay (bench/relay.py), the floor (a bare ASGI
callable publishing on aiormq, bench/relay.py too) and, with --variant, the receiver with one more setting.
A load generator in a process of its own (wrk, or the async client below) keeps many keep-alive connections
busy posting a real Tingwu callback:

- closed loop for N seconds, in rounds that alternate the servers: the maximum rate, and the server
  process's CPU per request (from /proc, sampled like bench/measure.py);
- open loop at half of each server's own maximum rate (the floor and variants: at the receiver's):
  latency to the 200, measured from the time each request was due, so a stalled server is not hidden by a
  waiting client;
- optionally (--profile) py-spy on the receiver and the relay under closed-loop load: a flame graph each,
  and the top costs.

Each phase starts once the broker and the servers are idle and the rest of the machine nearly so, and
records how much CPU others took meanwhile. It prints a table and the ratios receiver ÷ relay, and writes
results/receiver-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aio_pika
import psutil
from aio_pika.abc import AbstractConnection

from bench.measure import ProcSampler, find_server_pids, percentile, stop_process
from bench.profile import hotspots, py_spy
from bench.report import clean, fmt, machine_info, package_versions, redact_url, target_entry
from consumer.amqp.connection import inbound_queue_arguments
from consumer.settings import load_settings

__all__ = ["CONTENDERS", "main"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BODY = ROOT / "tests" / "fixtures" / "seeds" / "tingwu_callback_completed.json"
PROVIDER = "tingwu"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
MB = 1024 * 1024
PACKAGES = (
    "starlette",
    "fastapi",
    "uvicorn",
    "httptools",
    "uvloop",
    "aio-pika",
    "aiormq",
    "pamqp",
    "prometheus-client",
    "orjson",
    "psutil",
)

# wrk's script: POST the body; at the end, one JSON line the driver reads (latencies in microseconds).
_WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    argv: tuple[str, ...]  # after the interpreter
    env: tuple[tuple[str, str], ...] = ()  # on top of the shared variables
    profile: bool = False  # profiled with --profile
    # Paced at the receiver's rate, not at half its own max. The floor: a control for the paced runs (it
    # takes little CPU there, so a slow answer from it is the machine's or the broker's, not the server's).
    # A variant: an A/B against the receiver at the same load.
    paced_like_receiver: bool = False


RECEIVER = Contender("receiver", "speechjobs receive", ("-m", "consumer", "receive"), profile=True)
CONTENDERS: tuple[Contender, ...] = (
    RECEIVER,
    Contender("relay", "FastAPI + aio-pika relay", ("-m", "bench.relay"), profile=True),
    # Not a contender: the stack's floor (bench/relay.py), to show how much of a request is the receiver's.
    Contender(
        "floor",
        "bare ASGI + aiormq (floor)",
        ("-m", "bench.relay", "bare"),
        profile=True,
        paced_like_receiver=True,
    ),
)


def variant(assignment: str) -> Contender:
    """The receiver with one more variable (e.g. SPEECHJOBS_LOG_LEVEL=WARNING), as a contender of its own."""
    name, _, value = assignment.partition("=")
    short = name.removeprefix("SPEECHJOBS_").lower()
    return Contender(
        f"receiver[{short}={value}]",
        f"receive, {short}={value}",
        RECEIVER.argv,
        env=((name, value),),
        paced_like_receiver=True,  # an A/B against the receiver: the same paced rate
    )


@dataclass(slots=True)
class Options:
    amqp_url: str
    seconds: int
    rounds: int
    paced_seconds: float
    warmup_seconds: int
    connections: int
    loadgen: str  # "wrk" or "python"
    wrk_threads: int
    profile: bool
    profile_seconds: int
    queue_type: str
    work_dir: Path
    body: bytes = field(default_factory=BODY.read_bytes)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))


# ---------------------------------------------------------------------------------------------------------
# The load generator's async client (a process of its own: python -m bench.receiver --loadgen-child JSON)
# ---------------------------------------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding (no pipelining, as clients do)."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0  # when the outstanding request was due (paced) or sent (closed loop)
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, due: float) -> None:
        assert self.transport is not None
        self.due, self.busy = due, True
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 17)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(buffer) < total:
                return
            del buffer[:total]
            self.busy = False
            self.load.answered(self, int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost(self)


class _Load:
    """Many connections to one URL: closed loop (each sends again when answered) or open loop (paced)."""

    def __init__(self, host: str, port: int, path: str, body: bytes, connections: int) -> None:
        self.host, self.port, self.connections = host, port, connections
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.closed_loop = False
        self.deadline = math.inf  # closed loop: answers after it are not counted and nothing more is sent
        self.latencies: list[float] = []  # seconds, of 2xx answers
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors = 0  # connections lost with a request outstanding
        self.outstanding = 0
        self.idle: list[_Connection] = []
        self.pending: collections.deque[float] = collections.deque()
        self.submitting = False
        self.drained = asyncio.Event()
        self._opening: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        for _ in range(self.connections):
            await self._open_one()

    async def _open_one(self) -> None:
        loop = asyncio.get_running_loop()
        transport, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        conn.connection_made(transport)  # uvloop may call it only after create_connection returned
        self.idle.append(conn)
        if self.pending:
            self._next(self.idle.pop())

    def submit(self, due: float) -> None:
        self.outstanding += 1
        if self.idle:
            self.idle.pop().send(due)
        else:
            self.pending.append(due)

    def _next(self, conn: _Connection) -> None:
        if self.closed_loop:
            if time.perf_counter() < self.deadline:
                self.outstanding += 1
                conn.send(time.perf_counter())
                return
        elif self.pending:
            conn.send(self.pending.popleft())
            return
        self.idle.append(conn)
        if not self.outstanding and not self.submitting:
            self.drained.set()

    def answered(self, conn: _Connection, status: int) -> None:
        now = time.perf_counter()
        self.outstanding -= 1
        if now <= self.deadline:
            self.statuses[status] += 1
            if 200 <= status < 300:
                self.latencies.append(now - conn.due)
        self._next(conn)

    def lost(self, conn: _Connection) -> None:
        if conn.busy:
            self.errors += 1
            self.outstanding -= 1
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        if self.submitting or (self.closed_loop and time.perf_counter() < self.deadline):
            task = asyncio.get_running_loop().create_task(self._open_one())
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)
        elif not self.outstanding:
            self.drained.set()

    async def closed(self, seconds: float) -> dict[str, Any]:
        self.closed_loop = True
        started = time.perf_counter()
        self.deadline = started + seconds
        for conn in list(self.idle):
            self.idle.remove(conn)
            self._next(conn)
        await asyncio.sleep(seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained.wait(), 30)
        return self._summary(seconds, requested=None)

    async def paced(self, rate: float, seconds: float) -> dict[str, Any]:
        count = max(1, int(rate * seconds))
        self.submitting = True
        started = time.perf_counter() + 0.01
        i = 0
        while i < count:
            due = min(count, int((time.perf_counter() - started) * rate) + 1)
            while i < due:
                self.submit(started + i / rate)
                i += 1
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        submitted = time.perf_counter() - started
        self.submitting = False
        if not self.outstanding:
            self.drained.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained.wait(), seconds + 30)
        summary = self._summary(submitted, requested=count)
        summary["rate_target"] = round(rate, 1)
        summary["rate_achieved"] = round(count / max(submitted, 1e-9), 1)
        return summary

    def _summary(self, seconds: float, requested: int | None) -> dict[str, Any]:
        values = sorted(v * 1000 for v in self.latencies)
        answered = sum(self.statuses.values())
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        return {
            "requests": answered,
            "ok": ok,
            "non_2xx": answered - ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            # Paced: every request due and not answered (a lost connection or no answer in time).
            "errors": requested - answered if requested is not None else self.errors,
            "duration_s": round(seconds, 3),
            "p50_ms": _round(percentile(values, 50)),
            "p90_ms": _round(percentile(values, 90)),
            "p99_ms": _round(percentile(values, 99)),
            "p999_ms": _round(percentile(values, 99.9)),
            "max_ms": _round(values[-1] if values else math.nan),
            "cdf_ms": _cdf_points(values),
        }


async def _loadgen(config: dict[str, Any], body: bytes) -> dict[str, Any]:
    load = _Load("127.0.0.1", config["port"], config["path"], body, config["c"])
    await load.open()
    started, cpu = time.time(), time.process_time()
    if config["mode"] == "closed":
        result = await load.closed(config["seconds"])
    else:
        result = await load.paced(config["rate"], config["seconds"])
    # The measured phase only: not the interpreter's start-up nor the connections' opening.
    return result | {"window": (started, time.time()), "loadgen_cpu_s": time.process_time() - cpu}


def _loadgen_child(text: str) -> int:
    config = json.loads(text)
    body = Path(config["body"]).read_bytes()
    try:
        import uvloop
    except ImportError:  # the standard loop only makes the client costlier
        result = asyncio.run(_loadgen(config, body))
    else:
        result = uvloop.run(_loadgen(config, body))
    print(json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _round(value: float, digits: int = 2) -> float:
    return round(value, digits) if not math.isnan(value) else math.nan


def _cdf_points(values: list[float], points: int = 200) -> list[float]:
    if not values:
        return []
    return [round(values[min(len(values) - 1, int(i / points * len(values)))], 2) for i in range(points + 1)]


def _children_cpu() -> float:
    """CPU seconds of this process's children that have ended and been waited for (the load generator)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Server:
    """One contender: its exchange and bound queue, its process, its log."""

    def __init__(self, contender: Contender, opts: Options) -> None:
        self.contender = contender
        self.opts = opts
        suffix = uuid.uuid4().hex[:10]
        self.slug = re.sub(r"[^A-Za-z0-9]+", "-", contender.key).strip("-")
        self.exchange = f"bench.{suffix}.{self.slug}.inbound"
        self.queue = self.exchange
        self.port = _free_port()
        self.path = f"/callbacks/{PROVIDER}/{opts.token}"
        self.log_path = opts.work_dir / f"{self.slug}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.collector: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def declare(self, connection: AbstractConnection) -> None:
        """The inbound exchange and a queue bound to it with `#`, of the type `speechjobs run` declares."""
        settings = load_settings(inbound_exchange=self.exchange, queue_type=self.opts.queue_type)
        channel = await connection.channel()
        try:
            exchange = await channel.declare_exchange(
                self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                self.queue,
                durable=True,
                arguments=inbound_queue_arguments(settings.amqp, settings.consumer),
            )
            await queue.bind(exchange, routing_key="#")
        finally:
            await channel.close()

    async def start(self) -> int:
        # Every contender on the receiver's defaults: none of the caller's own SPEECHJOBS_* settings.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHJOBS_")}
        env = {
            **inherited,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "SPEECHJOBS_AMQP_URL": self.opts.amqp_url,
            "SPEECHJOBS_INBOUND_EXCHANGE": self.exchange,
            "SPEECHJOBS_CALLBACK_TOKENS": f"{PROVIDER}={self.opts.token}",
            "SPEECHJOBS_RECEIVER_PORT": str(self.port),
            **dict(self.contender.env),
        }
        # Output goes to a pipe drained by another process, as a container runtime collects it; the server
        # then pays for its log lines what it would in a pod, not a write into a busy disk's journal.
        read_end, write_end = os.pipe()
        try:
            with self.log_path.open("ab") as log:
                self.collector = await asyncio.create_subprocess_exec("cat", stdin=read_end, stdout=log)
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *self.contender.argv, env=env, cwd=ROOT, stdout=write_end, stderr=write_end
            )
        finally:
            os.close(read_end)
            os.close(write_end)
        return self.proc.pid

    async def ready(self, timeout: float = 60) -> dict[str, int]:
        """Wait until a callback is answered 200; then how it answers a wrong token and a stranger."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.contender.key} exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError):
                if await _post(self.port, self.path, self.opts.body) == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.contender.key} not answering 200 in {timeout:.0f} s:\n{self.tail()}"
                )
            await asyncio.sleep(0.2)
        return {
            "right_token": 200,
            "wrong_token": await _post(self.port, f"/callbacks/{PROVIDER}/not-{self.opts.token}", b"{}"),
            "unknown_provider": await _post(self.port, f"/callbacks/nobody/{self.opts.token}", b"{}"),
        }

    async def purge(self, connection: AbstractConnection) -> int:
        channel = await connection.channel()
        try:
            queue = await channel.get_queue(self.queue)
            result = await queue.purge()
            return int(result.message_count or 0)
        finally:
            await channel.close()

    async def stop(self) -> int | None:
        returncode = await stop_process(self.proc)
        if self.collector is not None:
            await self.collector.wait()  # it ends at the pipe's end, once the server's output is all in
        return returncode

    async def delete(self, connection: AbstractConnection) -> None:
        for delete in ("queue", "exchange"):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                if delete == "queue":
                    await channel.queue_delete(self.queue)
                else:
                    await channel.exchange_delete(self.exchange)
            with contextlib.suppress(Exception):
                await channel.close()

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


async def _post(port: int, path: str, body: bytes) -> int:
    """One request on its own connection: the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        return int(line.split()[1]) if line.startswith(b"HTTP/") else 0
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[str, str, int]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return out.decode(errors="replace"), err.decode(errors="replace"), proc.returncode


def _machine_now() -> tuple[float, float, float, float, float, float]:
    """Wall clock, the machine's busy and stolen CPU seconds (all cores), ended children's CPU, and the
    disks' bytes written and busy milliseconds (a broker's confirm waits for its disk)."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    busy = sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    disk = psutil.disk_io_counters()
    written, disk_busy = (disk.write_bytes, getattr(disk, "busy_time", 0)) if disk is not None else (0, 0)
    return time.time(), busy, getattr(t, "steal", 0.0), _children_cpu(), float(written), float(disk_busy)


def _machine_between(before: tuple[float, float, float, float, float, float]) -> dict[str, float]:
    after = _machine_now()
    return {
        "start": before[0],
        "end": after[0],
        "busy_s": after[1] - before[1],
        "steal_s": after[2] - before[2],
        "loadgen_s": after[3] - before[3],
        "disk_written_b": after[4] - before[4],
        "disk_busy_ms": after[5] - before[5],
    }


async def _closed_loop(opts: Options, server: Server, seconds: int) -> dict[str, Any]:
    """A closed-loop run from a load generator process; the wall-clock window and the generator's CPU."""
    machine = _machine_now()
    cpu_before = _children_cpu()
    started = time.time()
    if opts.loadgen == "wrk":
        script = opts.work_dir / "post.lua"
        if not script.exists():
            script.write_text(_WRK_SCRIPT)
        argv = [
            "wrk",
            f"-t{opts.wrk_threads}",
            f"-c{opts.connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            server.url,
        ]
        out, err, code = await _run_child(argv, {**os.environ, "BENCH_BODY": str(BODY)})
        line = next((x for x in out.splitlines() if x.startswith("BENCH-JSON ")), None)
        if code != 0 or line is None:
            raise RuntimeError(f"wrk failed ({code}):\n{out[-2000:]}\n{err[-2000:]}")
        raw = json.loads(line.removeprefix("BENCH-JSON "))
        errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
        result: dict[str, Any] = {
            "requests": raw["requests"],
            "ok": raw["requests"] - raw["status"],
            "non_2xx": raw["status"],
            "errors": errors,
            "duration_s": round(raw["duration_us"] / 1e6, 3),
            "p50_ms": round(raw["p50_us"] / 1000, 2),
            "p90_ms": round(raw["p90_us"] / 1000, 2),
            "p99_ms": round(raw["p99_us"] / 1000, 2),
            "max_ms": round(raw["max_us"] / 1000, 2),
            # wrk's whole life: the server is idle while wrk starts, so this adds no server CPU.
            "window": (started, time.time()),
            "loadgen_cpu_s": _children_cpu() - cpu_before,
        }
    else:
        config = {"mode": "closed", "port": server.port, "path": server.path, "body": str(BODY)}
        result = await _python_loadgen(opts, config | {"seconds": seconds})
        result.pop("cdf_ms", None)
    result["machine"] = _machine_between(machine)
    return result


async def _python_loadgen(opts: Options, config: dict[str, Any]) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "bench.receiver",
        "--loadgen-child",
        json.dumps(config | {"c": opts.connections}),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    out, err, code = await _run_child(argv, env)
    if code != 0 or not out.strip():
        raise RuntimeError(f"load generator failed ({code}):\n{out[-2000:]}\n{err[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


async def _paced(opts: Options, server: Server, rate: float, seconds: float) -> dict[str, Any]:
    machine = _machine_now()
    config = {"mode": "paced", "port": server.port, "path": server.path, "body": str(BODY)}
    result = await _python_loadgen(opts, config | {"rate": rate, "seconds": seconds})
    result["machine"] = _machine_between(machine)
    return result


def _cpu(sampler: ProcSampler, name: str, window: tuple[float, float]) -> float:
    return sampler.cpu_between(name, *window)


def _costs(sampler: ProcSampler, server: Server, run: dict[str, Any]) -> dict[str, Any]:
    """CPU of the server (and of the broker and the load generator, alongside) per answered request."""
    window = tuple(run.pop("window"))
    seconds = window[1] - window[0]
    answered = max(int(run["requests"]), 1)
    server_cpu = _cpu(sampler, server.contender.key, window)
    costs: dict[str, Any] = {
        "server_cpu_s": round(server_cpu, 3),
        "cpu_ms_per_req": round(server_cpu / answered * 1000, 4),
        "cpu_utilization": round(server_cpu / seconds, 3),
        "loadgen_cpu_ms_per_req": round(run.pop("loadgen_cpu_s") / answered * 1000, 4),
    }
    if "rabbitmq" in sampler.cpu:
        costs["broker_cpu_ms_per_req"] = round(_cpu(sampler, "rabbitmq", window) / answered * 1000, 4)
    rss = sampler.rss_between(server.contender.key, *window)
    costs["rss_mb_max"] = round(max(rss) / MB, 1) if rss else None
    # How busy the whole machine was around the run, and how much of it was someone else's.
    machine = run.pop("machine")
    start, end = machine["start"], machine["end"]
    span = max(end - start, 1e-9)
    ours = machine["loadgen_s"] + sum(sampler.cpu_between(name, start, end) for name in sampler.pids)
    costs["machine"] = {
        "busy_cores": round(machine["busy_s"] / span, 2),
        "others_cores": round(max(0.0, machine["busy_s"] - ours) / span, 2),
        "steal_cores": round(machine["steal_s"] / span, 2),
        "disk_write_mb_s": round(machine["disk_written_b"] / span / MB, 1),
        "disk_busy": round(machine["disk_busy_ms"] / 1000 / span, 2),
    }
    return run | costs


def _logged_latency(path: Path, offset: int) -> dict[str, Any]:
    """The receiver's own view of the paced run, from its log line per request: time in its handler and,
    within it, the wait for the broker's confirm. Against the client's latency, it tells where a slow
    answer spent its time: before the handler ran (the event loop, the machine), or waiting for the broker."""
    with path.open("rb") as f:
        f.seek(offset)
        lines = f.read().splitlines()
    handler: list[float] = []
    confirm: list[float] = []
    for line in lines:
        if b'"callback 200"' not in line:
            continue
        entry = json.loads(line)
        handler.append(float(entry["duration_ms"]))
        confirm.append(float(entry["confirm_ms"]))
    handler.sort()
    confirm.sort()
    return {
        "requests": len(handler),
        "handler_p50_ms": _round(percentile(handler, 50)),
        "handler_p99_ms": _round(percentile(handler, 99)),
        "confirm_p50_ms": _round(percentile(confirm, 50)),
        "confirm_p99_ms": _round(percentile(confirm, 99)),
    }


async def _quiesce(sampler: ProcSampler, limit: float = 30.0) -> dict[str, float]:
    """Wait (at most `limit` seconds) until the broker and the servers are idle (a quorum queue just purged
    may still be writing) and the rest of the machine nearly so: others run tests on it now and then, and
    on 2 cores each of their processes takes CPU from the contender being measured."""
    started = time.time()
    before = _machine_now()
    while True:
        await asyncio.sleep(0.5)
        await _settle(sampler, time.time())
        after = _machine_now()
        span = max(after[0] - before[0], 1e-9)
        ours = {name: sampler.cpu_between(name, before[0], after[0]) / span for name in sampler.pids}
        others = max(0.0, (after[1] - before[1]) / span - sum(ours.values()))
        if (all(v < 0.05 for v in ours.values()) and others < 0.15) or after[0] - started > limit:
            return {"waited_s": round(after[0] - started, 1), "others_cores": round(others, 2)}
        before = after


async def _settle(sampler: ProcSampler, when: float) -> None:
    """Let the sampler take one reading after `when`, so a window's end is interpolated, not guessed."""
    for _ in range(100):
        if sampler.covers(when):
            return
        await asyncio.sleep(sampler.interval)


def _aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds together: requests over seconds, server CPU over requests."""
    requests = sum(r["requests"] for r in rounds)
    ok = sum(r["ok"] for r in rounds)
    seconds = sum(r["duration_s"] for r in rounds)
    cpu = sum(r["server_cpu_s"] for r in rounds)
    out: dict[str, Any] = {
        "throughput_rps": round(ok / seconds, 1) if seconds else math.nan,
        "cpu_ms_per_req": round(cpu / max(requests, 1) * 1000, 4),
        "cpu_utilization": round(cpu / seconds, 3) if seconds else math.nan,
        "rps_per_cpu_second": round(ok / cpu, 1) if cpu else math.nan,
        "requests": requests,
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
    }
    # Someone else's CPU on the machine during the runs (tests, other benchmarks), in cores.
    out["others_cores"] = round(
        sum(r["machine"]["others_cores"] * r["duration_s"] for r in rounds) / seconds
        if seconds
        else math.nan,
        2,
    )
    for key in ("broker_cpu_ms_per_req", "loadgen_cpu_ms_per_req"):
        values = [r[key] * r["requests"] for r in rounds if key in r]
        if values:
            out[key] = round(sum(values) / max(requests, 1), 4)
    return out


async def _profile(opts: Options, server: Server, pid: int, svg: Path) -> dict[str, Any]:
    """py-spy on the server under closed-loop load: a flame graph, then raw stacks for the top costs."""
    binary = py_spy()
    assert binary is not None
    raw = opts.work_dir / f"{server.slug}.pyspy.txt"
    seconds = opts.profile_seconds
    load = asyncio.create_task(_closed_loop(opts, server, 2 * seconds + 4))
    try:
        await asyncio.sleep(1)
        for output, fmt in ((svg, "flamegraph"), (raw, "raw")):
            argv = [binary, "record", "-o", str(output), "--pid", str(pid), "--duration", str(seconds)]
            _, err, code = await _run_child([*argv, "--format", fmt])
            if code != 0:
                raise RuntimeError(f"py-spy failed ({code}): {err[-2000:]}")
        run = await load
    finally:
        if not load.done():
            load.cancel()
    run.pop("window", None)
    return {
        "svg": str(svg),
        "raw": str(raw),
        "under_load_rps": round(run["ok"] / run["duration_s"], 1),
        **hotspots(raw, top=25),
    }


def _versions() -> dict[str, str]:
    found = package_versions(PACKAGES)
    if shutil.which("wrk"):
        run = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        first = (run.stdout + run.stderr + "?").splitlines()[0]
        found["wrk"] = first.split(" [")[0].removeprefix("wrk ")
    return found


def _code() -> dict[str, Any]:
    """The commit measured, and whether the receiver's code or the relay differed from it."""

    def git(*args: str) -> str:
        try:
            run = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return run.stdout.strip()

    changed = git("status", "--porcelain", "--", "consumer", "schemas", "bench/relay.py", "bench/receiver.py")
    return {"commit": git("rev-parse", "HEAD") or None, "changes": changed.splitlines()}


# name: (description, comparison, threshold); no threshold: reported, not a target
TARGETS: dict[str, tuple[str, str, float | None]] = {
    "rps_per_cpu_vs_relay": ("req/s per server CPU-second: receiver ÷ relay", ">=", 2.0),
    "rps_vs_relay": ("max req/s: receiver ÷ relay", ">=", 2.0),
    "cpu_per_req_vs_relay": ("server CPU per request: receiver ÷ relay", "<=", None),
    "p99_ms_at_half_rate": ("receiver p99 ms at half its max rate", "<=", 50.0),
    "relay_p99_ms_at_half_rate": ("relay p99 ms at half its max rate", "<=", None),
    "floor_p99_ms_at_receiver_rate": ("floor p99 ms at the receiver's paced rate", "<=", None),
    "cpu_per_req_vs_floor": ("server CPU per request: receiver ÷ floor", "<=", None),
    "floor_rps_per_cpu_vs_relay": ("req/s per server CPU-second: floor ÷ relay", ">=", None),
}


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    def get(key: str, *path: str) -> float:
        value: Any = results.get(key, {})
        for part in path:
            value = value.get(part, {}) if isinstance(value, dict) else {}
        return float(value) if isinstance(value, int | float) else math.nan

    def ratio(a: float, b: float) -> float:
        return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan

    values = {
        "rps_per_cpu_vs_relay": ratio(
            get("receiver", "max", "rps_per_cpu_second"), get("relay", "max", "rps_per_cpu_second")
        ),
        "rps_vs_relay": ratio(
            get("receiver", "max", "throughput_rps"), get("relay", "max", "throughput_rps")
        ),
        "cpu_per_req_vs_relay": ratio(
            get("receiver", "max", "cpu_ms_per_req"), get("relay", "max", "cpu_ms_per_req")
        ),
        "p99_ms_at_half_rate": get("receiver", "paced", "p99_ms"),
        "relay_p99_ms_at_half_rate": get("relay", "paced", "p99_ms"),
        "floor_p99_ms_at_receiver_rate": get("floor", "paced", "p99_ms"),
        "cpu_per_req_vs_floor": ratio(
            get("receiver", "max", "cpu_ms_per_req"), get("floor", "max", "cpu_ms_per_req")
        ),
        "floor_rps_per_cpu_vs_relay": ratio(
            get("floor", "max", "rps_per_cpu_second"), get("relay", "max", "rps_per_cpu_second")
        ),
    }
    return {name: target_entry(*spec, value=values[name]) for name, spec in TARGETS.items()}


def render_table(results: dict[str, dict[str, Any]], targets: dict[str, dict[str, Any]]) -> str:
    header = (
        f"{'contender':<28} {'req/s':>7} {'CPU ms/req':>10} {'CPU util':>8} {'req/CPU-s':>9} "
        f"{'broker ms':>9} {'others':>6} {'paced @':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    lines = [header, "-" * len(header)]
    for result in results.values():
        best, paced = result["max"], result.get("paced", {})
        errors = best["non_2xx"] + best["errors"] + paced.get("non_2xx", 0) + paced.get("errors", 0)
        lines.append(
            f"{result['label']:<28} {fmt(best['throughput_rps'], 0):>7} "
            f"{fmt(best['cpu_ms_per_req'], 3):>10} "
            f"{fmt(best['cpu_utilization'], 2):>8} {fmt(best['rps_per_cpu_second'], 0):>9} "
            f"{fmt(best.get('broker_cpu_ms_per_req'), 3):>9} {fmt(best.get('others_cores'), 2):>6} "
            f"{fmt(paced.get('rate_target'), 0):>7} "
            f"{fmt(paced.get('p50_ms'), 1):>7} {fmt(paced.get('p99_ms'), 1):>7} {errors:>6}"
        )
    lines += ["", f"{'ratio':<48} {'value':>8} {'target':>8}  met"]
    for target in targets.values():
        met = {True: "yes", False: "NO", None: "-"}[target["met"]]
        lines.append(
            f"{target['description']:<48} {fmt(target['value'], 3):>8} {target['target'] or '-':>8}  {met}"
        )
    return "\n".join(lines)


def render_profile(label: str, profile: dict[str, Any], top: int = 15) -> str:
    lines = [f"{label}: {profile['samples']} on-CPU samples at {profile['under_load_rps']:,.0f} req/s"]
    lines.append(f"  flame graph: {profile['svg']}")
    for title, key in (
        ("self by package", "self_by_package"),
        ("self by function", "self"),
        ("inclusive, project code", "inclusive"),
    ):
        if profile[key]:
            lines.append(f"  {title}:")
            lines += [f"    {row['share']:6.1%}  {row['name']}" for row in profile[key][:top]]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.receiver",
        description="speechjobs receive against the relay a user would write, under HTTP load",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds per phase, one round, for CI")
    parser.add_argument("--seconds", type=int, help="closed-loop run length (10, --quick 2)")
    parser.add_argument(
        "--rounds", type=int, help="closed-loop runs per contender, alternating (2, --quick 1)"
    )
    parser.add_argument("--paced-seconds", type=float, help="paced run length (10, --quick 2)")
    parser.add_argument("--warmup-seconds", type=int, help="closed-loop warm-up, not measured (3, --quick 1)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (64)")
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="closed-loop load: wrk when installed, else the async client here; the paced run is always "
        "the async client (wrk cannot pace)",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1: the machine is small)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy flame graphs of both servers under load"
    )
    parser.add_argument("--profile-seconds", type=int, default=10, help="py-spy recording length (10)")
    parser.add_argument(
        "--queue-type", choices=("quorum", "classic"), default="quorum", help="the bound queue (quorum)"
    )
    parser.add_argument("--only", help="comma-separated contender keys (receiver, relay, floor)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also measure the receiver with this variable, e.g. SPEECHJOBS_LOG_LEVEL=WARNING (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for receiver-<date>.json")
    parser.add_argument("--amqp-url", default=os.environ.get("SPEECHJOBS_AMQP_URL", DEFAULT_AMQP))
    parser.add_argument("--loadgen-child", help=argparse.SUPPRESS)
    return parser


async def _run(args: argparse.Namespace) -> int:
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    if loadgen == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install -y wrk)")
    if args.profile and py_spy() is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    chosen = [c for c in CONTENDERS if not args.only or c.key in args.only.split(",")]
    chosen += [variant(v) for v in args.variant]
    opts = Options(
        amqp_url=args.amqp_url,
        seconds=args.seconds or (2 if args.quick else 10),
        rounds=args.rounds or (1 if args.quick else 2),
        paced_seconds=args.paced_seconds or (2.0 if args.quick else 10.0),
        warmup_seconds=args.warmup_seconds if args.warmup_seconds is not None else (1 if args.quick else 3),
        connections=args.connections,
        loadgen=loadgen,
        wrk_threads=args.wrk_threads,
        profile=args.profile,
        profile_seconds=args.profile_seconds,
        queue_type=args.queue_type,
        work_dir=Path(tempfile.mkdtemp(prefix="speechjobs-bench-receiver-")),
    )
    started = datetime.now(UTC)
    stamp = started.strftime("%Y-%m-%dT%H%M%SZ") + ("-quick" if args.quick else "")
    clock = time.monotonic()
    code = _code()
    machine = machine_info()
    print(
        f"bench.receiver: {opts.connections} connections, "
        f"{opts.rounds} x {opts.seconds} s closed loop ({loadgen}),"
        f" {opts.paced_seconds:g} s paced at half of each one's max; logs in {opts.work_dir}",
        flush=True,
    )
    connection = await aio_pika.connect(
        opts.amqp_url, client_properties={"connection_name": "bench-receiver"}
    )
    servers = [Server(c, opts) for c in chosen]
    results: dict[str, dict[str, Any]] = {}
    sampler: ProcSampler | None = None
    try:
        pids: dict[str, int] = {}
        for server in servers:
            await server.declare(connection)
            pids[server.contender.key] = await server.start()
        for server in servers:
            checks = await server.ready()
            results[server.contender.key] = {
                "key": server.contender.key,
                "label": server.contender.label,
                "argv": list(server.contender.argv),
                "checks": checks,
                "log": str(server.log_path),
                "rounds": [],
            }
            print(f"  {server.contender.label}: ready, answers {checks}", flush=True)
        broker = find_server_pids().get("rabbitmq")
        sampler = ProcSampler(pids | ({"rabbitmq": broker} if broker else {}), interval=0.05)
        sampler.start()
        for server in servers:
            if opts.warmup_seconds:
                await _closed_loop(opts, server, opts.warmup_seconds)
            await server.purge(connection)
        for round_ in range(opts.rounds):
            # Alternate the order, so that a slower stretch of the shared machine hits both alike.
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                waited = await _quiesce(sampler)
                run = await _closed_loop(opts, server, opts.seconds)
                await _settle(sampler, run["machine"]["end"])
                run = _costs(sampler, server, run)
                run["queued"] = await server.purge(connection)
                run["quiesce"] = waited
                results[server.contender.key]["rounds"].append(run)
                print(
                    f"  round {round_ + 1}, {server.contender.label}: "
                    f"{run['ok'] / run['duration_s']:,.0f} req/s, "
                    f"{run['cpu_ms_per_req']:.3f} ms CPU/req ({run['cpu_utilization']:.2f} cores), "
                    f"{run['non_2xx'] + run['errors']} errors, "
                    f"others {run['machine']['others_cores']:.2f} cores "
                    f"(waited {waited['waited_s']:g} s for quiet)",
                    flush=True,
                )
        for server in servers:
            result = results[server.contender.key]
            result["max"] = _aggregate(result["rounds"])
            rate = max(10.0, result["max"]["throughput_rps"] / 2)
            if server.contender.paced_like_receiver and "paced" in results.get("receiver", {}):
                rate = results["receiver"]["paced"]["rate_target"]
            waited = await _quiesce(sampler)
            log_offset = server.log_path.stat().st_size
            paced = await _paced(opts, server, rate, opts.paced_seconds)
            await _settle(sampler, paced["machine"]["end"])
            if server.contender.argv == RECEIVER.argv:
                paced["receiver_log"] = _logged_latency(server.log_path, log_offset)
            paced = _costs(sampler, server, paced)
            paced["queued"] = await server.purge(connection)
            paced["quiesce"] = waited
            result["paced"] = paced
            print(
                f"  paced, {server.contender.label} at {rate:,.0f} req/s: p50 {paced['p50_ms']} ms, "
                f"p99 {paced['p99_ms']} ms, {paced['cpu_ms_per_req']:.3f} ms CPU/req, "
                f"{paced['non_2xx'] + paced['errors']} errors, "
                f"others {paced['machine']['others_cores']:.2f} cores "
                f"(waited {waited['waited_s']:g} s for quiet), disk busy {paced['machine']['disk_busy']:.0%}",
                flush=True,
            )
            if paced.get("receiver_log", {}).get("requests"):
                logged = paced["receiver_log"]
                print(
                    f"    its log: p50/p99 {logged['handler_p50_ms']}/{logged['handler_p99_ms']} ms "
                    f"in the handler, {logged['confirm_p50_ms']}/{logged['confirm_p99_ms']} ms of it "
                    "for the confirm",
                    flush=True,
                )
        if opts.profile:
            for server in (s for s in servers if s.contender.profile):
                name = (
                    "receiver" if server.contender.key == "receiver" else f"receiver-{server.contender.key}"
                )
                svg = args.out / f"{name}-{stamp}.svg"
                svg.parent.mkdir(parents=True, exist_ok=True)
                print(f"  profiling {server.contender.label} ...", flush=True)
                profile = await _profile(opts, server, pids[server.contender.key], svg)
                await server.purge(connection)
                results[server.contender.key]["profile"] = profile
        versions = _versions() | {"rabbitmq": await _broker_version(connection)}
    finally:
        if sampler is not None:
            await sampler.stop()
        for server in servers:
            returncode = await server.stop()
            if returncode not in (0, None, -signal.SIGTERM):
                print(f"warning: {server.contender.key} exited with {returncode}; log: {server.log_path}")
            await server.delete(connection)
        await connection.close()
    targets = _ratios(results)
    defaults = load_settings()
    document = {
        "date": started.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "normal",
        "duration_s": round(time.monotonic() - clock, 1),
        "settings": {
            "connections": opts.connections,
            "closed_loop_seconds": opts.seconds,
            "rounds": opts.rounds,
            "warmup_seconds": opts.warmup_seconds,
            "paced_seconds": opts.paced_seconds,
            "loadgen": {"closed_loop": loadgen, "paced": "python", "wrk_threads": opts.wrk_threads},
            "body": str(BODY.relative_to(ROOT)),
            "body_bytes": len(opts.body),
            "queue_type": opts.queue_type,
            "variants": args.variant,
            "profiled": opts.profile,
            "receiver_defaults": {
                "max_in_flight": defaults.receiver.receiver_max_in_flight,
                "confirm_timeout_s": defaults.receiver.receiver_confirm_timeout_s,
                "log_format": defaults.runtime.log_format,
                "log_level": defaults.runtime.log_level,
                "event_loop": defaults.runtime.event_loop,
            },
            "relay": "uvicorn.run(app) defaults: loop auto (uvloop), http auto (httptools), access log on",
            "amqp_url": redact_url(opts.amqp_url),
            "sampled": sorted(sampler.pids) if sampler is not None else [],
        },
        "code": code,
        "machine": machine,
        "versions": versions,
        "contenders": results,
        "targets": targets,
    }
    json_path = args.out / f"receiver-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(
        json.dumps(clean(document), indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"
    )
    print()
    print(render_table(results, targets))
    for result in results.values():
        if "profile" in result:
            print("\n" + render_profile(result["label"], result["profile"]))
    print(f"\nwrote {json_path}")
    return 0


async def _broker_version(connection: AbstractConnection) -> str:
    props = getattr(getattr(connection, "transport", None), "connection", None)
    server = getattr(props, "server_properties", {}) or {}
    version = server.get("version", "?")
    return version.decode() if isinstance(version, bytes) else str(version)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.loadgen_child:
        return _loadgen_child(args.loadgen_child)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
