"""Dead-letter operations: browse without removing, replay to where a message came from, purge."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TextIO
from xml.dom import minidom
from xml.parsers.expat import ExpatError

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    FieldValue,
)

from consumer.amqp.publisher import (
    DEAD_LETTERED_AT,
    DELIVERIES,
    ERROR,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    PROVIDER,
    REASON,
)
from consumer.core.contract import header_text
from consumer.settings import Settings
from schemas.job import PROVIDERS

__all__ = [
    "DeadLetterQueueMissing",
    "Letter",
    "Progress",
    "ReplayReport",
    "Selection",
    "browse",
    "describe",
    "format_age",
    "format_headers",
    "format_table",
    "letter_json",
    "parse_since",
    "plan",
    "pretty_body",
    "purge",
    "replay",
    "replay_headers",
]

log = logging.getLogger("speechjobs.dlq")

REPLAYS = "x-speechjobs-replays"
TASK_ID = "x-speechjobs-task-id"

# The verdict headers describe the last attempt only. The broker's death records and a stale
# x-delivery-count must go too: the pipeline reads the latter and would give a replay fewer retries.
_DROPPED_ON_REPLAY = frozenset(
    {
        REASON,
        ERROR,
        PROVIDER,
        DEAD_LETTERED_AT,
        DELIVERIES,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_HEX_EXCERPT = 256


class DeadLetterQueueMissing(Exception):
    """The configured dead-letter queue does not exist (the service never started with these settings)."""


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter as read from the queue, with what the tooling derives from its headers."""

    id: str
    reason: str
    provider: str | None
    task_id: str | None
    routing_key: str
    target: tuple[str, str] | None  # (exchange, routing key) it first came by, None if unknown
    dead_lettered_at: datetime | None
    size: int
    replays: int
    error: str | None
    message_id: str | None
    content_type: str | None
    headers: Mapping[str, Any] = field(repr=False)
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command acts on; every given criterion must hold."""

    provider: str | None = None
    reason: str | None = None
    since: datetime | None = None
    ids: frozenset[str] = frozenset()
    limit: int | None = None

    def matches(self, letter: Letter) -> bool:
        if self.provider is not None and letter.provider != self.provider:
            return False
        if self.reason is not None and letter.reason != self.reason:
            return False
        # An unknown age cannot prove it is recent enough, and purge must not guess.
        if self.since is not None and (
            letter.dead_lettered_at is None or letter.dead_lettered_at < self.since
        ):
            return False
        return not self.ids or letter.id in self.ids


# Pure helpers


def parse_since(text: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC if no offset) or a duration ago such as 45s, 30m, 2h, 1d, 1w."""
    if m := _DURATION.match(text):
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO time or a duration like 30m, 2h, 1d: {text!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def describe(
    body: bytes,
    headers: Mapping[str, Any],
    *,
    routing_key: str,
    message_id: str | None,
    content_type: str | None,
) -> Letter:
    """What a dead letter's message says about it: our headers first, else the broker's x-death."""
    death = _first_death(headers)
    stamp, dead_lettered_at = _dead_lettered_at(headers, death)
    reason = header_text(headers, REASON)
    if reason is None:
        broker_reason = death.get("reason") if death else None
        reason = f"broker:{_text(broker_reason)}" if broker_reason is not None else "unknown"
    return Letter(
        id=message_id or hashlib.sha256(body + stamp.encode()).hexdigest()[:16],
        reason=reason,
        provider=_provider(headers, routing_key),
        task_id=header_text(headers, "x-task-id") or header_text(headers, TASK_ID),
        routing_key=routing_key,
        target=_target(headers, death),
        dead_lettered_at=dead_lettered_at,
        size=len(body),
        replays=_int(headers.get(REPLAYS)),
        error=header_text(headers, ERROR),
        message_id=message_id,
        content_type=content_type,
        headers=dict(headers),
        body=body,
    )


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return None


def _dead_lettered_at(
    headers: Mapping[str, Any], death: Mapping[str, Any] | None
) -> tuple[str, datetime | None]:
    """The raw stamp (part of the hash id) and its parsed time."""
    stamp = header_text(headers, DEAD_LETTERED_AT)
    if stamp is not None:
        try:
            return stamp, _aware(datetime.fromisoformat(stamp))
        except ValueError:
            return stamp, None
    when = death.get("time") if death else None
    if isinstance(when, datetime):
        when = _aware(when)
        return when.isoformat(), when
    return "", None


def _target(headers: Mapping[str, Any], death: Mapping[str, Any] | None) -> tuple[str, str] | None:
    exchange = headers.get(ORIGINAL_EXCHANGE)
    routing_key = headers.get(ORIGINAL_ROUTING_KEY)
    if exchange is not None and routing_key is not None:
        return _text(exchange), _text(routing_key)
    if death is not None and death.get("exchange") is not None:
        keys = death.get("routing-keys")
        first = keys[0] if isinstance(keys, list) and keys else ""
        return _text(death["exchange"]), _text(first)
    return None


def _provider(headers: Mapping[str, Any], routing_key: str) -> str | None:
    named = header_text(headers, PROVIDER) or header_text(headers, "x-provider")
    if named is not None:
        return named
    # Broker dead letters carry no verdict: the relay's routing key (callback.<provider>) names it.
    return next((s for s in routing_key.split(".")[1:] if s in PROVIDERS), None)


def replay_headers(headers: Mapping[str, Any]) -> dict[str, FieldValue]:
    """The original headers without the dead-letter verdict, with the replay counted."""
    kept: dict[str, FieldValue] = {k: v for k, v in headers.items() if k not in _DROPPED_ON_REPLAY}
    kept[REPLAYS] = _int(headers.get(REPLAYS)) + 1
    return kept


def replay_message(letter: Letter) -> aio_pika.Message:
    return aio_pika.Message(
        letter.body,
        headers=replay_headers(letter.headers),
        content_type=letter.content_type,
        message_id=letter.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


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
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
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
    if head == "<" and not _DTD.search(body):
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


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: object) -> int:
    try:
        return int(_text(value)) if value is not None else 0
    except ValueError:
        return 0


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, a plain line now and then otherwise."""

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
            self._stream.write(f"\r{self._label} {done}/{total}" + ("\n" if done >= total else ""))
        else:
            self._stream.write(f"{self._label} {done}/{total}\n")
        self._stream.flush()


def plan(letter: Letter) -> str:
    """Where a replay would send the letter."""
    if letter.target is None:
        return "skip: origin unknown"
    exchange, routing_key = letter.target
    return f"-> exchange {exchange or '(default)'} routing key {routing_key or '(empty)'}"


# Broker I/O

ReplayOutcome = Literal["replayed", "skipped", "failed"]


@dataclass(slots=True)
class ReplayReport:
    seen: int = 0
    selected: int = 0
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    stopped: str | None = None  # why the run ended early, if it did

    def add(self, outcome: ReplayOutcome) -> None:
        if outcome == "replayed":
            self.replayed += 1
        elif outcome == "skipped":
            self.skipped += 1
        else:
            self.failed += 1


@asynccontextmanager
async def _dead_letters(settings: Settings) -> AsyncIterator[tuple[AbstractConnection, AbstractQueue]]:
    connection = await aio_pika.connect(
        settings.amqp_url.get_secret_value(), client_properties={"connection_name": "speechjobs-dlq"}
    )
    try:
        channel = await connection.channel(publisher_confirms=False)
        try:
            queue = await channel.declare_queue(settings.dead_letter_queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise DeadLetterQueueMissing(settings.dead_letter_queue) from None
        try:
            yield connection, queue
        finally:
            # Closing hands every dead letter still unacked back, each in its original position
            # (the dead-letter queue is a classic queue); a killed process has the same effect.
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()


async def _take(
    queue: AbstractQueue, selection: Selection
) -> tuple[list[tuple[AbstractIncomingMessage, Letter]], int]:
    """Get the dead letters present now and hold them unacked; return the selected ones and the count seen.

    Bounded by the depth at the start so that letters dead-lettered meanwhile (a replay failing
    again, say) are not taken a second time.
    """
    depth = queue.declaration_result.message_count or 0
    selected: list[tuple[AbstractIncomingMessage, Letter]] = []
    seen = 0
    while seen < depth and (selection.limit is None or len(selected) < selection.limit):
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        seen += 1
        letter = describe(
            message.body,
            message.headers,
            routing_key=message.routing_key or "",
            message_id=message.message_id,
            content_type=message.content_type,
        )
        if selection.matches(letter):
            selected.append((message, letter))
    return selected, seen


async def browse(settings: Settings, selection: Selection) -> list[Letter]:
    """The selected dead letters, in queue order; all of them stay in the queue."""
    async with _dead_letters(settings) as (_, queue):
        taken, _ = await _take(queue, selection)
        return [letter for _, letter in taken]


async def purge(settings: Settings, selection: Selection, *, confirmed: bool) -> int:
    """Delete the selected dead letters (only count them unless confirmed); the others stay."""
    async with _dead_letters(settings) as (_, queue):
        taken, _ = await _take(queue, selection)
        if confirmed:
            for message, letter in taken:
                await message.ack()
                log.info("purged dead letter %s (%s)", letter.id, letter.reason)
        return len(taken)


async def replay(
    settings: Settings,
    selection: Selection,
    *,
    rate: float | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> ReplayReport:
    """Republish each selected dead letter to where it first came from; ack it only once confirmed.

    A crash between the confirm and the ack leaves the letter both replayed and still dead-lettered:
    a duplicate the service deduplicates, never a loss.
    """
    async with _dead_letters(settings) as (connection, queue):
        taken, seen = await _take(queue, selection)
        report = ReplayReport(seen=seen, selected=len(taken))
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchanges: dict[str, AbstractExchange | None] = {}
        started = time.monotonic()
        try:
            for index, (message, letter) in enumerate(taken):
                if rate:
                    await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
                report.add(await _replay_one(connection, channel, exchanges, message, letter, settings))
                progress(index + 1, len(taken))
        except (
            aio_pika.exceptions.AMQPError,
            aio_pika.exceptions.ChannelInvalidStateError,
            ConnectionError,
        ) as exc:
            # A lost channel (or the broker's consumer_timeout on held letters) puts every unacked
            # letter back: the rest simply stay dead-lettered.
            report.stopped = f"{type(exc).__name__}: {exc}"
            log.error("replay stopped after %d of %d: %s", report.replayed, len(taken), report.stopped)
        return report


async def _replay_one(
    connection: AbstractConnection,
    channel: AbstractChannel,
    exchanges: dict[str, AbstractExchange | None],
    message: AbstractIncomingMessage,
    letter: Letter,
    settings: Settings,
) -> ReplayOutcome:
    if letter.target is None:
        log.warning("dead letter %s has no known origin, left in the queue", letter.id)
        return "skipped"
    exchange_name, routing_key = letter.target
    if exchange_name not in exchanges:
        exchanges[exchange_name] = await _exchange(connection, channel, exchange_name)
    exchange = exchanges[exchange_name]
    if exchange is None:
        log.warning(
            "exchange %r of dead letter %s does not exist, left in the queue", exchange_name, letter.id
        )
        return "failed"
    try:
        await exchange.publish(
            replay_message(letter),
            routing_key=routing_key,
            mandatory=True,
            timeout=settings.publish_timeout_s,
        )
    except (aio_pika.exceptions.DeliveryError, TimeoutError) as exc:
        log.warning("dead letter %s not replayed (%s), left in the queue", letter.id, type(exc).__name__)
        return "failed"
    await message.ack()
    return "replayed"


async def _exchange(
    connection: AbstractConnection, channel: AbstractChannel, name: str
) -> AbstractExchange | None:
    """The exchange on the publishing channel, or None if it does not exist.

    Checked on a throwaway channel: a passive declare of a missing exchange closes its channel.
    """
    if name == "":
        return channel.default_exchange
    probe = await connection.channel(publisher_confirms=False)
    try:
        await probe.get_exchange(name, ensure=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        with contextlib.suppress(Exception):
            await probe.close()
    return await channel.get_exchange(name, ensure=False)
