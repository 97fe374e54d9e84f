"""The pure side of the dead-letter tooling: ids, reasons, origins, filters, replay headers, formatting."""

from __future__ import annotations

import hashlib
import io
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumer.cli import main
from consumer.cli.present import Progress, format_age, format_headers, format_table, letter_json, pretty_body
from consumer.ops.letters import Selection, describe, parse_since, plan, replay_headers
from tests.conftest import fixture_bytes

NOW = datetime(2025, 11, 25, 12, 0, tzinfo=UTC)

OURS: dict[str, Any] = {
    "x-provider": "tingwu",
    "x-task-id": "task-7",
    "x-custom": "kept",
    "x-delivery-count": 4,
    "x-speechjobs-reason": "unsupported-provider",
    "x-speechjobs-error": "provider tingwu is not enabled",
    "x-speechjobs-provider": "tingwu",
    "x-original-exchange": "speechjobs.inbound",
    "x-original-routing-key": "callback.tingwu",
    "x-speechjobs-dead-lettered-at": "2025-11-25T11:30:00+00:00",
    "x-speechjobs-deliveries": 1,
}

BROKER: dict[str, Any] = {
    "x-death": [
        {
            "count": 1,
            "reason": "delivery_limit",
            "queue": "speechjobs.inbound",
            "time": datetime(2025, 11, 25, 10, 0, tzinfo=UTC),
            "exchange": "speechjobs.inbound",
            "routing-keys": ["callback.tencent-ci"],
        }
    ],
    "x-first-death-exchange": "speechjobs.inbound",
    "x-first-death-queue": "speechjobs.inbound",
    "x-first-death-reason": "delivery_limit",
    "x-delivery-count": 7,
}


def ours(**changes: Any) -> dict[str, Any]:
    return {**OURS, **changes}


def test_our_dead_letter_is_described_from_its_headers() -> None:
    letter = describe(
        b"{}", OURS, routing_key="callback.tingwu", message_id="m-1", content_type="application/json"
    )
    assert letter.id == "m-1"
    assert (letter.reason, letter.error) == ("unsupported-provider", "provider tingwu is not enabled")
    assert (letter.provider, letter.task_id) == ("tingwu", "task-7")
    assert letter.target == ("speechjobs.inbound", "callback.tingwu")
    assert letter.dead_lettered_at == datetime(2025, 11, 25, 11, 30, tzinfo=UTC)
    assert (letter.size, letter.replays) == (2, 0)


def test_broker_dead_letter_reason_origin_and_provider_come_from_x_death() -> None:
    letter = describe(b"<x/>", BROKER, routing_key="callback.tencent-ci", message_id=None, content_type=None)
    assert letter.reason == "broker:delivery_limit"
    assert letter.target == ("speechjobs.inbound", "callback.tencent-ci")
    assert letter.provider == "tencent-ci"
    assert letter.dead_lettered_at == datetime(2025, 11, 25, 10, 0, tzinfo=UTC)


def test_id_without_message_id_is_a_stable_hash_of_body_and_stamp() -> None:
    first = describe(b"body", OURS, routing_key="", message_id=None, content_type=None)
    again = describe(b"body", dict(OURS), routing_key="", message_id=None, content_type=None)
    later = describe(
        b"body",
        ours(**{"x-speechjobs-dead-lettered-at": "2025-11-25T11:31:00+00:00"}),
        routing_key="",
        message_id=None,
        content_type=None,
    )
    expected = hashlib.sha256(b"body" + b"2025-11-25T11:30:00+00:00").hexdigest()[:16]
    assert first.id == again.id == expected
    assert later.id != first.id


def test_unknown_origin_and_reason() -> None:
    letter = describe(b"x", {}, routing_key="weird", message_id=None, content_type=None)
    assert (letter.reason, letter.target, letter.provider, letter.dead_lettered_at) == (
        "unknown",
        None,
        None,
        None,
    )


