"""How dead letters are shown: a table, JSON lines, headers, a pretty body, a progress line."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO
from xml.dom import minidom
from xml.parsers.expat import ExpatError

from consumer.core.decode import declares_dtd
from consumer.ops.letters import Letter, parse_since

__all__ = [
    "Progress",
    "aligned",
    "count_arg",
    "format_age",
    "format_headers",
    "format_table",
    "letter_json",
    "pretty_body",
    "rate_arg",
    "since_arg",
]

_HEX_EXCERPT = 256


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def format_table(letters: Sequence[Letter], now: datetime) -> str:
    header = ("ID", "REASON", "PROVIDER", "TASK", "ROUTING KEY", "AGE", "SIZE", "REPLAYS")
    rows = [header] + [
        (
            letter.id,
            letter.reason,
            letter.provider or "-",
            letter.task_id or "-",
            letter.routing_key or "-",
            format_age((now - letter.dead_lettered_at).total_seconds()) if letter.dead_lettered_at else "?",
            str(letter.size),
            str(letter.replays),
        )
        for letter in letters
    ]
    return aligned(rows)


def aligned(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as columns, two spaces apart; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def letter_json(letter: Letter, now: datetime) -> dict[str, Any]:
    at = letter.dead_lettered_at
    return {
        "id": letter.id,
        "reason": letter.reason,
        "error": letter.error,
        "provider": letter.provider,
        "task_id": letter.task_id,
        "routing_key": letter.routing_key,
        "target": {"exchange": letter.target[0], "routing_key": letter.target[1]} if letter.target else None,
        "size": letter.size,
        "replays": letter.replays,
        "dead_lettered_at": at.isoformat() if at else None,
        "age_s": round((now - at).total_seconds()) if at else None,
        "message_id": letter.message_id,
        "content_type": letter.content_type,
    }


def format_headers(headers: Mapping[str, Any]) -> list[str]:
    return [f"{name}: {_show(headers[name])}" for name in sorted(headers)]


def _show(value: Any) -> str:
    if isinstance(value, str | int | float | bool):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def pretty_body(body: bytes) -> str:
    """JSON indented, XML re-indented, other text as is, anything binary as a hex excerpt."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _hex(body)
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        return _hex(body)
    head = text.lstrip()[:1]
    if head in ("{", "["):
        with contextlib.suppress(ValueError):
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    # A DTD is exactly what got such a body dead-lettered: shown raw, never parsed (entity expansion).
    if head == "<" and not declares_dtd(body):
        with contextlib.suppress(ExpatError):
            root = minidom.parseString(body).documentElement
            if root is not None:
                _strip_blank_text(root)
                return root.toprettyxml(indent="  ").rstrip()
    return text


def _strip_blank_text(node: minidom.Element) -> None:
    for child in list(node.childNodes):
        if isinstance(child, minidom.Text) and not child.data.strip():
            node.removeChild(child)
        elif isinstance(child, minidom.Element):
            _strip_blank_text(child)


def _hex(body: bytes) -> str:
    lines = [f"binary, {len(body)} bytes"]
    for offset in range(0, min(len(body), _HEX_EXCERPT), 16):
        chunk = body[offset : offset + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  {ascii_}")
    if len(body) > _HEX_EXCERPT:
        lines.append(f"... {len(body) - _HEX_EXCERPT} more bytes")
    return "\n".join(lines)


_BAR = 30  # characters


class Progress:
    """A progress bar on stderr, redrawn in place on a terminal; a plain line now and then otherwise."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._tty = stream.isatty()
        self._every = 0.2 if self._tty else 10.0
        self._last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self._every:
            return
        self._last = now
        if self._tty:
            share = min(done / total, 1.0) if total else 1.0
            filled = round(share * _BAR)
            bar = "#" * filled + "." * (_BAR - filled)
            line = f"\r{self._label} [{bar}] {share:4.0%} {done}/{total}"
            self._stream.write(line + ("\n" if done >= total else ""))
        else:
            self._stream.write(f"{self._label} {done}/{total}\n")
        self._stream.flush()


# argparse types shared by the command groups: a clear one-line error instead of a traceback.


def since_arg(text: str) -> datetime:
    """An ISO 8601 time or a duration back from now (30m, 2h, 3d)."""
    try:
        return parse_since(text, datetime.now(UTC))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count_arg(text: str) -> int:
    """A positive whole number."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def rate_arg(text: str) -> float:
    """A positive number (per second)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value
