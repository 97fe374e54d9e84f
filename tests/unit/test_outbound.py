"""Outbound messages always encode, always fit a frame and never carry a secret: dead letters and events."""

from __future__ import annotations

import base64
import re
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractExchange
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import decode, encode
from pamqp.commands import Basic

from consumer.amqp.publisher import (
    MAX_HEADER_TABLE_BYTES,
    DeadLetter,
    OutboundEvent,
    Publisher,
    dead_letter_message,
)
from consumer.core.contract import CONVERTED_HEADERS, DROPPED_HEADERS, valid_traceparent
from consumer.core.errors import Rejection
from schemas.job import EventRecord

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
FRAME_MAX = 131_072  # RabbitMQ's default
# A content-header frame: 7 bytes of frame header, class id, weight and body size (12), then the
# properties, then the frame-end octet; it must fit in frame_max.
FRAME_OVERHEAD = 7 + 12 + 1
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SECRET = "s3cr3tMARKER"


def letter(
    headers: Mapping[str, object], routing_key: str = "callback.tingwu", body: bytes = b"not json"
) -> DeadLetter:
    return DeadLetter(
        body=body,
        routing_key=routing_key,
        exchange="speechjobs.inbound",
        headers=headers,
        content_type="application/json",
        message_id="m-1",
        rejection=Rejection("malformed", "body is neither JSON nor XML"),
        deliveries=1,
    )


def on_the_wire(message: aio_pika.Message) -> dict[str, Any]:
    """Encode the properties with pamqp as the client will, check the frame fits, decode the headers."""
    properties = message.properties.marshal()
    assert len(properties) + FRAME_OVERHEAD <= FRAME_MAX
    table = encode.field_table(message.headers)
    assert len(table) <= MAX_HEADER_TABLE_BYTES
    _, decoded = decode.field_table(table)
    return decoded


def raw_long_string(data: bytes) -> bytes:
    return b"S" + struct.pack(">I", len(data)) + data


def raw_table(entries: dict[str, bytes]) -> bytes:
    """A field table as the broker delivers it, with values encoded by hand (pamqp refuses some)."""
    payload = b"".join(bytes([len(k)]) + k.encode() + v for k, v in entries.items())
    return struct.pack(">I", len(payload)) + payload


# Finding 1: a header the client cannot re-encode, and byte arrays.


def test_non_utf8_bytes_in_a_nested_table_as_pamqp_delivers_them() -> None:
    nested = raw_table({"raw": raw_long_string(b"\xff\xfe\xfa")})
    _, headers = decode.field_table(raw_table({"x-nested": b"F" + nested}))
    assert headers == {"x-nested": {"raw": b"\xff\xfe\xfa"}}  # what the consumer receives
    with pytest.raises(TypeError):  # what sank the batch: the client cannot send it back
        encode.field_table(headers)
    sent = on_the_wire(dead_letter_message(letter(headers), NOW))
    assert sent["x-nested"] == {"raw": "base64:" + base64.b64encode(b"\xff\xfe\xfa").decode()}
    assert sent[CONVERTED_HEADERS] == ["x-nested.raw"]


def test_bytes_at_the_top_and_in_arrays_and_byte_arrays_are_kept_as_text_and_named() -> None:
    headers = {
        "x-bytes": b"\x80abc",
        "x-list": [b"\xc3\x28", b"ok"],
        "x-array": bytearray(b"byte array"),
    }
    sent = on_the_wire(dead_letter_message(letter(headers), NOW))
    assert sent["x-bytes"] == "base64:gGFiYw=="
    assert sent["x-list"] == ["base64:wyg=", "ok"]
    assert sent["x-array"] == "byte array"  # no longer dropped
    assert sent[CONVERTED_HEADERS] == ["x-bytes", "x-list[0]", "x-list[1]", "x-array"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2**70, "1180591620717411303424"),  # beyond AMQP's 64-bit integers
        (1e300, "1e+300"),  # pamqp sends floats as 32 bits: OverflowError
        (Decimal("NaN"), "NaN"),
        (Decimal("1e-300"), "1E-300"),  # scale out of AMQP's range
        (datetime(1900, 1, 1, tzinfo=UTC), "1900-01-01 00:00:00+00:00"),  # before the epoch: struct.error
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),  # not UTF-8: UnicodeEncodeError
    ],
)
def test_values_pamqp_cannot_encode_are_converted_and_named(value: object, expected: str) -> None:
    sent = on_the_wire(dead_letter_message(letter({"x-odd": {"v": value}}), NOW))
    assert sent["x-odd"] == {"v": expected}
    assert sent[CONVERTED_HEADERS] == ["x-odd.v"]


def test_types_without_an_encoding_and_tables_nested_too_deep_are_dropped_and_named() -> None:
    deep: object = "leaf"
    for _ in range(40):
        deep = {"n": deep}
    headers = {"x-object": object(), "x-set": {1, 2}, "x-deep": deep, "x-kept": "yes", "x-in": [1, object()]}
    sent = on_the_wire(dead_letter_message(letter(headers), NOW))
    assert sent["x-kept"] == "yes"
    assert sent["x-in"] == [1]
    assert "x-object" not in sent
    assert "x-set" not in sent
    dropped = sent[DROPPED_HEADERS]
    assert dropped[:2] == ["x-object", "x-set"]
    assert dropped[2].startswith("x-deep.n.n.")
    assert dropped[3] == "x-in[1]"