def test_task_id_only_from_the_contract_header() -> None:
    # Nothing writes x-speechjobs-task-id: a letter names its task the way its producer did, or not at all.
    headers = {k: v for k, v in OURS.items() if k != "x-task-id"} | {"x-speechjobs-task-id": "t-9"}
    assert describe(b"", headers, routing_key="", message_id=None, content_type=None).task_id is None
    headers["x-task-id"] = "t-8"
    assert describe(b"", headers, routing_key="", message_id=None, content_type=None).task_id == "t-8"


def test_plan_names_the_origin_or_skips() -> None:
    letter = describe(b"{}", OURS, routing_key="callback.tingwu", message_id="m-1", content_type=None)
    assert plan(letter) == "-> exchange speechjobs.inbound routing key callback.tingwu"
    assert (
        plan(describe(b"x", {}, routing_key="", message_id=None, content_type=None)) == "skip: origin unknown"
    )


def test_replay_headers_drop_the_verdict_keep_the_rest_and_count() -> None:
    headers = replay_headers(OURS)
    assert headers == {
        "x-provider": "tingwu",
        "x-task-id": "task-7",
        "x-custom": "kept",
        "x-original-exchange": "speechjobs.inbound",
        "x-original-routing-key": "callback.tingwu",
        "x-speechjobs-replays": 1,
    }
    assert replay_headers(ours(**{"x-speechjobs-replays": 2}))["x-speechjobs-replays"] == 3
    assert replay_headers(BROKER) == {"x-speechjobs-replays": 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("1d", NOW - timedelta(days=1)),
        ("45s", NOW - timedelta(seconds=45)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2025-11-24T08:00:00+08:00", datetime(2025, 11, 24, 0, 0, tzinfo=UTC)),
        ("2025-11-24T08:00:00Z", datetime(2025, 11, 24, 8, 0, tzinfo=UTC)),
        ("2025-11-24", datetime(2025, 11, 24, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "3x", "-1h"])
def test_parse_since_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_since(text, NOW)


def test_selection_matches_every_given_criterion() -> None:
    letter = describe(b"{}", OURS, routing_key="callback.tingwu", message_id="m-1", content_type=None)
    assert Selection().matches(letter)
    assert Selection(provider="tingwu", reason="unsupported-provider").matches(letter)
    assert not Selection(provider="tencent-ci").matches(letter)
    assert not Selection(reason="malformed").matches(letter)
    assert Selection(since=NOW - timedelta(hours=1)).matches(letter)
    assert not Selection(since=NOW - timedelta(minutes=10)).matches(letter)
    assert Selection(ids=frozenset({"m-1", "m-2"})).matches(letter)
    assert not Selection(ids=frozenset({"m-2"})).matches(letter)


def test_since_excludes_letters_of_unknown_age() -> None:
    letter = describe(b"x", {}, routing_key="", message_id=None, content_type=None)
    assert not Selection(since=NOW - timedelta(days=365)).matches(letter)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59, "59s"), (60, "1m"), (7199, "1h"), (86400 * 3, "3d"), (-5, "0s")]
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_table_has_a_header_and_one_aligned_row_per_letter() -> None:
    letters = [
        describe(b"{}", OURS, routing_key="callback.tingwu", message_id="m-1", content_type=None),
        describe(b"<x/>", BROKER, routing_key="callback.tencent-ci", message_id=None, content_type=None),
    ]
    lines = format_table(letters, NOW).splitlines()
    assert lines[0].split() == [
        "ID",
        "REASON",
        "PROVIDER",
        "TASK",
        "ROUTING",
        "KEY",
        "AGE",
        "SIZE",
        "REPLAYS",
    ]
    assert lines[1].split() == [
        "m-1",
        "unsupported-provider",
        "tingwu",
        "task-7",
        "callback.tingwu",
        "30m",
        "2",
        "0",
    ]
    assert lines[2].split()[1:] == [
        "broker:delivery_limit",
        "tencent-ci",
        "-",
        "callback.tencent-ci",
        "2h",
        "4",
        "0",
    ]
    assert lines[1].index("tingwu") == lines[0].index("PROVIDER")


