"""The contenders and how one is measured: own queues and database, backlog drain, paced latency, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractConnection
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from bench.measure import (
    EventCollector,
    LogProgress,
    ProcSampler,
    Window,
    latency_split,
    latency_summary,
    latency_values,
    percentile,
    publish_backlog,
    publish_paced,
    settled_transitions,
    stop_process,
)
from bench.profile import Profiler
from bench.workload import generate, make
from consumer.amqp.connection import declare_consumer_topology
from consumer.settings import Settings, load_settings

__all__ = ["CONTENDERS", "Config", "Contender", "run_contender", "run_rss_flatness"]

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    argv: tuple[str, ...]  # after the interpreter
    progress: Literal["log", "result"]  # the service's JSON log, or a worker's result file
    consumes: bool = True  # False: the database ceiling writes the workload's documents directly
    events: bool = True  # publishes job events, so latency can be measured
    database: bool = True


CONTENDERS: tuple[Contender, ...] = (
    Contender("speechjobs", "speechjobs (SecantusDB)", ("-m", "consumer", "run"), "log"),
    Contender(
        "speechjobs-memory", "speechjobs (in-memory store)", ("-m", "bench.memservice"), "log", database=False
    ),
    Contender(
        "straightforward", "straightforward per-message", ("-m", "bench.workers", "straightforward"), "result"
    ),
    Contender("faststream", "FastStream subscriber", ("-m", "bench.workers", "faststream"), "result"),
    Contender(
        "bare",
        "bare aio-pika ack loop",
        ("-m", "bench.workers", "bare"),
        "result",
        events=False,
        database=False,
    ),
    Contender(
        "db-ceiling",
        "SecantusDB bulk ceiling",
        ("-m", "bench.workers", "db-ceiling"),
        "result",
        consumes=False,
        events=False,
    ),
)


@dataclass(slots=True)
class Config:
    amqp_url: str
    mongodb_url: str
    messages: int
    seed: int
    paced_seconds: float
    work_dir: Path
    server_pids: dict[str, int] = field(default_factory=dict)
    sample_interval: float = 0.02
    profile: bool = False  # attach py-spy to the service processes
    workload: str = "mix"  # a name in bench.workload.WORKLOADS


@dataclass(slots=True)
class _Names:
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def settings(self, cfg: Config) -> Settings:
        s = self.suffix
        return load_settings(
            amqp_url=SecretStr(cfg.amqp_url),
            mongodb_url=SecretStr(cfg.mongodb_url),
            mongodb_database=f"bench_{s}",
            inbound_exchange=f"bench.{s}.inbound",
            inbound_queue=f"bench.{s}.inbound",
            dead_letter_exchange=f"bench.{s}.dead-letter",
            dead_letter_queue=f"bench.{s}.dead-letter",
            events_exchange=f"bench.{s}.events",
            events_unrouted=f"bench.{s}.events.unrouted",
        )


def _env(settings: Settings) -> dict[str, str]:
    assert settings.mongodb.mongodb_url is not None
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SPEECHJOBS_AMQP_URL": settings.amqp.amqp_url.get_secret_value(),
        "SPEECHJOBS_MONGODB_URL": settings.mongodb.mongodb_url.get_secret_value(),
        "SPEECHJOBS_MONGODB_DATABASE": settings.mongodb.mongodb_database,
        "SPEECHJOBS_INBOUND_EXCHANGE": settings.amqp.inbound_exchange,
        "SPEECHJOBS_INBOUND_QUEUE": settings.consumer.inbound_queue,
        "SPEECHJOBS_DEAD_LETTER_EXCHANGE": settings.amqp.dead_letter_exchange,
        "SPEECHJOBS_DEAD_LETTER_QUEUE": settings.consumer.dead_letter_queue,
        "SPEECHJOBS_EVENTS_EXCHANGE": settings.amqp.events_exchange,
        "SPEECHJOBS_EVENTS_UNROUTED": settings.amqp.events_unrouted,
        "SPEECHJOBS_HTTP_PORT": str(_free_port()),
        "SPEECHJOBS_LOG_FORMAT": "json",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Child:
    """One contender process; its output goes to a log file, its progress is read from outside."""

    def __init__(self, contender: Contender, settings: Settings, cfg: Config, expect: int) -> None:
        self.contender = contender
        self.log_path = cfg.work_dir / f"{contender.key}-{uuid.uuid4().hex[:6]}.log"
        self.result_path = self.log_path.with_suffix(".result.json")
        self.argv = [sys.executable, *contender.argv]
        if contender.progress == "result":
            self.argv += ["--result", str(self.result_path), "--expect", str(expect), "--seed", str(cfg.seed)]
            self.argv += ["--workload", cfg.workload]
        self.env = _env(settings)
        self.proc: asyncio.subprocess.Process | None = None
        self.progress = LogProgress(self.log_path)

    async def start(self) -> int:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=log
            )
        return self.proc.pid

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    async def window(self, expect: int, timeout: float) -> Window:
        """Wait until `expect` messages were acked; the interval from the first consumed to the last acked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.contender.key} exited with {self.proc.returncode}:\n{self.tail()}")
            if self.contender.progress == "log":
                if self.progress.poll() >= expect:
                    return self.progress.window()
            elif self.result_path.exists():
                data = json.loads(self.result_path.read_text())
                return Window(float(data["first"]), float(data["last"]), int(data["count"]))
            await asyncio.sleep(0.05)
        raise TimeoutError(
            f"{self.contender.key}: {expect} messages not done in {timeout:.0f} s:\n{self.tail()}"
        )

    async def scrape(self) -> dict[str, float]:
        """The service's histogram sums and counts from its /metrics (nothing for the workers)."""
        if self.contender.progress != "log":
            return {}
        reader, writer = await asyncio.open_connection("127.0.0.1", int(self.env["SPEECHJOBS_HTTP_PORT"]))
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        raw = await reader.read()
        writer.close()
        values: dict[str, float] = {}
        for line in raw.decode(errors="replace").partition("\r\n\r\n")[2].splitlines():
            name, _, value = line.partition(" ")
            if name in _SCRAPED:
                values[name] = float(value)
        return values

    async def stop(self) -> int | None:
        return await stop_process(self.proc)


