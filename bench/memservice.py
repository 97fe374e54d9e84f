"""python -m bench.memservice: the real Service and Pipeline in a process of their own, with a MemoryStore."""

from __future__ import annotations

import asyncio

from bench.memstore import MemoryStore
from consumer.logs import setup_logging
from consumer.service import Service
from consumer.settings import Settings

__all__ = ["main"]


def main() -> int:
    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    return asyncio.run(Service(settings, store=MemoryStore()).run())


if __name__ == "__main__":
    raise SystemExit(main())
