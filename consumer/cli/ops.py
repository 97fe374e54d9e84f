"""Operator commands: dlq list/show/replay/purge and reprocess."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from consumer.cli.present import (
    Progress,
    count_arg,
    format_headers,
    format_table,
    letter_json,
    pretty_body,
    rate_arg,
    since_arg,
)
from consumer.ops.letters import Selection, plan
from consumer.settings import load_settings
from schemas.job import PROVIDERS

__all__ = ["add_commands"]

T = TypeVar("T")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_dlq(sub)
    _add_reprocess(sub)


_ID_HELP = (
    "A dead letter's ID is its AMQP message_id if set, else the first 16 hex characters of "
    "sha256(body + its dead-lettered-at header, or the broker's x-death time)."
)


def _add_dlq(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--provider", choices=PROVIDERS, help="only dead letters of this provider")
    filters.add_argument("--reason", help="only this reason, e.g. malformed or broker:delivery_limit")
    filters.add_argument(
        "--since",
        type=since_arg,
        metavar="T",
        help="dead-lettered at or after T (ISO time, or 30m, 2h, 1d ago)",
    )
    filters.add_argument(
        "--id", dest="ids", action="append", default=[], metavar="ID", help="only this ID (repeatable)"
    )
    filters.add_argument("--limit", type=count_arg, metavar="N", help="act on at most N dead letters")

    dlq = sub.add_parser(
        "dlq",
        help="inspect, replay and purge dead letters",
        description="Inspect, replay and purge the dead-letter queue. " + _ID_HELP,
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    list_ = dlq_sub.add_parser(
        "list",
        parents=[filters],
        help="list dead letters without removing them",
        description="List dead letters in queue order; all of them stay in the queue. " + _ID_HELP,
    )
    list_.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    list_.set_defaults(func=_dlq_list)

    show = dlq_sub.add_parser(
        "show",
        help="print one dead letter's headers and body",
        description="Print one dead letter's headers and pretty-printed body; it stays in the queue. "
        + _ID_HELP,
    )
    show.add_argument("id", metavar="ID")
    show.set_defaults(func=_dlq_show)

    replay = dlq_sub.add_parser(
        "replay",
        parents=[filters],
        help="republish dead letters to where they first came from",
        description="Republish each selected dead letter to the exchange and routing key it first came by, "
        "with its original body, content type, message id and headers, and remove it from the "
        "dead-letter queue only once the broker confirms. " + _ID_HELP,
    )
    replay.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    replay.add_argument("--rate", type=rate_arg, metavar="N", help="at most N messages per second")
    replay.set_defaults(func=_dlq_replay)

    purge = dlq_sub.add_parser(
        "purge",
        parents=[filters],
        help="delete dead letters",
        description="Delete the selected dead letters. " + _ID_HELP,
    )
    purge.add_argument("--yes", action="store_true", help="really delete (otherwise only count)")
    purge.set_defaults(func=_dlq_purge)


def _add_reprocess(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reprocess = sub.add_parser(
        "reprocess",
        help="re-normalize stored raw bodies and apply what changed",
        description="Re-normalize the stored raw bodies (oldest first) with the current parsers and "
        "SPEECHJOBS_PROVIDERS, apply them with the service's state rules, and publish events for new "
        "transitions only.",
    )
    reprocess.add_argument("--provider", choices=PROVIDERS, help="only bodies of this provider")
    reprocess.add_argument(
        "--since", type=since_arg, metavar="T", help="received at or after T: an ISO time, or 30m, 2h, 1d ago"
    )
    reprocess.add_argument("--task-id", help="only bodies that named this task")
    reprocess.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    reprocess.set_defaults(func=_reprocess)


def _selection(args: argparse.Namespace) -> Selection:
    return Selection(args.provider, args.reason, args.since, frozenset(args.ids), args.limit)


def _broker_call(call: Coroutine[Any, Any, T]) -> T | None:
    """Run one dead-letter operation; a missing queue or unreachable broker is reported, not raised."""
    import aio_pika.exceptions

    from consumer.ops.dlq import DeadLetterQueueMissing

    try:
        return asyncio.run(call)
    except DeadLetterQueueMissing as exc:
        print(f"dead-letter queue {exc} does not exist", file=sys.stderr)
    except (aio_pika.exceptions.AMQPConnectionError, ConnectionError) as exc:
        print(f"cannot reach the broker: {exc}", file=sys.stderr)
    return None


def _dlq_list(args: argparse.Namespace) -> int:
    from consumer.ops import dlq

    letters = _broker_call(dlq.browse(load_settings(), _selection(args)))
    if letters is None:
        return 1
    now = datetime.now(UTC)
    if args.json:
        for letter in letters:
            print(json.dumps(letter_json(letter, now), ensure_ascii=False))
    else:
        print(format_table(letters, now))
    return 0


def _dlq_show(args: argparse.Namespace) -> int:
    from consumer.ops import dlq

    letters = _broker_call(dlq.browse(load_settings(), Selection(ids=frozenset([args.id]))))
    if letters is None:
        return 1
    if not letters:
        print(f"no dead letter with ID {args.id}", file=sys.stderr)
        return 1
    letter = letters[0]
    now = datetime.now(UTC)
    for name, value in letter_json(letter, now).items():
        shown = json.dumps(value) if isinstance(value, dict) else "-" if value is None else value
        print(f"{name}: {shown}")
    if len(letters) > 1:
        print(f"note: {len(letters) - 1} more dead letter(s) share this ID")
    print("\nheaders:")
    for line in format_headers(letter.headers):
        print(f"  {line}")
    print("\nbody:")
    print(pretty_body(letter.body))
    return 0


def _dlq_replay(args: argparse.Namespace) -> int:
    from consumer.ops import dlq

    settings, selection = load_settings(), _selection(args)
    if args.dry_run:
        letters = _broker_call(dlq.browse(settings, selection))
        if letters is None:
            return 1
        for letter in letters:
            print(f"{letter.id}  {letter.reason}  {plan(letter)}")
        skipped = sum(letter.target is None for letter in letters)
        print(f"dry run: would replay {len(letters) - skipped}, skip {skipped} (no known origin)")
        return 0
    progress = Progress(sys.stderr, "replaying")
    report = _broker_call(dlq.replay(settings, selection, rate=args.rate, progress=progress))
    if report is None:
        return 1
    print(
        f"replayed {report.replayed}, skipped {report.skipped}, failed {report.failed}; "
        f"{report.seen - report.selected} not selected"
        + (f"; stopped early: {report.stopped}" if report.stopped else "")
    )
    return 1 if report.failed or report.stopped else 0


def _dlq_purge(args: argparse.Namespace) -> int:
    from consumer.ops import dlq

    count = _broker_call(dlq.purge(load_settings(), _selection(args), confirmed=args.yes))
    if count is None:
        return 1
    if not args.yes:
        print(f"would delete {count} dead letter(s); pass --yes to delete them", file=sys.stderr)
        return 2
    print(f"deleted {count} dead letter(s)")
    return 0


def _reprocess(args: argparse.Namespace) -> int:
    from consumer.ops.reprocess import reprocess

    report = asyncio.run(
        reprocess(
            load_settings(),
            provider=args.provider,
            since=args.since,
            task_id=args.task_id,
            dry_run=args.dry_run,
            say=print,
        )
    )
    prefix = "dry run: " if args.dry_run else ""
    would = "would be " if args.dry_run else ""
    print(
        f"{prefix}bodies read {report.bodies}, updates {would}applied {report.updates}, "
        f"transitions {report.transitions}, events {would}published {report.events}, "
        f"rejected {report.rejected}, ignored {report.ignored}, not kept {report.not_kept}"
    )
    return 0
