"""Measuring instruments: process CPU/RSS sampling, event latency, log progress, publishers, percentiles."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aio_pika
import orjson
import psutil
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from bench.workload import Message

__all__ = [
    "EventCollector",
    "LogProgress",
    "ProcSampler",
    "Window",
    "find_server_pids",
    "latency_summary",
    "latency_values",
    "percentile",
    "publish_backlog",
    "publish_paced",
    "stop_process",
]


@dataclass(frozen=True, slots=True)
class Window:
    """The measured interval: first message consumed to last message acked (wall clock)."""

    first: float
    last: float
    count: int

    @property
    def seconds(self) -> float:
        return max(self.last - self.first, 1e-9)

    @property
    def rate(self) -> float:
        return self.count / self.seconds


@dataclass(slots=True)
class ProcSampler:
    """Samples user+system CPU seconds and RSS of some processes every `interval` seconds."""

    pids: dict[str, int]
    interval: float = 0.02
    times: list[float] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, list[int]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}
        self.cpu = {name: [] for name in procs}
        self.rss = {name: [] for name in procs}
        self._task = asyncio.create_task(self._run(procs))

    async def _run(self, procs: dict[str, psutil.Process]) -> None:
        while True:
            readings: dict[str, tuple[float, int]] = {}
            for name, proc in procs.items():
                try:
                    with proc.oneshot():
                        t = proc.cpu_times()
                        readings[name] = (t.user + t.system, proc.memory_info().rss)
                except psutil.Error:
                    if name == "consumer":
                        return  # it ended: keep what was sampled
                    # A server process we may not read: repeat its last reading, so it counts as idle.
                    readings[name] = (self.cpu[name][-1], self.rss[name][-1]) if self.cpu[name] else (0.0, 0)
            self.times.append(time.time())
            for name, (cpu, rss) in readings.items():
                self.cpu[name].append(cpu)
                self.rss[name].append(rss)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def cpu_at(self, name: str, when: float) -> float:
        """CPU seconds at `when`, interpolated between the samples around it."""
        times, values = self.times, self.cpu[name]
        if not times:
            return 0.0
        i = bisect.bisect_left(times, when)
        if i <= 0:
            return values[0]
        if i >= len(times):
            return values[-1]
        t0, t1 = times[i - 1], times[i]
        share = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
        return values[i - 1] + share * (values[i] - values[i - 1])

    def cpu_between(self, name: str, start: float, end: float) -> float:
        return self.cpu_at(name, end) - self.cpu_at(name, start)

    def rss_between(self, name: str, start: float, end: float) -> list[int]:
        lo = bisect.bisect_left(self.times, start)
        hi = bisect.bisect_right(self.times, end)
        return self.rss[name][lo:hi] or self.rss[name][-1:]

    def covers(self, when: float) -> bool:
        return bool(self.times) and self.times[-1] >= when


def find_server_pids() -> dict[str, int]:
    """The local broker and database server processes, when visible, to report their CPU alongside."""
    found: dict[str, int] = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            text = " ".join([proc.info["name"] or "", *(proc.info["cmdline"] or [])])
            if "beam.smp" in text and "rabbit" in text and "rabbitmq" not in found:
                found["rabbitmq"] = proc.pid
            elif "secantusd" in text and "database" not in found:
                found["database"] = proc.pid
    return found


class EventCollector:
    """Consumes a contender's events queue and keeps the first arrival time of each job's event."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.total = 0
        self._waiting: set[str] = set()
        self._done = asyncio.Event()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self, channel: AbstractChannel, queue_name: str) -> None:
        self._queue = await channel.get_queue(queue_name)
        self._tag = await self._queue.consume(self._on_message, no_ack=True)

    async def stop(self) -> None:
        """Cancel the consumer before its queue is deleted, so the broker has nothing to cancel."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        self._queue = self._tag = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        now = time.time()
        event = orjson.loads(message.body)
        key = f"{event['provider']}:{event['task_id']}"
        self.total += 1
        self.arrived.setdefault(key, now)
        if self._waiting:
            self._waiting.discard(key)
            if not self._waiting:
                self._done.set()

    async def wait_for(self, keys: Iterable[str], timeout: float) -> bool:
        """Whether every job in `keys` had its event within `timeout` seconds."""
        self._waiting = {k for k in keys if k not in self.arrived}
        if not self._waiting:
            return True
        self._done.clear()
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def missing(self, keys: Iterable[str]) -> int:
        return sum(1 for k in keys if k not in self.arrived)


class LogProgress:
    """Follows the service's JSON log: one `speechjobs.pipeline` outcome line per message, after its ack."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.first: float | None = None
        self.last = 0.0
        self.batches: list[
            tuple[int, float]
        ] = []  # (messages, duration ms): a batch's lines share a duration
        self._offset = 0
        self._partial = b""

    def poll(self) -> int:
        if not self.path.exists():
            return self.count
        with self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if b'"speechjobs.pipeline"' not in line or b'"outcome"' not in line:
                continue
            entry = orjson.loads(line)
            at = datetime.fromisoformat(entry["ts"]).timestamp()
            duration = float(entry.get("duration_ms", 0))
            if self.first is None:
                # The line is written after the batch is settled; its duration runs from the batch's start.
                self.first = at - duration / 1000
            self.last = max(self.last, at)
            self.count += 1
            if self.batches and self.batches[-1][1] == duration:
                self.batches[-1] = (self.batches[-1][0] + 1, duration)
            else:
                self.batches.append((1, duration))
        return self.count

    def window(self) -> Window:
        return Window(self.first or 0.0, self.last, self.count)


