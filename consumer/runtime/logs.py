"""Logging: JSON lines by default, a readable format for terminals, secrets redacted either way."""

from __future__ import annotations

import functools
import itertools
import logging
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from consumer.core.redact import MASK, is_secret_header, redact, redact_value

__all__ = ["outcome", "setup_logging"]

# color_message: uvicorn's terminal copy of its message.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}
# A record's own attributes come first in its __dict__, its `extra` fields after them.
_OWN = len(logging.makeLogRecord({}).__dict__)


# Field names come from the code, not from input: a bounded set, each checked once.
_secret_field = functools.lru_cache(maxsize=1024)(is_secret_header)
_PLAIN = (int, float, bool, type(None))  # values with nothing to redact, the most common kind


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra` fields, redacted: callers log input (routing keys, errors) as fields."""
    return _redacted(itertools.islice(record.__dict__.items(), _OWN, None))


def _redacted(fields: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    return {
        key: MASK if _secret_field(key) else value if type(value) in _PLAIN else redact_value(value)
        for key, value in fields
        if key not in _STANDARD
    }


def _redacted_str(value: object) -> str:
    # orjson's fallback for what it cannot serialise itself: the str() of an object may hold a secret.
    return redact(str(value))


class _JsonFormatter(logging.Formatter):
    _second, _prefix = -1, ""  # the last whole second formatted: a busy process logs many lines in each

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._prefix = (
                second,
                datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            )
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"

    def line(self, created: float, level: str, logger: str, msg: str, fields: dict[str, Any]) -> str:
        entry: dict[str, Any] = {"ts": self._timestamp(created), "level": level, "logger": logger}
        entry["msg"] = redact(msg)
        entry |= fields
        # Dataclasses go through the fallback too: orjson would otherwise write their fields unredacted.
        option = orjson.OPT_PASSTHROUGH_DATACLASS
        return orjson.dumps(entry, default=_redacted_str, option=option).decode()

    def format(self, record: logging.LogRecord) -> str:
        fields = _extras(record)
        if record.exc_info:
            fields["exc"] = redact(self.formatException(record.exc_info))
        return self.line(record.created, record.levelname.lower(), record.name, record.getMessage(), fields)


class _Sink:
    """The JSON handler that setup_logging installed, if it did."""

    handler: logging.StreamHandler[Any] | None = None
    formatter = _JsonFormatter()


def outcome(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> None:
    """Log the INFO line of a request's or a message's outcome, as `logger.info(msg, extra=fields)` would.

    The hot paths log one per request or message; while the JSON handler is the only one, the line is
    written without a LogRecord and the handler dispatch, which cost more CPU than the rest of a callback
    the receiver takes in (bench/README.md). Otherwise (text format, a test's handler) it is a record.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler, root = _Sink.handler, logging.root
    if handler is None or len(root.handlers) != 1 or root.handlers[0] is not handler or logger.handlers:
        logger.info(msg, extra=fields)
        return
    line = _Sink.formatter.line(time.time(), "info", logger.name, msg, _redacted(fields.items()))
    handler.stream.write(line + "\n")
    handler.flush()


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
    handler.setFormatter(_Sink.formatter if fmt == "json" else _TextFormatter())
    _Sink.handler = handler if fmt == "json" else None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The logging HOWTO's "Optimization": records need no thread, process or caller's source line, and
    # finding the caller walks the stack on every line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    # The AMQP clients log each connection loss as several ERROR lines and tracebacks; every failure they
    # log also reaches our code, which logs one warning when an outage starts and one line when it ends.
    # At DEBUG their own lines are kept, for a closer look.
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.CRITICAL
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(quiet)
