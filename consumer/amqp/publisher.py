"""Publishing edge: job events and dead letters, each awaited until the broker confirms it."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Protocol

import aio_pika
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractExchange
from pamqp import encode
from pamqp.commands import Basic
from pamqp.common import FieldTable, FieldValue
from pamqp.exceptions import PAMQPException

from consumer.amqp.connection import Broker, Producer
from consumer.core.contract import (
    CONVERTED_HEADERS,
    DEAD_LETTER_PROVIDER,
    DEAD_LETTERED_AT,
    DELIVERIES,
    DROPPED_HEADERS,
    ERROR,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    REASON,
    TRACEPARENT,
    Inbound,
    valid_traceparent,
)
from consumer.core.errors import Rejection, error_name
from consumer.core.redact import MASK, is_secret_header, redact
from consumer.runtime import tracing
from schemas.job import EventRecord

__all__ = [
    "MAX_HEADER_TABLE_BYTES",
    "MAX_KIND_CHARS",
    "DeadLetter",
    "EventPublisher",
    "OutboundEvent",
    "Publisher",
    "dead_letter_message",
    "event_properties",
    "publish_inbound",
]

log = logging.getLogger("speechjobs.publisher")

# Headers of a dead letter naming what of the original headers it does not carry as they came: dropped
# (a type AMQP cannot encode, nested too deep, or too large to fit) or converted (bytes as text, numbers
# out of AMQP's range as text, over-long names shortened). Paths name nested entries: `x-meta.raw[2]`.

# The rule for outbound sizes. A message's properties, its header table among them, travel in a single
# content-header frame, and a frame over the broker's frame_max (RabbitMQ: 131072 bytes by default) makes
# the broker close the whole connection, which the client reopens only to send the same frame again. A
# dead letter's header table is kept to half of that (the other properties are short strings of at most
# 255 bytes each, well under 2 KiB together), and to half of a lower frame_max the broker negotiated;
# over it, the original headers are dropped largest first and named in DROPPED_HEADERS. The body is
# always kept: body frames are split to fit any frame_max.
MAX_HEADER_TABLE_BYTES: Final = 64 * 1024
_OTHER_PROPERTIES_BYTES = 2048  # content type, message id, timestamp, ... of a dead letter, at most
_MAX_NAMES_BYTES = 2048  # each list of dropped or converted names, encoded, before "... and N more"
_MAX_PATH_CHARS = 200  # a named path longer than this is cut: it names, it need not be whole
_MAX_DEPTH = 16  # nested tables and arrays below this are dropped (and named), never walked further
_MAX_ERROR_CHARS = 1000  # a Rejection's message is 300 characters; the cap keeps the verdict bounded
MAX_KIND_CHARS = 128  # a job's kind is vendor text (JobType, Tag), kebab-cased: longer is not carried
_INT64 = range(-(2**63), 2**63)  # the widest AMQP integer; pamqp refuses anything beyond

_VERDICT_NAMES = (
    REASON,
    ERROR,
    DEAD_LETTER_PROVIDER,
    DEAD_LETTERED_AT,
    DELIVERIES,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
)

# What a publish raises when the client cannot encode the frame; nothing transient is among them.
_ENCODING_ERRORS: Final = (TypeError, ValueError, OverflowError, struct.error, PAMQPException)

# A publish awaiting its confirm, as aiormq's channel returns it.
_Confirm = Coroutine[Any, Any, aiormq.abc.ConfirmationFrameType | None]

# W3C trace context, version 00 as the spec defines it: lowercase hex, version ff and all-zero ids invalid.


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    record: EventRecord
    provider: str
    kind: str
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    body: bytes
    routing_key: str
    exchange: str
    headers: Mapping[str, object]
    content_type: str | None
    message_id: str | None
    rejection: Rejection
    deliveries: int


class EventPublisher(Protocol):
    """What the pipeline needs of a publisher: job events and dead letters, each confirmed by the broker."""

    async def publish_events(self, events: Sequence[OutboundEvent]) -> None: ...
    async def dead_letter(self, letter: DeadLetter) -> None: ...


class Publisher:
    def __init__(
        self,
        channel: AbstractChannel,
        events: AbstractExchange,
        dead_letter: AbstractExchange | None,
        *,
        timeout: float,
    ) -> None:
        self._channel = channel  # the confirming channel the exchanges were declared on
        self._events = events
        self._dead_letter = dead_letter
        self._timeout = timeout

    @classmethod
    def on(cls, broker: Broker, *, timeout: float) -> Publisher:
        topology = broker.topology
        return cls(broker.publish_channel, topology.events, topology.dead_letter, timeout=timeout)

    async def publish_events(self, events: Sequence[OutboundEvent]) -> None:
        """Publish all at once and wait for every confirm (pipelined, not one round trip each).

        Straight on the aiormq channel underneath aio-pika's, which spends a quarter less CPU per
        event. Returns and nacks still raise: `mandatory`, on a channel opened with on_return_raises.
        """
        channel = await self._channel.get_underlay_channel()
        now = datetime.now(UTC)
        send = self._traced if tracing.enabled else self._send
        await asyncio.gather(*(send(channel, event, now) for event in events))

    def _send(self, channel: aiormq.abc.AbstractChannel, event: OutboundEvent, now: datetime) -> _Confirm:
        return channel.basic_publish(
            event.record.body.encode(),
            exchange=self._events.name,
            routing_key=event.record.routing_key,
            properties=event_properties(event, now),
            mandatory=True,
            timeout=self._timeout,
        )

    async def _traced(self, channel: aiormq.abc.AbstractChannel, event: OutboundEvent, now: datetime) -> None:
        # A span per event, not per batch: each has its own parent (the message that made it), and its
        # context replaces the event's traceparent so that subscribers continue from the publish.
        # Manual rather than an instrumentation package's: the aio-pika one wraps aio-pika's exchange,
        # which this path bypasses for aiormq's channel.
        span = tracing.producer_span(
            event.traceparent,
            exchange=self._events.name,
            routing_key=event.record.routing_key,
            message_id=event.record.event_id,
        )
        try:
            await self._send(channel, replace(event, traceparent=tracing.traceparent_of(span)), now)
        except BaseException as exc:
            tracing.end(span, exc)
            raise
        tracing.end(span)

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Publish the letter with its original headers made safe and small enough; should the client
        still fail to encode them, with the verdict alone: an encoding error is never raised, since no
        retry could cure it and the pipeline would nack the whole batch again and again."""
        if self._dead_letter is None:
            raise RuntimeError("this publisher was built without a dead-letter exchange")
        channel = await self._channel.get_underlay_channel()
        frame_max = channel.connection.connection_tune.frame_max
        now = datetime.now(UTC)
        routing_key = _short_string(redact(letter.routing_key), cut=True) or ""
        message = dead_letter_message(letter, now, frame_max=frame_max)
        try:
            await self._dead_letter.publish(
                message, routing_key=routing_key, mandatory=True, timeout=self._timeout
            )
        except _ENCODING_ERRORS as exc:
            log.warning(
                "dead letter %s could not be encoded (%s): publishing it without its original headers",
                letter.message_id,
                error_name(exc),
            )
            await self._dead_letter.publish(
                _verdict_only(letter, now), routing_key=routing_key, mandatory=True, timeout=self._timeout
            )