def _message(m: Message) -> aio_pika.Message:
    return aio_pika.Message(m.body, headers=dict(m.headers), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


async def publish_backlog(
    exchange: AbstractExchange, messages: Sequence[Message], *, chunk: int = 500
) -> None:
    """Publish everything as the relay would, pipelined, each chunk awaited until confirmed."""
    for start in range(0, len(messages), chunk):
        await asyncio.gather(
            *(
                exchange.publish(_message(m), routing_key=m.routing_key)
                for m in messages[start : start + chunk]
            )
        )


async def publish_paced(
    channel: AbstractChannel, exchange: str, messages: Sequence[Message], rate: float, sent: dict[str, float]
) -> float:
    """Open-loop publishing at `rate` messages/s; `sent` gets each job's first terminal body's publish time.

    Returns the achieved rate. The channel should not wait for confirms, so that a slow
    confirm never delays the schedule. The messages are built before the clock starts and written
    through the channel underneath: on a small machine the load generator's own CPU is taken from
    the contender it measures.
    """
    underlay = await channel.get_underlay_channel()
    ready = [(m, m.routing_key, m.body, _message(m).properties) for m in messages]
    started = time.time()
    i = 0
    while i < len(ready):
        due = min(len(ready), int((time.time() - started) * rate) + 1)
        while i < due:
            m, routing_key, body, properties = ready[i]
            now = time.time()
            for key in m.terminal:
                sent.setdefault(key, now)
            await underlay.basic_publish(
                body, exchange=exchange, routing_key=routing_key, properties=properties
            )
            i += 1
        await asyncio.sleep(max(0.0, started + i / rate - time.time()))
    return len(ready) / max(time.time() - started, 1e-9)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `values` (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(sent: dict[str, float], arrived: dict[str, float]) -> dict[str, float | int]:
    """Publish → event latencies in milliseconds for the jobs in `sent`."""
    values = [(arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived]
    return {
        "events": len(values),
        "missing": len(sent) - len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p90_ms": round(percentile(values, 90), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2) if values else math.nan,
    }


def settled_transitions(log: Path) -> dict[str, tuple[float, float]]:
    """From the service's JSON log: each job's first terminal transition, as (the time its message was
    settled, the pipeline's time for its batch in ms). The line is written once the batch is settled."""
    found: dict[str, tuple[float, float]] = {}
    with contextlib.suppress(OSError), log.open("rb") as f:
        for line in f:
            if b'"transitions"' not in line or b'"speechjobs.pipeline"' not in line:
                continue
            entry = orjson.loads(line)
            for transition in entry.get("transitions") or ():
                task_id, _, status = str(transition).rpartition(":")
                if status in ("completed", "failed", "cancelled"):
                    key = f"{entry.get('provider')}:{task_id}"
                    if key not in found:
                        at = datetime.fromisoformat(entry["ts"]).timestamp()
                        found[key] = (at, float(entry.get("duration_ms", 0)))
    return found


def latency_split(
    sent: dict[str, float], arrived: dict[str, float], settled: dict[str, tuple[float, float]]
) -> dict[str, dict[str, float]]:
    """Where a job's publish → event time goes: until its batch started (the broker's delivery and the wait
    in the consumer's buffer), and the batch itself (normalize, store, publish and confirm, ack), in ms."""
    keys = [k for k in sent if k in arrived and k in settled]
    before = [((settled[k][0] - settled[k][1] / 1000) - sent[k]) * 1000 for k in keys]
    batch = [settled[k][1] for k in keys]

    def summary(values: list[float]) -> dict[str, float]:
        return {
            q: round(percentile(values, n), 2) for q, n in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99))
        }

    return {"jobs": {"count": len(keys)}, "until_batch_start": summary(before), "batch": summary(batch)}


def latency_values(sent: dict[str, float], arrived: dict[str, float]) -> list[float]:
    return sorted((arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived)


async def stop_process(proc: asyncio.subprocess.Process | None) -> int | None:
    """SIGTERM, 30 s to exit, then SIGKILL; the exit code (None if it never started)."""
    if proc is None:
        return None
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode
