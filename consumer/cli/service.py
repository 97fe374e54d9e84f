"""Service commands: the long-running processes."""

from __future__ import annotations

import argparse
from collections.abc import Coroutine
from typing import Any

from consumer.settings import Settings, load_settings

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the consumer (settings from SPEECHJOBS_* variables)")
    run.set_defaults(func=_run)
    receive = sub.add_parser("receive", help="run the callback receiver (HTTP on SPEECHJOBS_RECEIVER_PORT)")
    receive.set_defaults(func=_receive)
    poll = sub.add_parser("poll", help="run the vendor poller (credentials from SPEECHJOBS_* variables)")
    poll.set_defaults(func=_poll)


def _run(args: argparse.Namespace) -> int:
    from consumer.worker.service import Service

    settings = _started()
    return _serve("consumer", Service(settings).run(), settings)


def _receive(args: argparse.Namespace) -> int:
    from consumer.receiver.service import ReceiverService

    settings = _started()
    return _serve("receiver", ReceiverService(settings).run(), settings)


def _poll(args: argparse.Namespace) -> int:
    from consumer.poller.service import PollerService

    settings = _started()
    return _serve("poller", PollerService(settings).run(), settings)


def _started() -> Settings:
    from consumer.runtime.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.runtime.log_format, settings.runtime.log_level)
    return settings


def _serve(process: str, main: Coroutine[Any, Any, int], settings: Settings) -> int:
    """Run a process's main coroutine, traced when the OTEL_* variables ask for it (service name
    speechjobs-<process> unless OTEL_SERVICE_NAME says otherwise); the spans still queued are exported
    on the way out."""
    from consumer.runtime import tracing
    from consumer.runtime.lifecycle import run_loop

    tracing.setup(process)
    try:
        return run_loop(main, settings.runtime.event_loop)
    finally:
        tracing.shutdown()
