"""Service commands: the long-running processes."""

from __future__ import annotations

import argparse

from consumer.settings import load_settings

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the consumer (settings from SPEECHJOBS_* variables)")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from consumer.runtime.lifecycle import run_loop
    from consumer.runtime.logs import setup_logging
    from consumer.worker.service import Service

    settings = load_settings()
    setup_logging(settings.runtime.log_format, settings.runtime.log_level)
    return run_loop(Service(settings).run(), settings.runtime.event_loop)
