"""The inbound contract shared by every producer and the consumer: routing keys, headers, dead letters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

from schemas.job import PROVIDERS, Channel, Provider

__all__ = [
    "CHANNELS",
    "CONVERTED_HEADERS",
    "DEAD_LETTERED_AT",
    "DEAD_LETTER_PROVIDER",
    "DELIVERIES",
    "DELIVERY_COUNT",
    "DROPPED_HEADERS",
    "ERROR",
    "INBOUND_HEADERS",
    "ORIGINAL_EXCHANGE",
    "ORIGINAL_ROUTING_KEY",
    "POLLED_AT",
    "PROVIDER",
    "REASON",
    "RECEIVED_AT",
    "REPLAYS",
    "TASK_ID",
    "TRACEPARENT",
    "VERDICT",
    "VERDICT_HEADERS",
    "Inbound",
    "InboundChannel",
    "header_text",
    "inbound",
    "parse_routing_key",
    "routing_key",
    "valid_traceparent",
]

_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")

# callback, mq, poll: a vendor's notification or answer. track: `{"task_id": "..."}`, a job to poll.
InboundChannel = Literal["callback", "mq", "poll", "track"]
CHANNELS: Final[tuple[InboundChannel, ...]] = ("callback", "mq", "poll", "track")

# Headers a producer may set on an inbound message.
PROVIDER: Final = "x-provider"  # names the provider; wins over the routing key and the body's shape
TASK_ID: Final = "x-task-id"  # for bodies that carry no id (MetaStudio's poll answers, callback URLs)
TRACEPARENT: Final = "traceparent"  # W3C trace context, carried to the event
RECEIVED_AT: Final = "x-received-at"  # when the receiver took the HTTP callback (ISO 8601, UTC)
POLLED_AT: Final = "x-polled-at"  # when the poller got the vendor's answer (ISO 8601, UTC)
INBOUND_HEADERS: Final = (PROVIDER, TASK_ID, TRACEPARENT, RECEIVED_AT, POLLED_AT)

# The broker's own: quorum queues count earlier deliveries.
DELIVERY_COUNT: Final = "x-delivery-count"

# Headers of a dead letter: the verdict of its last attempt, and where it first came from.
REASON: Final = "x-speechjobs-reason"
ERROR: Final = "x-speechjobs-error"
DEAD_LETTER_PROVIDER: Final = "x-speechjobs-provider"
DEAD_LETTERED_AT: Final = "x-speechjobs-dead-lettered-at"
DELIVERIES: Final = "x-speechjobs-deliveries"
ORIGINAL_EXCHANGE: Final = "x-original-exchange"
ORIGINAL_ROUTING_KEY: Final = "x-original-routing-key"
REPLAYS: Final = "x-speechjobs-replays"  # how often `dlq replay` sent it back
DROPPED_HEADERS: Final = "x-speechjobs-dropped-headers"  # original headers left out, and why not kept
CONVERTED_HEADERS: Final = (
    "x-speechjobs-converted-headers"  # original headers AMQP could not carry as they were
)
VERDICT: Final = (
    REASON,
    ERROR,
    DEAD_LETTER_PROVIDER,
    DEAD_LETTERED_AT,
    DELIVERIES,
    DROPPED_HEADERS,
    CONVERTED_HEADERS,
)
# Dropped when a dead letter is replayed: the verdict, the broker's death records, and a stale
# delivery count that would give the replay fewer attempts.
VERDICT_HEADERS: Final = frozenset(
    {
        *VERDICT,
        DELIVERY_COUNT,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message on the inbound exchange, as its producer sent it."""

    body: bytes
    routing_key: str = ""
    headers: Mapping[str, object] = field(default_factory=dict)
    content_type: str | None = None


def routing_key(channel: InboundChannel, provider: Provider | None) -> str:
    """`callback.tingwu`, `poll.tencent-ci`, ...; `<channel>.unknown` when the producer cannot tell."""
    return f"{channel}.{provider or 'unknown'}"


def parse_routing_key(key: str) -> tuple[Channel, Provider | None]:
    """The channel and provider a routing key names; segments it does not know are ignored."""
    first, _, rest = key.partition(".")
    channel: Channel = next((c for c in CHANNELS if c == first), "unknown")
    provider = next((p for p in PROVIDERS if p in rest.split(".")), None)
    return channel, provider


def inbound(
    body: bytes,
    *,
    channel: InboundChannel,
    provider: Provider | None,
    task_id: str | None = None,
    traceparent: str | None = None,
    content_type: str | None = None,
    received_at: datetime | None = None,
    polled_at: datetime | None = None,
) -> Inbound:
    """The one way a producer (receiver, poller, `speechjobs send`) builds an inbound message."""
    headers: dict[str, object] = {}
    if provider is not None:
        headers[PROVIDER] = provider
    if task_id:
        headers[TASK_ID] = task_id
    if traceparent:
        headers[TRACEPARENT] = traceparent
    if received_at is not None:
        headers[RECEIVED_AT] = _iso(received_at)
    if polled_at is not None:
        headers[POLLED_AT] = _iso(polled_at)
    return Inbound(body, routing_key(channel, provider), headers, content_type)


def valid_traceparent(text: str | None) -> str | None:
    """The text if it is a valid W3C traceparent (version 00 layout), else None."""
    if text is None or len(text) != 55:  # checked first: a megabyte of text is refused at once
        return None
    return text if _TRACEPARENT.fullmatch(text) else None


def header_text(headers: Mapping[str, object], name: str) -> str | None:
    """A header as text (AMQP may deliver bytes); None when absent or blank."""
    value = headers.get(name)
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.strip() or None


def _iso(when: datetime) -> str:
    return (when if when.tzinfo is UTC else when.astimezone(UTC)).isoformat(timespec="milliseconds")
