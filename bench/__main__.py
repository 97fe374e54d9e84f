"""python -m bench: every contender measured in one run on one broker and database; results, ratios."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractConnection
from pymongo import AsyncMongoClient

from bench.contenders import CONTENDERS, Config, broker_version, connect, run_contender, run_rss_flatness
from bench.measure import find_server_pids
from bench.report import (
    clean,
    machine_info,
    package_versions,
    ratios,
    redact_url,
    render_profiles,
    render_table,
    write_json,
    write_png,
)
from bench.workload import RETRY_SHARE, WORKLOADS, make
from consumer.settings import load_settings

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MONGODB = "mongodb://127.0.0.1:27017/?directConnection=true&retryWrites=false"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PACKAGES = (
    "aio-pika",
    "aiormq",
    "pymongo",
    "pydantic",
    "orjson",
    "uvloop",
    "faststream",
    "SecantusDB",
    "psutil",
    "matplotlib",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about a minute: 2000 messages, no RSS run")
    parser.add_argument("--messages", type=int, help="backlog per contender (default 20000, --quick 2000)")
    parser.add_argument("--seed", type=int, default=1, help="workload seed")
    parser.add_argument("--paced-seconds", type=float, help="length of the paced latency run (10, --quick 3)")
    parser.add_argument(
        "--rss-messages", type=int, help="messages in the RSS-flatness run (200000, --quick 0 = skip)"
    )
    parser.add_argument("--only", help="comma-separated contender keys (speechjobs always runs first)")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated workloads, each run on every contender: mix (every vendor, JSON and XML, "
        "retries, progressive updates) and flood (Tingwu COMPLETED callbacks, one event each); default both",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for <date>.json and <date>.png")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the speechjobs processes (perturbs their figures)",
    )
    parser.add_argument("--amqp-url", default=os.environ.get("SPEECHJOBS_AMQP_URL", DEFAULT_AMQP))
    parser.add_argument("--mongodb-url", default=os.environ.get("SPEECHJOBS_MONGODB_URL", DEFAULT_MONGODB))
    return parser


def _code() -> dict[str, Any]:
    """The commit measured, and whether the service's code differed from it (others edit the tree too)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            run = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return run.stdout.strip()

    changed = git("status", "--porcelain", "--", "consumer", "schemas")
    return {"commit": git("rev-parse", "HEAD") or None, "service_changes": changed.splitlines()}


async def _database_version(url: str) -> str:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        info = await client.admin.command("buildInfo")
        return str(info.get("version", "?"))
    finally:
        await client.close()


def _service_settings() -> dict[str, Any]:
    defaults = load_settings()
    consumer, runtime = defaults.consumer, defaults.runtime
    return {
        "queue_type": consumer.queue_type,
        "prefetch": consumer.prefetch,
        "batch_size": consumer.batch_size,
        "batch_linger_ms": consumer.batch_linger_ms,
        "log_format": runtime.log_format,
        "log_level": runtime.log_level,
    }