_SCRAPED = {
    f"speechjobs_{name}_{part}"
    for name in ("db_seconds", "publish_seconds", "batch_size")
    for part in ("sum", "count")
}


def _batches(
    batches: list[tuple[int, float]], before: dict[str, float], after: dict[str, float]
) -> dict[str, Any]:
    """Where a batch's time goes: its size and duration (from the log), store.apply and publish+confirm
    (from the service's histograms); the rest is normalizing, raw bodies, the confirm write and settling."""

    def per_batch_ms(name: str) -> float | None:
        count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
        total = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
        return round(total / count * 1000, 2) if count else None

    if not batches:
        return {}
    return {
        "batches": len(batches),
        "mean_size": round(sum(n for n, _ in batches) / len(batches), 1),
        "mean_ms": round(sum(d for _, d in batches) / len(batches), 2),
        "p50_ms": round(percentile([d for _, d in batches], 50), 2),
        "store_apply_ms": per_batch_ms("speechjobs_db_seconds"),
        "publish_confirm_ms": per_batch_ms("speechjobs_publish_seconds"),
    }


async def _cleanup(connection: AbstractConnection, settings: Settings, cfg: Config) -> None:
    """Delete the contender's queues, exchanges and database (a failed delete closes its channel)."""
    queues = (
        settings.consumer.inbound_queue,
        settings.consumer.dead_letter_queue,
        settings.amqp.events_unrouted,
    )
    exchanges = (
        settings.amqp.inbound_exchange,
        settings.amqp.dead_letter_exchange,
        settings.amqp.events_exchange,
        settings.amqp.events_unrouted,  # the events' alternate exchange has its queue's name
    )
    deletes = [("queue", name) for name in queues] + [("exchange", name) for name in exchanges]
    for kind, name in deletes:
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await (channel.queue_delete(name) if kind == "queue" else channel.exchange_delete(name))
        with contextlib.suppress(Exception):
            await channel.close()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(cfg.mongodb_url)
    try:
        await client.drop_database(settings.mongodb.mongodb_database)
    finally:
        await client.close()


async def _sampled_until(sampler: ProcSampler, when: float) -> None:
    """Let the sampler take one reading after `when` so the window's end is interpolated, not guessed."""
    for _ in range(100):
        if sampler.covers(when):
            return
        await asyncio.sleep(sampler.interval)


def _per_message_ms(sampler: ProcSampler, name: str, window: Window) -> float:
    return round(sampler.cpu_between(name, window.first, window.last) / window.count * 1000, 4)