def test_json_line_has_the_promised_fields() -> None:
    letter = describe(b"{}", OURS, routing_key="callback.tingwu", message_id="m-1", content_type="text/plain")
    doc = json.loads(json.dumps(letter_json(letter, NOW)))
    assert doc["id"] == "m-1"
    assert doc["reason"] == "unsupported-provider"
    assert doc["provider"] == "tingwu"
    assert doc["routing_key"] == "callback.tingwu"
    assert doc["size"] == 2
    assert doc["replays"] == 0
    assert doc["dead_lettered_at"] == "2025-11-25T11:30:00+00:00"
    assert doc["age_s"] == 1800
    assert doc["target"] == {"exchange": "speechjobs.inbound", "routing_key": "callback.tingwu"}


def test_headers_are_sorted_and_tables_shown_as_json() -> None:
    lines = format_headers(BROKER)
    assert lines[0].startswith('x-death: [{"count": 1, "reason": "delivery_limit"')
    assert "x-delivery-count: 7" in lines


def test_pretty_json_is_indented() -> None:
    assert pretty_body(b'{"a":{"b":[1,2]},"c":"\xe4\xb8\xad"}') == json.dumps(
        {"a": {"b": [1, 2]}, "c": "中"}, indent=2, ensure_ascii=False
    )


def test_pretty_xml_is_reindented() -> None:
    shown = pretty_body(b"<?xml version='1.0'?><Response><Job><Id>j1</Id><Empty/></Job></Response>")
    assert shown.splitlines() == [
        "<Response>",
        "  <Job>",
        "    <Id>j1</Id>",
        "    <Empty/>",
        "  </Job>",
        "</Response>",
    ]


def test_pretty_reindents_a_vendor_fixture() -> None:
    shown = pretty_body(fixture_bytes("seeds/tencent_ci_tts_callback_case1.xml"))
    assert shown.startswith("<Response>\n  <EventName>TaskFinish</EventName>\n  <JobsDetail>\n    <Code>")


def test_xml_with_a_dtd_is_shown_raw_never_parsed() -> None:
    body = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;&a;</x>'
    assert pretty_body(body) == body.decode()


@pytest.mark.parametrize("body", [b"plain words", b"{not json", b"<not xml"])
def test_other_text_is_shown_as_is(body: bytes) -> None:
    assert pretty_body(body) == body.decode()


@pytest.mark.parametrize("body", [b"\xff\xfe\x00garbage", b"\x00\x01 definitely not a vendor body"])
def test_binary_is_a_hex_excerpt(body: bytes) -> None:
    shown = pretty_body(body).splitlines()
    assert shown[0] == f"binary, {len(body)} bytes"
    assert shown[1].startswith("00000000  " + " ".join(f"{b:02x}" for b in body[:4]))


def test_long_binary_is_cut() -> None:
    shown = pretty_body(b"\x00" * 1000).splitlines()
    assert len(shown) == 1 + 16 + 1
    assert shown[-1] == "... 744 more bytes"


def test_progress_on_a_pipe_is_one_line_at_the_end() -> None:
    stream = io.StringIO()
    progress = Progress(stream, "replaying")
    for done in range(1, 6):
        progress(done, 5)
    assert stream.getvalue() == "replaying 5/5\n"


def test_progress_on_a_terminal_is_a_bar_redrawn_in_place() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(stream, "replaying")
    time.sleep(0.25)  # it redraws at most five times a second
    progress(1, 4)
    progress(2, 4)  # too soon: not drawn
    progress(4, 4)  # the end is always drawn
    drawn = stream.getvalue().split("\r")[1:]
    assert drawn == [
        "replaying [" + "#" * 8 + "." * 22 + "]  25% 1/4",
        "replaying [" + "#" * 30 + "] 100% 4/4\n",
    ]


@pytest.mark.parametrize(
    "command",
    [["dlq"], ["dlq", "list"], ["dlq", "show"], ["dlq", "replay"], ["dlq", "purge"], ["reprocess"]],
)
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: speechjobs" in capsys.readouterr().out


def test_list_help_says_what_an_id_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dlq", "list", "--help"])
    assert "message_id" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [["dlq", "list", "--since", "soon"], ["dlq", "replay", "--rate", "0"], ["dlq", "purge", "--limit", "-1"]],
)
def test_bad_arguments_are_refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err