async def _run(args: argparse.Namespace) -> int:
    messages = args.messages or (2000 if args.quick else 20000)
    paced_seconds = args.paced_seconds or (3.0 if args.quick else 10.0)
    rss_messages = args.rss_messages if args.rss_messages is not None else (0 if args.quick else 200_000)
    chosen = {c.key for c in CONTENDERS} if not args.only else {"speechjobs", *args.only.split(",")}
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not workloads or set(workloads) - set(WORKLOADS):
        raise SystemExit(f"--workloads: choose from {', '.join(WORKLOADS)}")
    unknown = chosen - {c.key for c in CONTENDERS}
    if unknown:
        raise SystemExit(f"unknown contender(s): {', '.join(sorted(unknown))}")
    work_dir = Path(tempfile.mkdtemp(prefix="speechjobs-bench-"))
    cfg = Config(
        amqp_url=args.amqp_url,
        mongodb_url=args.mongodb_url,
        messages=messages,
        seed=args.seed,
        paced_seconds=paced_seconds,
        work_dir=work_dir,
        server_pids=find_server_pids(),
        profile=args.profile,
    )
    started = datetime.now(UTC)
    clock = time.monotonic()
    code = _code()
    print(f"bench: {messages} messages per contender, logs in {work_dir}", flush=True)
    connection: AbstractConnection = await connect(cfg.amqp_url)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    rss: dict[str, Any] | None = None
    try:
        for workload in workloads:
            cfg.workload = workload
            results[workload] = await _run_workload(cfg, connection, chosen)
        print("  I/O floor: one upsert and one confirmed publish ...", end="", flush=True)
        io_floor = await _io_floor(cfg)
        print(f" {io_floor}", flush=True)
        if rss_messages:
            print(f"  RSS run: speechjobs (SecantusDB) over {rss_messages} messages ...", end="", flush=True)
            rss = await run_rss_flatness(cfg, connection, rss_messages)
            print(f" growth {rss['rss_growth']:+.1%}", flush=True)
        versions = package_versions(PACKAGES) | {
            "rabbitmq": await broker_version(connection),
            "secantusdb_server": await _database_version(cfg.mongodb_url),
        }
    finally:
        await connection.close()
    targets = {w: ratios(r, rss if w == "mix" else None) for w, r in results.items()}
    stamp = started.strftime("%Y-%m-%dT%H%M%SZ") + ("-quick" if args.quick else "")
    document = {
        "date": started.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "normal",
        "duration_s": round(time.monotonic() - clock, 1),
        "settings": {
            "messages": messages,
            "seed": args.seed,
            "workloads": workloads,
            "paced_seconds": paced_seconds,
            "paced_workload": "mix",
            "rss_messages": rss_messages,
            "profiled": args.profile,
            "retry_share": RETRY_SHARE,
            "service_defaults": _service_settings(),
            "amqp_url": redact_url(cfg.amqp_url),
            "mongodb_url": redact_url(cfg.mongodb_url),
            "server_processes_sampled": sorted(cfg.server_pids),
        },
        "code": code,
        "machine": machine_info(),
        "versions": versions,
        "workloads": {w: make(w, messages, seed=args.seed).summary() for w in workloads},
        "contenders": results,
        "rss_flatness": rss,
        "io_floor_us": io_floor,
        "targets": targets,
    }
    json_path = args.out / f"{stamp}.json"
    write_json(json_path, clean(document))
    for workload, result in results.items():
        print(f"\n{workload}:")
        print(render_table(result, targets[workload]))
        if args.profile:
            print("\n" + render_profiles(result))
    print(f"\nwrote {json_path}")
    for workload, result in results.items():
        svg = result.get("speechjobs", {}).get("profile", {}).get("svg")
        if svg:
            kept = args.out / f"{stamp}-{workload}-speechjobs.svg"
            shutil.copyfile(svg, kept)
            print(f"wrote {kept}")
    if not args.no_plot:
        for workload, result in results.items():
            png_path = args.out / f"{stamp}-{workload}.png"
            title = f"speechjobs bench {document['date']} ({document['mode']}, {messages} msgs, {workload})"
            write_png(png_path, result, title, rss if workload == "mix" else None)
            print(f"wrote {png_path}")
    return 0


async def _io_floor(cfg: Config) -> dict[str, float]:
    """bench/iofloor.py in a process of its own: what the client libraries cost per operation here."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.iofloor",
        cfg.amqp_url,
        cfg.mongodb_url,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.iofloor exited with {proc.returncode}")
    floor: dict[str, float] = json.loads(out)
    return floor


async def _run_workload(cfg: Config, connection: AbstractConnection, chosen: set[str]) -> dict[str, Any]:
    """Every chosen contender on one workload; the paced latency run on the mix only."""
    print(f"  workload {cfg.workload}:", flush=True)
    results: dict[str, Any] = {}
    half: dict[str, float] = {}

    def paced_rate(key: str, own: float) -> float | None:
        if cfg.workload != "mix":
            return None
        # The in-memory service at half its own max rate (its target); everyone else at half of speechjobs'.
        if key == "speechjobs-memory":
            return own / 2
        return half.setdefault("speechjobs", own / 2)

    for contender in CONTENDERS:
        if contender.key not in chosen:
            continue
        print(f"    {contender.label} ...", end="", flush=True)
        result = await run_contender(contender, cfg, connection, paced_rate)
        results[contender.key] = result
        print(
            f" {result['throughput_msg_s']:,.0f} msg/s, {result['cpu_ms_per_msg']:.3f} ms CPU/msg",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
