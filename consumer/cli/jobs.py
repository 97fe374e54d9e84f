"""Job commands: track jobs for polling; show, list and find the unfinished stored jobs."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import sys
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from consumer.cli.present import aligned, count_arg, format_age, since_arg
from consumer.core.redact import redact, redact_value
from consumer.core.state import event_id, job_key
from consumer.settings import Settings, load_settings
from schemas.job import PROVIDERS, Job, JobStatus

if TYPE_CHECKING:
    from consumer.store.mongo import MongoStore

__all__ = [
    "TerminalTransition",
    "add_commands",
    "decode_cursor",
    "encode_cursor",
    "job_json",
    "job_text",
    "list_json",
    "list_table",
    "short_error",
    "store_call",
    "stuck_reason",
    "terminal_transitions",
]

T = TypeVar("T")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    track = sub.add_parser(
        "track", help="have jobs polled: publish track.<provider> messages (the consumer stores them)"
    )
    track.add_argument("provider", choices=PROVIDERS)
    track.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    track.set_defaults(func=_track)

    jobs = sub.add_parser(
        "jobs",
        help="stored jobs: show one, list them, or the unfinished ones (stuck)",
        description="Stored jobs: `jobs show`, `jobs list`, `jobs stuck`. "
        "Signatures and credentials in results, user data and errors are masked (***).",
    )
    # The form before `jobs stuck` existed, kept for scripts: `jobs --stuck [--json] [--limit N]`.
    jobs.add_argument("--stuck", action="store_true", help="the same as `jobs stuck`")
    jobs.add_argument("--json", dest="legacy_json", action="store_true", help=argparse.SUPPRESS)
    jobs.add_argument("--limit", dest="legacy_limit", type=count_arg, default=100, help=argparse.SUPPRESS)
    jobs.set_defaults(func=lambda args: _legacy(args, jobs))
    actions = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")

    show = actions.add_parser(
        "show",
        help="one job: its fields, results, history and event ids",
        description="Print one stored job: status, provider status, kind, times, results, error, user data, "
        "its history, and the event id of each terminal state it reached, with whether the broker's "
        "confirm of that event is logged. Exit 1 if there is no such job.",
    )
    show.add_argument("provider", choices=PROVIDERS)
    show.add_argument("task_id", metavar="TASK_ID")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(func=_show)

    list_ = actions.add_parser(
        "list",
        help="stored jobs, a page at a time, by time of last update",
        description="List stored jobs by time of last update, oldest first (then by key), a page at a "
        "time. When there may be more, the command to ask for the next page is printed at the end "
        "(on stderr with --json, where each line also carries its own cursor).",
    )
    list_.add_argument("--provider", choices=PROVIDERS, help="only jobs of this provider")
    list_.add_argument(
        "--status",
        choices=[s.value for s in JobStatus],
        action="append",
        help="only this status (repeatable)",
    )
    list_.add_argument(
        "--since", type=since_arg, metavar="T", help="updated at or after T: an ISO time, or 30m, 2h, 1d ago"
    )
    list_.add_argument("--limit", type=count_arg, default=50, metavar="N", help="at most N jobs a page (50)")
    list_.add_argument(
        "--after",
        type=_cursor,
        metavar="CURSOR",
        help="the page after this cursor (printed by a previous page)",
    )
    list_.add_argument("--json", action="store_true", help="one JSON object per job")
    list_.set_defaults(func=_list)

    stuck = actions.add_parser(
        "stuck",
        help="unfinished jobs by age, and why each is or is no longer polled",
        description="Non-terminal jobs, oldest first, and their polling.",
    )
    stuck.add_argument("--limit", type=count_arg, default=100, metavar="N", help="at most N jobs (100)")
    stuck.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    stuck.set_defaults(func=_stuck)


def _legacy(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.stuck:
        parser.print_usage(sys.stderr)
        print("speechjobs jobs: choose an action: show, list or stuck", file=sys.stderr)
        return 2
    args.json, args.limit = args.legacy_json, args.legacy_limit
    return _stuck(args)


# Pure helpers


@dataclass(frozen=True, slots=True)
class TerminalTransition:
    """A terminal state a job reached, and the id of its event."""

    event_id: str
    status: JobStatus
    at: datetime
    stored: bool  # the job's stored event, the one that was published; False: in the history only


def terminal_transitions(job: Job) -> list[TerminalTransition]:
    """The job's stored event first, then any other terminal state its history shows as applied.

    The first terminal state wins, so normally there is exactly one; a later conflicting one is
    recorded as not applied and has no event.
    """
    found: list[TerminalTransition] = []
    if job.event is not None:
        found.append(TerminalTransition(job.event.event_id, job.status, job.event.created_at, stored=True))
    for entry in job.history:
        if entry.status.terminal and entry.applied:
            eid = event_id(job.provider, job.task_id, entry.status)
            if all(t.event_id != eid for t in found):
                found.append(TerminalTransition(eid, entry.status, entry.at, stored=False))
    return found


def encode_cursor(job: Job) -> str:
    """Where a listing stopped: the last job's (updated_at, key), as one opaque word."""
    position = [job.updated_at.isoformat(), job_key(job.provider, job.task_id)]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, str]:
    """The (updated_at, key) of a cursor made by encode_cursor; ValueError for anything else."""
    try:
        at, key = json.loads(base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4)))
        when = datetime.fromisoformat(at)
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(f"not a cursor printed by `jobs list`: {text!r}") from None
    if when.tzinfo is None or not isinstance(key, str):
        raise ValueError(f"not a cursor printed by `jobs list`: {text!r}")
    return when, key


