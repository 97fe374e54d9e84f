"""python -m bench.memservice: the real Service and Pipeline in a process of their own, with a MemoryStore."""

from __future__ import annotations

from bench.memstore import MemoryStore
from consumer.logs import setup_logging
from consumer.service import Service, run_loop
from consumer.settings import Settings

__all__ = ["main"]


def main() -> int:
    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    return run_loop(Service(settings, store=MemoryStore()).run(), settings.event_loop)


if __name__ == "__main__":
    raise SystemExit(main())
