"""python -m bench.memservice: the real Service and Pipeline in a process of their own, with a MemoryStore."""

from __future__ import annotations

from consumer.runtime.lifecycle import run_loop
from consumer.runtime.logs import setup_logging
from consumer.settings import load_settings
from consumer.store.memory import MemoryStore
from consumer.worker.service import Service

__all__ = ["main"]


def main() -> int:
    settings = load_settings()
    setup_logging(settings.runtime.log_format, settings.runtime.log_level)
    return run_loop(Service(settings, store=MemoryStore()).run(), settings.runtime.event_loop)


if __name__ == "__main__":
    raise SystemExit(main())