def job_json(job: Job, confirmed: Mapping[str, datetime]) -> dict[str, Any]:
    """A job as `jobs show --json` prints it: its fields, history and terminal events, secrets masked."""
    data = job.model_dump(mode="json", exclude={"event"})
    data = {"key": job_key(job.provider, job.task_id), **_masked(data)}
    data["events"] = [
        {
            "event_id": t.event_id,
            "type": _event_type(t.status),
            "status": t.status.value,
            "at": _iso(t.at),
            "stored": t.stored,
            "confirmed": t.event_id in confirmed,
            "confirmed_at": _iso(confirmed[t.event_id]) if t.event_id in confirmed else None,
        }
        for t in terminal_transitions(job)
    ]
    return data


def job_text(job: Job, confirmed: Mapping[str, datetime]) -> str:
    """A job as `jobs show` prints it."""
    data = _masked(job.model_dump(mode="json"))
    error = data["error"]
    fields = [
        ("job", job_key(job.provider, job.task_id)),
        ("status", f"{job.status.value} (provider status {job.provider_status})"),
        ("kind", f"{job.kind} (read from {job.source})"),
        ("task key", job.task_key or "-"),
        *(
            (name, _when(getattr(job, f"{name}_at")) or "-")
            for name in ("created", "updated", "submitted", "started", "finished", "reported")
        ),
        ("version", str(job.version)),
        ("error", f"{error['code'] or '-'}: {error['message'] or '-'}" if error else "-"),
        ("user data", "-" if data["user_data"] is None else _compact(data["user_data"])),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {value}" for name, value in fields]
    lines.append("results:" if data["results"] else "results: -")
    lines += [f"  {name}: {_compact(value)}" for name, value in data["results"].items()]
    lines.append("history:")
    rows = [("AT", "STATUS", "PROVIDER STATUS", "CHANNEL", "APPLIED", "BODY SHA256")]
    rows += [
        (
            _when(h.at),
            h.status.value,
            h.provider_status,
            h.channel,
            "yes" if h.applied else "no",
            h.body_sha256,
        )
        for h in job.history
    ]
    lines += ["  " + line for line in aligned(rows).splitlines()]
    transitions = terminal_transitions(job)
    if not transitions:
        lines.append("events: none (not terminal)")
        return "\n".join(lines)
    lines.append("events:")
    events = [("EVENT ID", "TYPE", "AT", "CONFIRMED")]
    events += [
        (t.event_id, _event_type(t.status), _when(t.at), _when(confirmed.get(t.event_id)) or "no")
        for t in transitions
    ]
    lines += ["  " + line for line in aligned(events).splitlines()]
    return "\n".join(lines)


def list_json(job: Job) -> dict[str, Any]:
    """A job as `jobs list --json` prints it, with the cursor of the page that ends at it."""
    return {
        "key": job_key(job.provider, job.task_id),
        "provider": job.provider,
        "task_id": job.task_id,
        "status": job.status.value,
        "provider_status": job.provider_status,
        "kind": job.kind,
        "task_key": job.task_key,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "event_id": job.event.event_id if job.event is not None else None,
        "cursor": encode_cursor(job),
    }


def list_table(jobs: Sequence[Job]) -> str:
    rows = [("UPDATED", "PROVIDER", "TASK", "STATUS", "PROVIDER STATUS", "KIND")]
    rows += [
        (_when(job.updated_at), job.provider, job.task_id, job.status.value, job.provider_status, job.kind)
        for job in jobs
    ]
    return aligned(rows)


def _masked(data: dict[str, Any]) -> dict[str, Any]:
    # Result URLs are often signed (OSS, COS): a terminal or a ticket is no place for a signature.
    return data | {name: redact_value(data[name]) for name in ("results", "user_data", "error")}


def _event_type(status: JobStatus) -> str:
    return "job.completed" if status is JobStatus.COMPLETED else "job.failed"


def _iso(at: datetime) -> str:
    """As pydantic writes the job's own times: UTC, with a Z."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if at else ""


def _compact(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _cursor(text: str) -> tuple[datetime, str]:
    try:
        return decode_cursor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# Commands


def store_call(call: Callable[[MongoStore], Coroutine[Any, Any, T]]) -> T | None:
    """Run one read against the job store; an unreachable or failing database is reported, not raised."""
    from pymongo.errors import PyMongoError

    from consumer.store.mongo import MongoStore

    settings = load_settings()
    store = MongoStore.from_settings(settings.mongodb, settings.consumer, settings.limits)

    async def run() -> T:
        try:
            return await call(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except PyMongoError as exc:
        print(f"speechjobs: MongoDB: {short_error(exc)}", file=sys.stderr)
    return None


def short_error(error: BaseException | str) -> str:
    """An error's message without secrets, cut before pymongo's long topology description."""
    text = redact(str(error)).split(", Timeout: ")[0]
    return text if len(text) <= 300 else text[:297] + "..."


def _show(args: argparse.Namespace) -> int:
    key = job_key(args.provider, args.task_id)

    async def read(store: MongoStore) -> tuple[Job | None, dict[str, datetime]]:
        job = (await store.jobs_by_key([key])).get(key)
        if job is None:
            return None, {}
        return job, await store.confirmations([t.event_id for t in terminal_transitions(job)])

    found = store_call(read)
    if found is None:
        return 1
    job, confirmed = found
    if job is None:
        print(f"speechjobs: no stored {args.provider} job with task id {args.task_id!r}", file=sys.stderr)
        return 1
    print(json.dumps(job_json(job, confirmed), ensure_ascii=False) if args.json else job_text(job, confirmed))
    return 0


def _list(args: argparse.Namespace) -> int:
    async def read(store: MongoStore) -> list[Job]:
        # One more than the page: whether to offer a next page without another query.
        return await store.job_page(
            provider=args.provider,
            statuses=args.status or (),
            since=args.since,
            after=args.after,
            limit=args.limit + 1,
        )

    jobs = store_call(read)
    if jobs is None:
        return 1
    more = len(jobs) > args.limit
    jobs = jobs[: args.limit]
    if args.json:
        for job in jobs:
            print(json.dumps(list_json(job), ensure_ascii=False))
    elif jobs:
        print(list_table(jobs))
    else:
        print("no jobs" + (" after this cursor" if args.after else ""))
    if more:
        hint = f"more: repeat with --after {encode_cursor(jobs[-1])}"
        print(hint, file=sys.stderr if args.json else sys.stdout)
    return 0


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
