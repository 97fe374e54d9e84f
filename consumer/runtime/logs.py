"""Logging: JSON lines by default, a readable format for terminals, secrets redacted either way."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from consumer.core.redact import MASK, is_secret_header, redact, redact_value

__all__ = ["setup_logging"]

# color_message: uvicorn's terminal copy of its message.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra` fields, redacted: callers log input (routing keys, errors) as fields."""
    return {
        key: MASK if is_secret_header(key) else redact_value(value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD
    }


def _redacted_str(value: object) -> str:
    # orjson's fallback for what it cannot serialise itself: the str() of an object may hold a secret.
    return redact(str(value))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        entry |= _extras(record)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        # Dataclasses go through the fallback too: orjson would otherwise write their fields unredacted.
        option = orjson.OPT_PASSTHROUGH_DATACLASS
        return orjson.dumps(entry, default=_redacted_str, option=option).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        when = self.formatTime(record, "%H:%M:%S")
        line = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The AMQP clients log each connection loss as several ERROR lines and tracebacks; every failure they
    # log also reaches our code, which logs one warning when an outage starts and one line when it ends.
    # At DEBUG their own lines are kept, for a closer look.
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.CRITICAL
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(quiet)
