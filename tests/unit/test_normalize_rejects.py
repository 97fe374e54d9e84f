"""Input the core must refuse: each ends as a Rejection with a clear reason, never an exception."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from consumer.core.contract import Inbound
from consumer.core.errors import Reason, Rejection
from consumer.core.normalize import Limits
from consumer.vendors import normalize
from tests.conftest import fixture_bytes

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Response><JobsDetail><JobId>&lol3;</JobId></JobsDetail></Response>"""
XXE = (
    b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response>&x;</Response>"""
)


DEFAULT_LIMITS = Limits()


def reason_of(body: bytes, routing_key: str = "", limits: Limits = DEFAULT_LIMITS, **headers: str) -> str:
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, routing_key, headers), limits=limits)
    assert err.value.message
    return err.value.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "malformed"),
        (b"   ", "malformed"),
        (b"hello", "malformed"),
        (b"{not json", "malformed"),
        (b"<Response><a></b></Response>", "malformed"),
        (b"[]", "unknown-format"),
        (b"{}", "unknown-format"),
        (b'{"foo": 1}', "unknown-format"),
        (b"<Whatever/>", "unknown-format"),
        (b"\xff\xfe\x00garbage", "undecodable"),
        (BILLION_LAUGHS, "unsafe-xml"),
        (XXE, "unsafe-xml"),
        (XXE.decode().encode("utf-16"), "unsafe-xml"),  # the DTD is looked for in the decoded text
        (XXE.decode().replace(' version="1.0"', "").encode("utf-16-be"), "unsafe-xml"),  # unmarked
        (b"<Response>\xed\xa0\x80</Response>", "undecodable"),  # a surrogate is not text, nor unsafe
    ],
)
def test_garbage(body: bytes, reason: str) -> None:
    assert reason_of(body) == reason


def test_too_large_is_refused_before_parsing() -> None:
    assert reason_of(b"{" + b" " * 100 + b"}", limits=Limits(max_body_bytes=50)) == "too-large"


def test_deep_nesting() -> None:
    assert reason_of(b"[" * 200 + b"]" * 200, limits=Limits(max_depth=64)) == "too-deep"
    assert reason_of(b"<a>" * 100 + b"</a>" * 100, limits=Limits(max_depth=64)) == "too-deep"


def test_json_nested_in_strings_is_as_deep_as_it_parses() -> None:
    user_data = json.dumps(json.dumps(_nested(65)))[1:-1]
    body = b'{"JobId":"j","State":"Finished","UserData":"' + user_data.encode() + b'"}'
    assert reason_of(body, "callback.aliyun-ice") == "too-deep"


def _nested(depth: int) -> object:
    node: object = 1
    for _ in range(depth):
        node = [node]
    return node


def test_json_nesting_beyond_the_parser_limit_is_malformed_not_a_crash() -> None:
    assert reason_of(b"[" * 5000 + b"]" * 5000) in ("malformed", "too-deep")


def test_unknown_provider_header() -> None:
    with pytest.raises(Rejection) as err:
        normalize(Inbound(b"{}", "", {"x-provider": "acme"}))
    assert err.value.reason == "unknown-provider"


def test_disabled_provider_is_unsupported() -> None:
    body = fixture_bytes("seeds/tingwu_callback_completed.json")
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, "callback.tingwu"), enabled=["tencent-ci"])
    assert (err.value.reason, err.value.provider) == ("unsupported-provider", "tingwu")


def test_header_beats_routing_key() -> None:
    body = fixture_bytes("seeds/tingwu_callback_completed.json")
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, "callback.tingwu", {"x-provider": "tencent-ci"}))
    assert err.value.provider == "tencent-ci"


def test_gbk_body_declared_in_content_type() -> None:
    body = '{"Code":"0","Data":{"TaskId":"t","TaskStatus":"FAILED","ErrorMessage":"音频无效"}}'.encode("gbk")
    result = normalize(Inbound(body, "callback.tingwu", {}, "application/json; charset=GBK"))
    assert result.updates[0].error is not None
    assert result.updates[0].error.message == "音频无效"


def test_gbk_body_without_declaration_is_undecodable() -> None:
    body = '{"Code":"0","Data":{"TaskId":"t","TaskStatus":"FAILED","ErrorMessage":"音频无效"}}'.encode("gbk")
    assert reason_of(body, "callback.tingwu") == "undecodable"


def test_gbk_xml_declaration() -> None:
    body = '<?xml version="1.0" encoding="GBK"?><Response><Error>无效</Error></Response>'.encode("gbk")
    assert reason_of(body) == "unknown-format"


def test_utf8_bom_is_accepted() -> None:
    body = b"\xef\xbb\xbf" + fixture_bytes("seeds/tingwu_callback_completed.json")
    assert normalize(Inbound(body, "callback.tingwu")).updates[0].task_id


def test_wrong_content_type_does_not_matter() -> None:
    body = fixture_bytes("seeds/tingwu_callback_completed.json")
    assert normalize(Inbound(body, "callback.tingwu", {}, "application/xml")).updates


def test_rejection_messages_carry_no_signatures() -> None:
    body = b'{"Code":"E","Message":"bad url http://h/x?OSSAccessKeyId=LTAI123&Signature=abc","RequestId":"r"}'
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, "callback.tingwu"))
    assert "LTAI123" not in err.value.message
    assert "abc" not in err.value.message


@pytest.mark.parametrize(
    ("body", "provider"),
    [
        (b'{"Code":"0","Data":{"TaskId":"t","TaskStatus":"%s"}}', "tingwu"),
        (
            b"<Response><EventName>TaskFinish</EventName><JobsDetail><JobId>j</JobId><Tag>Tts</Tag>"
            b"<State>%s</State></JobsDetail></Response>",
            "tencent-ci",
        ),
        (b'{"JobId":"j","State":"%s"}', "aliyun-ice"),
        (b'{"job_id":"j","status":"%s"}', "huawei-metastudio"),
    ],
)
def test_unknown_state_is_one_policy_for_every_vendor(body: bytes, provider: str) -> None:
    """A state the parser does not know is never guessed: dead-lettered, to be replayed after an upgrade."""
    assert "unknown-state" in get_args(Reason)
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body % (b"Z" * 100), ""))
    assert (err.value.reason, err.value.provider) == ("unknown-state", provider)
    assert f"'{'Z' * 40}'" in err.value.message  # the state, cut to 40 characters
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body % b"", ""))
    assert (err.value.reason, err.value.provider) == ("invalid-payload", provider)