async def run_contender(
    contender: Contender,
    cfg: Config,
    connection: AbstractConnection,
    paced_rate: Callable[[str, float], float | None],
) -> dict[str, Any]:
    """Backlog drain (throughput, CPU, RSS), then a paced run for publish → event latency.

    `paced_rate` gets the contender's key and own measured throughput and returns the rate to pace at
    (None: skip).
    """
    names = _Names()
    settings = names.settings(cfg)
    channel = await connection.channel(publisher_confirms=True)
    topology = await declare_consumer_topology(channel, channel, settings.amqp, settings.consumer)
    child = _Child(contender, settings, cfg, cfg.messages)
    sampler: ProcSampler | None = None
    profiler: Profiler | None = None
    collector = EventCollector()
    try:
        if contender.events:
            await collector.start(channel, settings.amqp.events_unrouted)
        workload = make(cfg.workload, cfg.messages, seed=cfg.seed, prefix="b")
        if contender.consumes:
            await publish_backlog(topology.inbound_exchange, workload.messages)
        pid = await child.start()
        # This process is the events' subscriber (the collector) too: its CPU is reported beside the servers'.
        processes = {"consumer": pid, **cfg.server_pids, "subscriber": os.getpid()}
        sampler = ProcSampler(processes, interval=cfg.sample_interval)
        sampler.start()
        if cfg.profile and contender.consumes:
            # A flame graph of the service itself; the peers get their top costs only.
            svg = child.log_path.with_suffix(".svg") if contender.key == "speechjobs" else None
            profiler = Profiler(pid, child.log_path.with_suffix(".pyspy.txt"), svg=svg)
            await profiler.start()
        window = await child.window(cfg.messages, timeout=max(120.0, cfg.messages / 20))
        scraped = await child.scrape()
        drained = len(child.progress.batches)
        await _sampled_until(sampler, window.last)
        rss = sampler.rss_between("consumer", window.first, window.last)
        result: dict[str, Any] = {
            "key": contender.key,
            "label": contender.label,
            "messages": window.count,
            "window_s": round(window.seconds, 3),
            "throughput_msg_s": round(window.rate, 1),
            "cpu_ms_per_msg": _per_message_ms(sampler, "consumer", window),
            "cpu_utilization": round(
                sampler.cpu_between("consumer", window.first, window.last) / window.seconds, 3
            ),
            "rss_mb_start": round(rss[0] / MB, 1),
            "rss_mb_max": round(max(rss) / MB, 1),
            "rss_mb_end": round(rss[-1] / MB, 1),
            "server_cpu_ms_per_msg": {
                name: _per_message_ms(sampler, name, window)
                for name in (*cfg.server_pids, "subscriber")
                if name in sampler.cpu
            },
            "log": str(child.log_path),
        }
        if scraped:
            result["batches"] = _batches(child.progress.batches[:drained], {}, scraped)
        if contender.events:
            expected = workload.terminal_jobs
            await collector.wait_for(expected, timeout=30)
            result["events"] = {
                "expected_jobs": len(expected),
                "jobs_with_event": len(expected) - collector.missing(expected),
                "events_received": collector.total,
            }
            rate = paced_rate(contender.key, window.rate)
            if rate:
                result["paced"] = await _paced(cfg, connection, settings, collector, sampler, rate, window)
                if contender.progress == "log":
                    result["paced"]["split"] = latency_split(
                        result["paced"].pop("_sent"), collector.arrived, settled_transitions(child.log_path)
                    )
                result["paced"].pop("_sent", None)
                if scraped:
                    child.progress.poll()
                    paced_batches = child.progress.batches[drained:]
                    result["paced"]["batches"] = _batches(paced_batches, scraped, await child.scrape())
        if profiler is not None:
            await child.stop()
            result["profile"] = await profiler.finish()
        return result
    finally:
        if sampler is not None:
            await sampler.stop()
        await collector.stop()
        with contextlib.suppress(Exception):
            await channel.close()
        code = await child.stop()
        if code not in (0, None, -signal.SIGTERM):
            print(f"warning: {contender.key} exited with {code}; log: {child.log_path}", file=sys.stderr)
        await _cleanup(connection, settings, cfg)


