"""python -m bench.memservice: the real Service and Pipeline in a process of their own, with a MemoryStore."""

from __future__ import annotations

from consumer.runtime.logs import setup_logging
from consumer.settings import Settings
from consumer.store.memory import MemoryStore
from consumer.worker.service import Service, run_loop

__all__ = ["main"]


def main() -> int:
    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    return run_loop(Service(settings, store=MemoryStore()).run(), settings.event_loop)


if __name__ == "__main__":
    raise SystemExit(main())