def event_properties(event: OutboundEvent, now: datetime) -> Basic.Properties:
    """The AMQP properties of an event: the pipeline's publish and `events replay` send the same."""
    # Bounded by construction, so never measured on this hot path: the provider is one of PROVIDERS, the
    # kind is carried only up to MAX_KIND_CHARS, the traceparent only when valid (55 characters), and
    # the event id (a UUID) and routing key (job.completed, job.failed) are our own.
    headers: dict[str, FieldValue] = {"provider": event.provider}
    if len(event.kind) <= MAX_KIND_CHARS:
        headers["kind"] = event.kind
    if traceparent := valid_traceparent(event.traceparent):
        headers[TRACEPARENT] = traceparent
    return Basic.Properties(
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.record.event_id,
        message_type=event.record.routing_key,
        headers=headers,
        timestamp=now,
    )


def dead_letter_message(letter: DeadLetter, now: datetime, *, frame_max: int = 131072) -> aio_pika.Message:
    """The dead letter as published: the original headers made safe at every depth (secrets masked,
    values AMQP cannot encode converted or dropped), the largest dropped while the table is over budget,
    the verdict added, and what was changed named. Its properties are encoded here, with pamqp, before
    anything is sent; the verdict alone stands in if they still do not encode or fit."""
    budget = min(MAX_HEADER_TABLE_BYTES, frame_max // 2) if frame_max > 0 else MAX_HEADER_TABLE_BYTES
    cleaner = _Cleaner()
    verdict = _verdict(letter, now)
    ours = {*_VERDICT_NAMES, DROPPED_HEADERS, CONVERTED_HEADERS}  # a replayed letter's old verdict too
    kept = cleaner.table({k: v for k, v in letter.headers.items() if k not in ours}, "", 0)
    for name in ours:  # a name that became one of ours when redacted or cut: ours are set below
        kept.pop(name, None)
    sizes: dict[str, int] = {}
    for key, value in list(kept.items()):
        try:  # pamqp's own encoder: what it cannot encode is not sent
            sizes[key] = len(encode.short_string(key)) + len(encode.encode_table_value(value))
        except _ENCODING_ERRORS:
            del kept[key]
            cleaner.dropped.append(key)
    total = len(encode.field_table(verdict)) + sum(sizes.values())
    if total + len(encode.field_table(cleaner.notes())) > budget:
        reserve = 2 * (_MAX_NAMES_BYTES + 2 * len(CONVERTED_HEADERS) + 64)
        for key in sorted(kept, key=sizes.__getitem__, reverse=True):
            if total + reserve <= budget:
                break
            total -= sizes[key]
            del kept[key]
            cleaner.dropped.append(key)
    message = _message(letter, kept | verdict | cleaner.notes(), now)
    try:
        fits = len(message.properties.marshal()) <= budget + _OTHER_PROPERTIES_BYTES
    except _ENCODING_ERRORS:
        fits = False
    return message if fits else _verdict_only(letter, now)


def _verdict(letter: DeadLetter, now: datetime) -> FieldTable:
    rejection = letter.rejection
    verdict: FieldTable = {
        REASON: _text(rejection.reason),
        ERROR: redact(_text(rejection.message[:_MAX_ERROR_CHARS])),
        ORIGINAL_EXCHANGE: redact(_text(letter.exchange)),
        # Redacted like every other header; a replay still reaches the inbound queue, which is bound to #.
        ORIGINAL_ROUTING_KEY: redact(_text(letter.routing_key)),
        DEAD_LETTERED_AT: now.isoformat(timespec="seconds"),
        # Counted from x-delivery-count, which a producer can set to anything.
        DELIVERIES: letter.deliveries if letter.deliveries in _INT64 else str(letter.deliveries),
    }
    if rejection.provider:
        verdict[DEAD_LETTER_PROVIDER] = _text(rejection.provider)
    return verdict


def _verdict_only(letter: DeadLetter, now: datetime) -> aio_pika.Message:
    """The last resort: the verdict, and the names of all the original headers, none of them carried."""
    cleaner = _Cleaner()
    cleaner.dropped.extend(_cut_path(redact(_text(str(key)))) for key in letter.headers)
    return _message(letter, _verdict(letter, now) | cleaner.notes(), now)


def _message(letter: DeadLetter, headers: FieldTable, now: datetime) -> aio_pika.Message:
    return aio_pika.Message(
        letter.body,
        content_type=_short_string(letter.content_type),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=_short_string(letter.message_id),
        headers=headers,
        timestamp=now,
    )


@dataclass(slots=True)
class _Cleaner:
    """Makes header tables safe to publish, noting the path of every entry it converts or drops."""

    converted: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def notes(self) -> FieldTable:
        notes: FieldTable = {}
        if self.dropped:
            notes[DROPPED_HEADERS] = _names(self.dropped)
        if self.converted:
            notes[CONVERTED_HEADERS] = _names(self.converted)
        return notes

    def table(self, table: Mapping[object, object], path: str, depth: int) -> FieldTable:
        safe: FieldTable = {}
        for raw_key, value in table.items():
            key = self._key(raw_key, path)
            child = f"{path}.{key}" if path else key
            if key in safe:  # two names that became one when cut to 128 bytes
                self.dropped.append(_cut_path(child))
            elif is_secret_header(key):
                safe[key] = MASK
            else:
                try:
                    safe[key] = self.value(value, child, depth + 1)
                except _Unencodable:
                    self.dropped.append(_cut_path(child))
        return safe

    def value(self, value: object, path: str, depth: int) -> FieldValue:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value if value in _INT64 else self._converted(path, str(value))
        if isinstance(value, float):
            try:
                struct.pack(">f", value)  # pamqp sends every float as 32 bits
            except OverflowError:
                return self._converted(path, repr(value))
            return value
        if isinstance(value, str):
            return self._string(value, path)
        if isinstance(value, bytes | bytearray | memoryview):
            self.converted.append(_cut_path(path))
            return _bytes_text(bytes(value))
        if isinstance(value, Decimal | datetime):
            try:
                encode.encode_table_value(value)
            except _ENCODING_ERRORS:  # NaN, a scale or mantissa out of range, a time before 1970
                return self._converted(path, str(value))
            return value
        if isinstance(value, time.struct_time):  # encodable, but not a type aio-pika's headers declare
            return self._converted(path, time.strftime("%Y-%m-%dT%H:%M:%SZ", value))
        if isinstance(value, Mapping | list | tuple):
            if depth > _MAX_DEPTH:
                raise _Unencodable
            if isinstance(value, Mapping):
                return self.table(value, path, depth)
            items: list[FieldValue] = []
            for index, item in enumerate(value):
                try:
                    items.append(self.value(item, f"{path}[{index}]", depth + 1))
                except _Unencodable:
                    self.dropped.append(_cut_path(f"{path}[{index}]"))
            return items
        raise _Unencodable

    def _key(self, raw_key: object, path: str) -> str:
        given = raw_key.decode("utf-8", "backslashreplace") if isinstance(raw_key, bytes) else str(raw_key)
        escaped = _text(given)
        key = redact(escaped)
        encoded = key.encode()
        if len(encoded) > 128:  # AMQP's limit on a field name; pamqp would cut it, silently
            key = encoded[:128].decode("utf-8", "ignore")
        if escaped is not given or len(encoded) > 128:
            self.converted.append(_cut_path(f"{path}.{key}" if path else key))
        return key

    def _string(self, value: str, path: str) -> str:
        text = _text(value)
        if text is not value:
            self.converted.append(_cut_path(path))
        return redact(text)

    def _converted(self, path: str, text: str) -> str:
        self.converted.append(_cut_path(path))
        return text


class _Unencodable(Exception):
    """A header value of a type AMQP has no encoding for, or nested too deep: dropped."""


def _text(value: str) -> str:
    """The text itself if it is valid UTF-8 (no lone surrogates), else an escaped copy."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def _bytes_text(data: bytes) -> str:
    """Bytes as UTF-8 text if they are, else as base64 that says it was bytes (or as escaped text if a
    secret shows in them: then the secret is masked, and the bytes not kept whole)."""
    try:
        return redact(data.decode())
    except UnicodeDecodeError:
        pass
    escaped = data.decode("utf-8", "backslashreplace")
    if redact(escaped) != escaped:
        return f"bytes:{redact(escaped)}"
    return f"base64:{base64.b64encode(data).decode()}"


def _names(paths: Sequence[str]) -> list[FieldValue]:
    """The paths, as many as fit in _MAX_NAMES_BYTES, then how many more there were."""
    names: list[FieldValue] = []
    size = 0
    for index, path in enumerate(paths):
        size += len(path.encode()) + 5  # each is a long string: a type octet and a 4-byte length
        if size > _MAX_NAMES_BYTES:
            names.append(f"... and {len(paths) - index} more")
            break
        names.append(path)
    return names


def _cut_path(path: str) -> str:
    return path if len(path) <= _MAX_PATH_CHARS else path[: _MAX_PATH_CHARS - 3] + "..."


def _short_string(value: str | None, *, cut: bool = False) -> str | None:
    """A value for an AMQP short string (at most 255 bytes of UTF-8): cut to fit, or None if it does not."""
    if value is None:
        return None
    encoded = _text(value).encode()
    if len(encoded) <= 255:
        return encoded.decode()
    return encoded[:255].decode("utf-8", "ignore") if cut else None


async def publish_inbound(producer: Producer, message: Inbound, *, timeout: float) -> None:
    """Publish one inbound message (persistent, mandatory) and wait for the broker's confirm."""
    await producer.inbound_exchange.publish(
        aio_pika.Message(
            message.body,
            headers={k: v for k, v in message.headers.items() if isinstance(v, str | int)},
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=datetime.now(UTC),
        ),
        routing_key=message.routing_key,
        mandatory=True,
        timeout=timeout,
    )