def test_a_field_name_over_128_bytes_is_cut_by_us_not_silently_by_pamqp() -> None:
    sent = on_the_wire(dead_letter_message(letter({"k" * 200: 1}), NOW))
    assert sent["k" * 128] == 1
    assert sent[CONVERTED_HEADERS] == ["k" * 128]


def test_a_field_name_that_is_not_utf8_or_holds_a_secret_is_escaped_and_redacted() -> None:
    sent = on_the_wire(dead_letter_message(letter({"x-\ud800": 1, f"u?Signature={SECRET}": 2}), NOW))
    assert sent["x-\\ud800"] == 1
    assert sent["u?Signature=***"] == "***"  # a name like a secret: the value is masked too
    assert sent[CONVERTED_HEADERS] == ["x-\\ud800"]


def test_verdict_and_properties_survive_a_hostile_delivery_count_and_ids() -> None:
    hostile = DeadLetter(
        body=b"x",
        routing_key="r" * 300,
        exchange="ex",
        headers={},
        content_type="c" * 300,
        message_id="é" * 200,  # 400 bytes: over a short string's 255
        rejection=Rejection("malformed", "bad"),
        deliveries=2**63,
    )
    message = dead_letter_message(hostile, NOW)
    sent = on_the_wire(message)
    assert sent["x-speechjobs-deliveries"] == str(2**63)
    assert message.message_id is None
    assert message.content_type is None


# Finding 2: a message near the broker's frame limit.


def test_headers_of_131000_bytes_are_dropped_largest_first_and_named_the_body_kept() -> None:
    body = b"x" * 1_000_000
    message = dead_letter_message(letter({"x-big": "h" * 131_000, "x-small": "kept"}, body=body), NOW)
    sent = on_the_wire(message)
    assert sent[DROPPED_HEADERS] == ["x-big"]
    assert sent["x-small"] == "kept"
    assert sent["x-speechjobs-reason"] == "malformed"
    assert message.body == body


def test_only_as_many_headers_are_dropped_as_needed() -> None:
    headers = {"a": "a" * 40_000, "b": "b" * 40_001, "c": "c" * 100}
    sent = on_the_wire(dead_letter_message(letter(headers), NOW))
    assert sent[DROPPED_HEADERS] == ["b"]
    assert set(sent) >= {"a", "c"}


def test_many_small_headers_over_budget_are_dropped_and_the_names_are_bounded() -> None:
    headers = {f"x-{i:05}": "v" * 20 for i in range(5_000)}  # 150 KB in 5,000 headers
    sent = on_the_wire(dead_letter_message(letter(headers), NOW))
    dropped = sent[DROPPED_HEADERS]
    assert re.fullmatch(r"\.\.\. and \d+ more", dropped[-1])
    assert len(encode.field_table({DROPPED_HEADERS: dropped})) < 4096


def test_a_lower_negotiated_frame_max_lowers_the_budget() -> None:
    message = dead_letter_message(letter({"x-mid": "m" * 20_000}), NOW, frame_max=16_384)
    assert len(message.properties.marshal()) < 16_384 - FRAME_OVERHEAD
    assert message.headers[DROPPED_HEADERS] == ["x-mid"]


# Finding 3: secrets echoed.


def test_secret_headers_at_any_depth_and_the_routing_key_are_redacted() -> None:
    headers = {
        "x-oss-signature": SECRET,
        "x-api-key": SECRET,
        "X-ICE-SIGNATURE": SECRET,
        "x-nested": {"deeper": [{"authorization": f"Bearer {SECRET}"}, f"http://u/?token={SECRET}"]},
        "x-bytes": f"u?Signature={SECRET}".encode(),
        "x-latin1": b"\xff" + f" password={SECRET}".encode(),
    }
    sent = on_the_wire(dead_letter_message(letter(headers, f"callback.tingwu?Signature={SECRET}"), NOW))
    assert SECRET not in repr(sent)
    assert sent["x-oss-signature"] == sent["x-api-key"] == sent["X-ICE-SIGNATURE"] == "***"
    assert sent["x-nested"] == {"deeper": [{"authorization": "***"}, "http://u/?token=***"]}
    assert sent["x-original-routing-key"] == "callback.tingwu?Signature=***"
    assert sent["x-latin1"].startswith("bytes:")


# The last resort and the publisher itself.


@dataclass
class FakeExchange:
    """Records publishes; raises the queued errors first."""

    name: str = "dead-letter"
    failures: list[BaseException] = field(default_factory=list)
    sent: list[tuple[aio_pika.Message, str]] = field(default_factory=list)

    async def publish(
        self, message: aio_pika.Message, routing_key: str, *, mandatory: bool, timeout: float
    ) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((message, routing_key))


