"""Property tests: whatever the bytes, normalize() gives updates or a Rejection, in bounded memory."""

from __future__ import annotations

import json
import tracemalloc
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