async def _paced(
    cfg: Config,
    connection: AbstractConnection,
    settings: Settings,
    collector: EventCollector,
    sampler: ProcSampler,
    rate: float,
    backlog: Window,
) -> dict[str, Any]:
    """Publish fresh jobs at `rate` (open loop) and time each job's event from its terminal body's publish."""
    count = max(50, int(rate * cfg.paced_seconds))
    workload = make(cfg.workload, count, seed=cfg.seed, prefix="p")
    channel = await connection.channel(publisher_confirms=False)
    sent: dict[str, float] = {}
    started = time.time()
    achieved = await publish_paced(channel, settings.amqp.inbound_exchange, workload.messages, rate, sent)
    published = time.time()
    # A contender slower than `rate` drains a backlog: give it the time its own throughput needs.
    drain = count / max(min(backlog.rate, rate), 1.0)
    complete = await collector.wait_for(sent, timeout=drain * 1.5 + 15)
    await channel.close()
    values = latency_values(sent, collector.arrived)
    return {
        "rate_target": round(rate, 1),
        "rate_achieved": round(achieved, 1),
        "messages": count,
        "saturated": backlog.rate < rate,
        "complete": complete,
        "consumer_cpu_utilization": round(
            sampler.cpu_between("consumer", started, published) / max(published - started, 1e-9), 3
        ),
        **latency_summary(sent, collector.arrived),
        "_sent": sent,  # for the split of the service's own log; not kept in the results
        "cdf_ms": _cdf_points(values),
    }


def _cdf_points(values: list[float], points: int = 200) -> list[float]:
    """The latency distribution as `points` quantiles, enough to draw a CDF without every value."""
    if not values:
        return []
    return [round(values[min(len(values) - 1, int(i / points * len(values)))], 2) for i in range(points + 1)]


async def run_rss_flatness(cfg: Config, connection: AbstractConnection, total: int) -> dict[str, Any]:
    """The real service over `total` messages, kept fed, its RSS sampled over time: does it stay flat?"""
    contender = CONTENDERS[0]
    names = _Names()
    settings = names.settings(cfg)
    channel = await connection.channel(publisher_confirms=True)
    topology = await declare_consumer_topology(channel, channel, settings.amqp, settings.consumer)
    child = _Child(contender, settings, cfg, total)
    sampler: ProcSampler | None = None
    workload = generate(total, seed=cfg.seed, prefix="r")
    series: list[tuple[float, int, float]] = []
    try:
        sent = 0
        chunk = 2000
        await publish_backlog(topology.inbound_exchange, workload.messages[:chunk])
        sent = chunk
        pid = await child.start()
        sampler = ProcSampler({"consumer": pid}, interval=0.5)
        sampler.start()
        started = time.time()
        deadline = time.monotonic() + max(600.0, total / 20)
        while child.progress.poll() < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"RSS run: {child.progress.count}/{total} after the deadline")
            assert child.proc is not None
            if child.proc.returncode is not None:
                raise RuntimeError(f"service exited with {child.proc.returncode}:\n{child.tail()}")
            if sent < total and sent - child.progress.count < 2 * chunk:
                await publish_backlog(topology.inbound_exchange, workload.messages[sent : sent + chunk])
                sent += chunk
            if sampler.rss["consumer"]:
                series.append(
                    (
                        round(time.time() - started, 2),
                        child.progress.count,
                        round(sampler.rss["consumer"][-1] / MB, 2),
                    )
                )
            await asyncio.sleep(0.5)
        window = child.progress.window()
        return {"messages": total, "throughput_msg_s": round(window.rate, 1), **_flatness(series, total)}
    finally:
        if sampler is not None:
            await sampler.stop()
        with contextlib.suppress(Exception):
            await channel.close()
        await child.stop()
        await _cleanup(connection, settings, cfg)


def _flatness(series: list[tuple[float, int, float]], total: int) -> dict[str, Any]:
    """RSS after warm-up (10-20% of the messages) against RSS at the end (90-100%)."""

    def median_rss(lo: float, hi: float) -> float:
        values = [rss for _, done, rss in series if lo * total <= done <= hi * total]
        return statistics.median(values) if values else float("nan")

    early, late = median_rss(0.1, 0.2), median_rss(0.9, 1.0)
    growth = (late - early) / early if early else float("nan")
    return {
        "rss_mb_early": round(early, 1),
        "rss_mb_late": round(late, 1),
        "rss_mb_max": round(max((r for _, _, r in series), default=float("nan")), 1),
        "rss_growth": round(growth, 4),
        "series": [{"t_s": t, "messages": done, "rss_mb": rss} for t, done, rss in series],
    }


async def broker_version(connection: AbstractConnection) -> str:
    props = getattr(getattr(connection, "transport", None), "connection", None)
    server = getattr(props, "server_properties", {}) or {}
    version = server.get("version", "?")
    return version.decode() if isinstance(version, bytes) else str(version)


async def connect(url: str) -> AbstractConnection:
    return await aio_pika.connect(url, client_properties={"connection_name": "bench-driver"})