@dataclass
class FakeUnderlay:
    """The aiormq channel: its connection's frame_max, and basic_publish recording properties."""

    frame_max: int = FRAME_MAX
    published: list[tuple[bytes, str, Basic.Properties]] = field(default_factory=list)

    @property
    def connection(self) -> Any:
        return SimpleNamespace(connection_tune=SimpleNamespace(frame_max=self.frame_max))

    async def basic_publish(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        properties: Basic.Properties,
        mandatory: bool,
        timeout: float,
    ) -> None:
        properties.marshal()  # what aiormq does before writing the frame
        self.published.append((body, routing_key, properties))


@dataclass
class FakeChannel:
    underlay: FakeUnderlay = field(default_factory=FakeUnderlay)

    async def get_underlay_channel(self) -> FakeUnderlay:
        return self.underlay


def publisher(exchange: FakeExchange, channel: FakeChannel | None = None) -> Publisher:
    return Publisher(
        cast(AbstractChannel, channel or FakeChannel()),
        cast(AbstractExchange, FakeExchange("events")),
        cast(AbstractExchange, exchange),
        timeout=5,
    )


@pytest.mark.parametrize(
    "error", [TypeError("x error: Unknown type"), ValueError("bad"), struct.error("bad"), OverflowError()]
)
async def test_an_encoding_error_never_escapes_the_verdict_is_published_alone(error: Exception) -> None:
    exchange = FakeExchange(failures=[error])
    await publisher(exchange).dead_letter(letter({"x-one": "1", "x-two": {"a": 2}}))
    ((message, _),) = exchange.sent
    sent = on_the_wire(message)
    assert sent[DROPPED_HEADERS] == ["x-one", "x-two"]
    assert "x-one" not in sent
    assert sent["x-speechjobs-reason"] == "malformed"


async def test_a_transient_error_is_raised_for_the_pipeline_to_retry() -> None:
    exchange = FakeExchange(failures=[ConnectionError("gone")])
    with pytest.raises(ConnectionError):
        await publisher(exchange).dead_letter(letter({}))
    assert exchange.sent == []


async def test_the_dead_letter_routing_key_is_redacted_and_fits_a_short_string() -> None:
    exchange = FakeExchange()
    pub = publisher(exchange)
    await pub.dead_letter(letter({}, f"callback.tingwu?Signature={SECRET}"))
    await pub.dead_letter(letter({}, "callback." + "é" * 127))  # 263 bytes once redaction is done
    (_, first), (_, second) = exchange.sent
    assert first == "callback.tingwu?Signature=***"
    assert len(second.encode()) <= 255


async def test_the_negotiated_frame_max_is_used() -> None:
    exchange = FakeExchange()
    await publisher(exchange, FakeChannel(FakeUnderlay(frame_max=16_384))).dead_letter(
        letter({"x-mid": "m" * 20_000})
    )
    ((message, _),) = exchange.sent
    assert message.headers[DROPPED_HEADERS] == ["x-mid"]


# Property: whatever the headers, the dead letter encodes and fits.

_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.datetimes(timezones=st.just(UTC)),
    st.text(max_size=3).map(lambda t: t + "\ud800"),
    st.integers(min_value=0, max_value=20_000).map(lambda n: "z" * n),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=150), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.dictionaries(st.text(max_size=150), _VALUES, max_size=12))
def test_any_headers_make_a_dead_letter_that_encodes_and_fits(headers: dict[str, object]) -> None:
    on_the_wire(dead_letter_message(letter(headers), NOW))


# Events: the traceparent.


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        (TRACEPARENT, True),
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", True),
        (TRACEPARENT.upper(), False),
        ("ff" + TRACEPARENT[2:], False),
        ("00-" + "0" * 32 + "-b7ad6b7169203331-01", False),
        ("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01", False),
        (TRACEPARENT + "-", False),
        (" " + TRACEPARENT[1:], False),
        ("0" * 130_963, False),
        ("", False),
        (None, False),
    ],
)
def test_valid_traceparent(text: str | None, valid: bool) -> None:
    assert valid_traceparent(text) == (text if valid else None)


def event(traceparent: str | None, kind: str = "transcription") -> OutboundEvent:
    record = EventRecord(
        event_id=str(uuid.uuid4()), routing_key="job.completed", body="{}", created_at=NOW, owner=""
    )
    return OutboundEvent(record, "tingwu", kind, traceparent)


async def test_an_event_carries_a_valid_traceparent_only() -> None:
    channel = FakeChannel()
    await publisher(FakeExchange(), channel).publish_events(
        [event("0" * 130_963), event(TRACEPARENT), event(None), event(TRACEPARENT, kind="k" * 10_000)]
    )
    headers = [properties.headers for _, _, properties in channel.underlay.published]
    assert headers == [
        {"provider": "tingwu", "kind": "transcription"},
        {"provider": "tingwu", "kind": "transcription", "traceparent": TRACEPARENT},
        {"provider": "tingwu", "kind": "transcription"},
        {"provider": "tingwu", "traceparent": TRACEPARENT},  # a kind made of vendor text, too long
    ]
    for _, _, properties in channel.underlay.published:
        assert len(properties.marshal()) < 1024
