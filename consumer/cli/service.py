"""Service commands: the long-running processes."""

from __future__ import annotations

import argparse

from consumer.settings import load_settings

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the consumer (settings from SPEECHJOBS_* variables)")
    run.set_defaults(func=_run)
    receive = sub.add_parser("receive", help="run the callback receiver (HTTP on SPEECHJOBS_RECEIVER_PORT)")
    receive.set_defaults(func=_receive)
    poll = sub.add_parser("poll", help="run the vendor poller (credentials from SPEECHJOBS_* variables)")
    poll.set_defaults(func=_poll)


def _run(args: argparse.Namespace) -> int:
    from consumer.runtime.lifecycle import run_loop
    from consumer.runtime.logs import setup_logging
    from consumer.worker.service import Service

    settings = load_settings()
    setup_logging(settings.runtime.log_format, settings.runtime.log_level)
    return run_loop(Service(settings).run(), settings.runtime.event_loop)


def _receive(args: argparse.Namespace) -> int:
    from consumer.receiver.service import ReceiverService
    from consumer.runtime.lifecycle import run_loop
    from consumer.runtime.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.runtime.log_format, settings.runtime.log_level)
    return run_loop(ReceiverService(settings).run(), settings.runtime.event_loop)


def _poll(args: argparse.Namespace) -> int:
    from consumer.poller.service import PollerService
    from consumer.runtime.lifecycle import run_loop
    from consumer.runtime.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.runtime.log_format, settings.runtime.log_level)
    return run_loop(PollerService(settings).run(), settings.runtime.event_loop)
