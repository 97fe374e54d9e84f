"""Dead letters as data: what one says about itself, which ones an operator selects, replay headers."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.core.contract import (
    DEAD_LETTER_PROVIDER,
    DEAD_LETTERED_AT,
    ERROR,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    PROVIDER,
    REASON,
    REPLAYS,
    TASK_ID,
    VERDICT_HEADERS,
    header_text,
    parse_routing_key,
)

__all__ = ["Letter", "Selection", "describe", "parse_since", "plan", "replay_headers"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
        task_id=header_text(headers, TASK_ID),
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
    named = header_text(headers, DEAD_LETTER_PROVIDER) or header_text(headers, PROVIDER)
    if named is not None:
        return named
    # Broker dead letters carry no verdict: the producer's routing key (callback.<provider>) names it.
    return parse_routing_key(routing_key)[1]


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The original headers without the dead-letter verdict, with the replay counted."""
    kept: dict[str, Any] = {k: v for k, v in headers.items() if k not in VERDICT_HEADERS}
    kept[REPLAYS] = _int(headers.get(REPLAYS)) + 1
    return kept


def plan(letter: Letter) -> str:
    """Where a replay would send the letter."""
    if letter.target is None:
        return "skip: origin unknown"
    exchange, routing_key = letter.target
    return f"-> exchange {exchange or '(default)'} routing key {routing_key or '(empty)'}"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: object) -> int:
    try:
        return int(_text(value)) if value is not None else 0
    except ValueError:
        return 0


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when
