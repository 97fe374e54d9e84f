"""The speechjobs command line, one module per command group."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from consumer.cli import events, jobs, ops, service, tools
from consumer.store.mongo import NotConfigured

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        result: int = args.func(args)
    except NotConfigured as exc:
        print(f"speechjobs: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # the settings: names and reasons only, never the values
        print(f"speechjobs: invalid settings: {exc}", file=sys.stderr)
        return 2
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechjobs", description="Cloud speech-job notifications to one deduplicated event stream."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (service, tools, jobs, events, ops):
        group.add_commands(sub)
    return parser
