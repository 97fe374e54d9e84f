"""Property tests: whatever the bytes, normalize() gives updates or a Rejection, in bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.core.contract import Inbound
from consumer.core.errors import Rejection
from consumer.core.normalize import Limits, Normalized
from consumer.vendors import normalize
from tests.conftest import FIXTURES

ALL = sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".json", ".xml"))
JSON_FIXTURES = [
    p for p in ALL if p.suffix == ".json" and p.name != "aliyun_ims_event_fileuploadcomplete_success_1.json"
]
ROUTING_KEYS = st.sampled_from(
    ["", "callback.tingwu", "mq.tingwu", "callback.tencent-ci", "poll.huawei-metastudio", "x"]
)
HEADERS = st.dictionaries(
    st.sampled_from(
        ["x-provider", "x-task-id", "cloudEvents:specversion", "cloudEvents_source", "content-type"]
    ),
    st.one_of(
        st.text(max_size=20),
        st.sampled_from(["tingwu", "tencent-ci", "aliyun-ice", "huawei-metastudio", "1.0"]),
    ),
    max_size=3,
)
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome_typed(body: bytes, routing_key: str, content_type: str | None) -> Normalized | Rejection:
    try:
        return normalize(Inbound(body, routing_key, {}, content_type), limits=Limits(max_body_bytes=200_000))
    except Rejection as exc:
        return exc


def outcome(
    body: bytes, routing_key: str = "", headers: dict[str, Any] | None = None
) -> Normalized | Rejection:
    try:
        return normalize(Inbound(body, routing_key, headers or {}), limits=Limits(max_body_bytes=200_000))
    except Rejection as exc:
        return exc


@PROPERTY
@given(body=st.binary(max_size=2048), routing_key=ROUTING_KEYS, headers=HEADERS)
def test_arbitrary_bytes(body: bytes, routing_key: str, headers: dict[str, Any]) -> None:
    result = outcome(body, routing_key, headers)
    assert isinstance(result, Normalized) or result.message


@PROPERTY
@given(data=st.data(), path=st.sampled_from(ALL))
def test_mutated_vendor_bytes(data: st.DataObject, path: Any) -> None:
    body = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, max(len(body) - 1, 0)))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip" and body:
            body[position] ^= data.draw(st.integers(1, 255))
        elif action == "delete" and body:
            del body[position : position + data.draw(st.integers(1, 16))]
        elif action == "insert":
            body[position:position] = data.draw(
                st.sampled_from([b"<", b">", b"{", b"}", b'"', b"&amp;", b"\xff", b"&x;"])
            )
        else:
            del body[position:]
    outcome(bytes(body), data.draw(ROUTING_KEYS))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@PROPERTY
@given(data=st.data(), path=st.sampled_from(JSON_FIXTURES))
def test_wrong_types_in_vendor_json(data: st.DataObject, path: Any) -> None:
    document = json.loads(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(_paths(document)[1:] or [()]))
        if not where:
            break
        parent = document
        for step in where[:-1]:
            parent = parent[step]
        parent[where[-1]] = data.draw(JSON_VALUES)
    result = outcome(json.dumps(document).encode(), data.draw(ROUTING_KEYS), {"x-task-id": "hinted"})
    if isinstance(result, Normalized):
        assert all(u.task_id for u in result.updates)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"<a>" * 60_000,
        b'{"a":"' + b"x" * 190_000 + b'"}',
        b"<Response><JobsDetail>" + b"<JobId>j</JobId>" * 12_000 + b"</JobsDetail></Response>",
    ],
    ids=["deep-json", "deep-xml", "long-string", "many-elements"],
)
def test_memory_stays_bounded(body: bytes) -> None:
    tracemalloc.start()
    try:
        outcome(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 60 * len(body) + 5_000_000, f"peak {peak} bytes for a {len(body)}-byte body"


# --- The classes of the stress run's findings: whatever the input, a Rejection or something storable ------

HOSTILE_KEYS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["$set", "$", "a\u0000b", "\u0000", "k" * 257, "a.b", "é" * 10]),
)
HOSTILE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63) - 5, max_value=2**64 - 1),
    st.text(max_size=12),
    st.sampled_from(["x" * 20_000, "é" * 9_000, "\u0000"]),
)
HOSTILE_JSON = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE_KEYS, inner, max_size=12),
    max_leaves=24,
)


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def _hostile_bodies(value: Any, depth: int) -> list[tuple[bytes, str]]:
    deep = _nested(depth, value)
    user_data = json.dumps(deep)
    tencent_job = {"JobId": "j", "Tag": "Tts", "State": "Success", "Operation": {"FooResult": deep}}
    return [
        (
            json.dumps({"JobId": "j", "State": "Finished", "UserData": user_data}).encode(),
            "callback.aliyun-ice",
        ),
        (
            json.dumps({"JobId": "j", "State": "Finished", "JobResult": {"AiResult": user_data}}).encode(),
            "callback.aliyun-ice",
        ),
        (
            json.dumps({"EventName": "TaskFinish", "JobsDetail": [tencent_job]}).encode(),
            "callback.tencent-ci",
        ),
        (
            json.dumps(
                {"Code": "0", "Data": {"TaskId": "t", "TaskStatus": "COMPLETED", "Result": value}}
            ).encode(),
            "callback.tingwu",
        ),
    ]


@PROPERTY
@given(value=HOSTILE_JSON, depth=st.integers(0, 70))
def test_whatever_json_vendors_nest_the_core_refuses_it_or_the_database_can_store_it(
    value: Any, depth: int
) -> None:
    """NUL and $ keys, integers beyond 64 bits, long strings and keys, deep nesting, in the body or in its
    strings: a Rejection, or a job BSON encodes within the limits."""
    import bson

    from consumer.core.state import apply
    from consumer.store.mongo import job_document

    for body, routing_key in _hostile_bodies(value, depth):
        result = outcome(body, routing_key)
        if isinstance(result, Rejection):
            assert result.reason in ("invalid-payload", "too-deep", "too-large"), result
            continue
        for update in result.updates:
            job = apply(None, update, now=datetime(2026, 1, 1, tzinfo=UTC)).job
            assert len(bson.encode(job_document("k", job))) < 16 << 20
            assert len(job.results) <= Limits().max_results


CHARSETS = st.sampled_from(
    [
        *("utf-8", "utf-16", "utf-16-le", "utf-32", "gbk", "latin-1", "utf-7", "punycode", "idna", "zlib"),
        *("rot13", "base64", "unicode_escape", "x-unknown", "ascii", "cp1252", "shift_jis", "big5", ""),
    ]
)


@PROPERTY
@given(body=st.binary(max_size=512), charset=CHARSETS, routing_key=ROUTING_KEYS)
def test_any_bytes_in_any_charset(body: bytes, charset: str, routing_key: str) -> None:
    result = outcome_typed(body, routing_key, f"text/xml; charset={charset}")
    assert isinstance(result, Normalized) or result.message


@PROPERTY
@given(
    text=st.text(max_size=200),
    encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]),
    label=st.booleans(),
)
def test_a_dtd_is_unsafe_in_any_utf_whatever_surrounds_it(text: str, encoding: str, label: bool) -> None:
    """Marked, labelled or neither: the DTD is found in what the parser would read."""
    xml = f'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/">{text}<r/>'
    body = xml.encode(encoding, "surrogatepass")
    result = outcome_typed(body, "callback.tencent-ci", f"text/xml; charset={encoding}" if label else None)
    assert isinstance(result, Rejection)
    assert result.reason in ("unsafe-xml", "undecodable"), result


@PROPERTY
@given(
    number=st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    vendor=st.sampled_from(["tingwu", "aliyun-ice", "tencent-ci", "huawei-metastudio"]),
)
def test_a_numeric_task_id_keeps_its_digits_or_is_refused(number: float, vendor: str) -> None:
    forms = {
        "tingwu": b'{"Code":"0","Data":{"TaskId":%s,"TaskStatus":"COMPLETED"}}',
        "aliyun-ice": b'{"JobId":%s,"State":"Finished"}',
        "tencent-ci": b'{"JobsDetail":{"JobId":%s,"Tag":"Tts","State":"Success"}}',
        "huawei-metastudio": b'{"job_id":%s,"status":"FINISHED"}',
    }
    text = json.dumps(number).encode()
    result = outcome(forms[vendor] % text, f"callback.{vendor}")
    if isinstance(number, int) and -(2**63) <= number < 2**64:
        assert isinstance(result, Normalized), result
        assert [u.task_id for u in result.updates] == [str(number)]
    else:
        assert isinstance(result, Rejection)
        assert result.reason in ("invalid-payload", "missing-task-id", "malformed"), result
