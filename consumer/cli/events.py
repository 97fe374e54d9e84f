"""Event commands: replay stored jobs' events to one subscriber's queue."""

from __future__ import annotations

import argparse
import asyncio
import sys

from consumer.cli.jobs import short_error
from consumer.cli.present import Progress, rate_arg, since_arg
from consumer.settings import load_settings
from schemas.job import PROVIDERS, JobStatus

__all__ = ["add_commands", "queue_name"]

_TERMINAL = [status.value for status in JobStatus if status.terminal]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = sub.add_parser(
        "events",
        help="replay stored jobs' events to a subscriber's queue",
        description="The job.completed / job.failed events, as stored with their jobs.",
    )
    actions = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    replay = actions.add_parser(
        "replay",
        help="re-send the events of stored terminal jobs to one queue",
        description="Re-send the stored event of each terminal job updated at or after T to QUEUE "
        "alone, by the default exchange: the same body, event_id, message_id and headers as first "
        "published (but no traceparent), persistent, confirmed by the broker. The subscriber "
        "deduplicates on event_id as for any redelivery. Jobs are taken in order of last update.",
    )
    replay.add_argument(
        "--since",
        type=since_arg,
        required=True,
        metavar="T",
        help="jobs updated at or after T: an ISO time, or 30m, 2h, 1d ago",
    )
    replay.add_argument("--provider", choices=PROVIDERS, help="only jobs of this provider")
    replay.add_argument(
        "--status", choices=_TERMINAL, action="append", help="only jobs in this terminal status (repeatable)"
    )
    replay.add_argument(
        "--to-queue",
        required=True,
        type=queue_name,
        metavar="QUEUE",
        help="the subscriber's queue (must exist)",
    )
    replay.add_argument("--dry-run", action="store_true", help="print what would be sent, send nothing")
    replay.add_argument("--rate", type=rate_arg, metavar="N", help="at most N events per second")
    replay.set_defaults(func=_replay)


def queue_name(text: str) -> str:
    """A queue name AMQP can carry (a short string); the default exchange routes by it."""
    if not text.strip() or len(text.encode()) > 255:
        raise argparse.ArgumentTypeError(f"not a queue name (1 to 255 bytes): {text!r}")
    return text


def _replay(args: argparse.Namespace) -> int:
    import aio_pika.exceptions
    from pymongo.errors import PyMongoError

    from consumer.ops.events import EventSelection, QueueMissing, QueueUnusable, replay_events

    selection = EventSelection(
        since=args.since,
        provider=args.provider,
        statuses=tuple(JobStatus(s) for s in args.status or _TERMINAL),
    )
    progress = Progress(sys.stderr, "replaying")
    say = print if args.dry_run else (lambda line: print(line, file=sys.stderr))
    try:
        report = asyncio.run(
            replay_events(
                load_settings(),
                selection,
                args.to_queue,
                rate=args.rate,
                dry_run=args.dry_run,
                progress=(lambda done, total: None) if args.dry_run else progress,
                say=say,
            )
        )
    except QueueMissing as exc:
        print(
            f"speechjobs: queue {exc} does not exist: declare it (and bind it to the events exchange) first",
            file=sys.stderr,
        )
        return 1
    except QueueUnusable as exc:
        print(f"speechjobs: cannot use queue {exc}", file=sys.stderr)
        return 1
    except (aio_pika.exceptions.AMQPError, OSError) as exc:
        print(f"speechjobs: cannot reach the broker: {short_error(exc)}", file=sys.stderr)
        return 1
    except PyMongoError as exc:
        print(f"speechjobs: MongoDB: {short_error(exc)}", file=sys.stderr)
        return 1
    unsent = report.matched - report.published - report.skipped - report.failed
    published = "would publish" if args.dry_run else "published"
    print(
        ("dry run: " if args.dry_run else "")
        + f"matched {report.matched}, {published} {report.published}, skipped {report.skipped}, "
        f"failed {report.failed} in {report.seconds:.1f} s"
        + (f"; stopped early, {unsent} not sent: {short_error(report.stopped)}" if report.stopped else "")
    )
    return 1 if report.failed or report.stopped else 0
