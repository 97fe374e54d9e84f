"""Job commands: track jobs for polling, and list the jobs that are not finished and why."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from consumer.cli.present import aligned, format_age
from consumer.settings import Settings, load_settings
from schemas.job import PROVIDERS

__all__ = ["add_commands", "stuck_reason"]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    track = sub.add_parser(
        "track", help="have jobs polled: publish track.<provider> messages (the consumer stores them)"
    )
    track.add_argument("provider", choices=PROVIDERS)
    track.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    track.set_defaults(func=_track)

    jobs = sub.add_parser("jobs", help="stored jobs: --stuck lists the unfinished ones by age")
    jobs.add_argument(
        "--stuck",
        action="store_true",
        required=True,
        help="non-terminal jobs, oldest first, and their polling",
    )
    jobs.add_argument("--limit", type=int, default=100, help="at most this many jobs (100)")
    jobs.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    jobs.set_defaults(func=_stuck)


def _track(args: argparse.Namespace) -> int:
    from consumer.amqp.connection import connect_producer
    from consumer.amqp.publisher import publish_inbound
    from consumer.core.contract import inbound

    settings = load_settings()

    async def publish() -> None:
        producer = await connect_producer(settings.amqp, name="speechjobs-track")
        try:
            for task_id in args.task_ids:
                body = json.dumps({"task_id": task_id}).encode()
                message = inbound(
                    body, channel="track", provider=args.provider, content_type="application/json"
                )
                await publish_inbound(producer, message, timeout=settings.amqp.publish_timeout_s)
        finally:
            await producer.close()

    asyncio.run(publish())
    first = settings.poller.poll_interval_s
    print(f"tracking {len(args.task_ids)} {args.provider} job(s): first poll in {first:g} s")
    return 0


def stuck_reason(job: dict[str, Any], settings: Settings, now: datetime, polled: Collection[str]) -> str:
    """Why an unfinished job is, or is no longer, polled."""
    poll = job.get("poll")
    provider = job["provider"]
    if poll is not None and poll.get("stopped"):
        stopped = poll["stopped"]
        why = {"not-found": "the vendor says it does not exist", "max-age": "older than the polling age"}
        return f"no longer polled: {why.get(stopped, stopped)} ({poll.get('polls', 0)} polls)"
    if provider not in polled:
        return "not polled: the poller has no credentials for this provider"
    if poll is None:
        silence = settings.poller.poll_silence[provider]
        quiet = (now - job["updated_at"]).total_seconds()
        return f"not polled yet: silent {format_age(quiet)} of the {format_age(silence)} before polling"
    due = poll.get("due_at")
    last = poll.get("history", [])[-1:] or [{}]
    detail = f", last answer {last[0].get('verdict')}" if last[0] else ""
    when = f"next poll in {format_age((due - now).total_seconds())}" if due and due > now else "poll due now"
    return f"polled ({poll.get('reason')}, {poll.get('polls', 0)} polls{detail}): {when}"


def _stuck(args: argparse.Namespace) -> int:
    from consumer.store.mongo import mongo_client
    from consumer.store.polls import PollStore
    from consumer.vendors.clients import unpolled

    settings = load_settings()
    polled = set(PROVIDERS) - set(unpolled(settings.vendors))

    async def read() -> list[dict[str, Any]]:
        client = mongo_client(settings.mongodb)
        try:
            return await PollStore(client.get_database(settings.mongodb.mongodb_database)).stuck(
                limit=args.limit
            )
        finally:
            await client.close()

    jobs = asyncio.run(read())
    now = datetime.now(UTC)
    if args.json:
        for job in jobs:
            line = {k: job[k] for k in ("provider", "task_id", "status")}
            line |= {
                "age_s": round((now - job["created_at"]).total_seconds()),
                "why": stuck_reason(job, settings, now, polled),
            }
            print(json.dumps(line, ensure_ascii=False))
        return 0
    rows = [("PROVIDER", "TASK", "STATUS", "AGE", "POLLING")]
    rows += [
        (
            job["provider"],
            job["task_id"],
            job["status"],
            format_age((now - job["created_at"]).total_seconds()),
            stuck_reason(job, settings, now, polled),
        )
        for job in jobs
    ]
    print(aligned(rows) if jobs else "no unfinished jobs")
    return 0
