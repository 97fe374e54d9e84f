"""The stress run's findings, each input as found: a Rejection with its own reason on the first delivery."""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, get_args

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from consumer.core import decode as decode_module
from consumer.core.adapter import Adapter, Context, Result, parse_time
from consumer.core.contract import Inbound
from consumer.core.decode import declares_dtd
from consumer.core.errors import Reason, Rejection
from consumer.core.normalize import Limits, Normalized
from consumer.core.normalize import normalize as core_normalize
from consumer.core.state import HISTORY_MAX, apply
from consumer.vendors import normalize
from schemas.job import ERROR_MESSAGE_MAX, Job, JobError, JobStatus, JobUpdate, Origin, Provider
from tests.conftest import fixture_bytes

LIMITS = Limits()


def rejected(
    body: bytes,
    routing_key: str = "",
    *,
    content_type: str | None = None,
    limits: Limits = LIMITS,
    headers: dict[str, object] | None = None,
) -> Rejection:
    with pytest.raises(Rejection) as err:
        normalize(Inbound(body, routing_key, headers or {}, content_type), limits=limits)
    assert err.value.message
    return err.value


def accepted(body: bytes, routing_key: str = "", **headers: object) -> Normalized:
    return normalize(Inbound(body, routing_key, headers))


def tingwu(task_id: Any, status: str = "COMPLETED", **data: Any) -> bytes:
    return json.dumps({"Code": "0", "Data": {"TaskId": task_id, "TaskStatus": status, **data}}).encode()


def ice(**job: Any) -> bytes:
    return json.dumps({"JobId": "j", "State": "Finished", **job}).encode()


def tencent(**operation: Any) -> bytes:
    job = {"JobId": "j", "Tag": "SpeechRecognition", "State": "Success", "Operation": operation}
    return json.dumps({"EventName": "TaskFinish", "JobsDetail": [job]}).encode()


def nest(depth: int) -> Any:
    node: Any = "leaf"
    for _ in range(depth):
        node = {"n": node}
    return node


def test_too_many_jobs_is_a_reason() -> None:
    assert "too-many-jobs" in get_args(Reason)


# --- 1. Errors no reason was mapped to ------------------------------------------------------------


def test_a_task_id_over_256_characters_is_an_invalid_payload() -> None:
    err = rejected(tingwu("t" * 300), "callback.tingwu")
    assert (err.reason, err.provider) == ("invalid-payload", "tingwu")
    assert "task_id" in err.message
    assert "ttt" not in err.message  # the model's complaint, not the input
    assert accepted(tingwu("t" * 256), "callback.tingwu").updates[0].task_id == "t" * 256


@pytest.mark.parametrize(
    "charset",
    [
        *("punycode", "idna", "x-unknown", "zlib", "base64", "rot13", "unicode_escape"),
        *("raw_unicode_escape", "hex", "bz2", "uu", "quopri", "undefined"),
    ],
)
def test_charsets_that_are_no_charset_are_undecodable(charset: str) -> None:
    body = tingwu(f"cs-{charset}")
    err = rejected(body, "callback.tingwu", content_type=f"application/json; charset={charset}")
    assert (err.reason, err.provider) == ("undecodable", "tingwu")
    xml = f'<?xml version="1.0" encoding="{charset}"?><Response/>'.encode()
    assert rejected(xml).reason == "undecodable"


def test_every_codec_python_knows_decodes_or_is_undecodable() -> None:
    """The class: whatever charset a body names, the answer is text or `undecodable`, never an exception."""
    from encodings.aliases import aliases

    body = tingwu("t")
    reasons = set()
    for name in {*aliases, *aliases.values()}:
        try:
            normalize(Inbound(body, "callback.tingwu", {}, f"application/json; charset={name}"))
        except Rejection as exc:
            reasons.add(exc.reason)
    assert reasons <= {"undecodable", "malformed", "unknown-format", "invalid-payload"}


def test_punycode_is_refused_before_its_quadratic_decoding() -> None:
    body = b'{"a":"' + b"x" * 500_000 + b'"}'
    started = time.perf_counter()
    assert rejected(body, content_type="text/plain; charset=punycode").reason == "undecodable"
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00", "0001-01-01 00:00:00+0800"]
)
def test_vendor_times_without_a_utc_equivalent_are_no_time(when: str) -> None:
    assert parse_time(when) is None
    body = ice(SmartJobInfo={"CreateTime": when, "ModifiedTime": when})
    (update,) = accepted(body, "callback.aliyun-ice").updates
    assert (update.submitted_at, update.reported_at, update.finished_at) == (None, None, None)


def test_the_year_range_within_utc_is_kept() -> None:
    assert parse_time("0001-01-01T08:00:00+08:00") == datetime(1, 1, 1, tzinfo=UTC)
    assert parse_time("9999-12-31T15:59:59-08:00") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "routing_key"),
    [
        (tingwu("nul-key", Result={"bad\u0000key": "http://x"}), "callback.tingwu"),
        (tingwu("dollar-key", Result={"$where": "http://x"}), "callback.tingwu"),
        (ice(UserData=json.dumps({"a\u0000b": 1})), "callback.aliyun-ice"),
        (ice(UserData=json.dumps({"$set": {"status": "x"}})), "callback.aliyun-ice"),
        (ice(UserData=json.dumps([{"ok": {"$gt": 1}}])), "callback.aliyun-ice"),
        (ice(JobResult={"AiResult": json.dumps([{"a\u0000": 1}])}), "callback.aliyun-ice"),
        (tencent(SoundHoundResult={"$a": 1}), "callback.tencent-ci"),
        (tencent(Output={"k" * 257: 1}), "callback.tencent-ci"),
    ],
    ids=[
        *("result-nul", "result-dollar", "userdata-nul", "userdata-dollar", "nested-dollar"),
        *("airesult-nul", "tencent-dollar", "long-key"),
    ],
)
def test_keys_the_database_cannot_store_are_refused_before_anything_is_stored(
    body: bytes, routing_key: str
) -> None:
    err = rejected(body, routing_key)
    assert err.reason == "invalid-payload"
    assert "cannot be stored" in err.message


@pytest.mark.parametrize("bad", ["bad\u0000key", "$where", "k" * 257, "a\u0000$b"])
@pytest.mark.parametrize("position", [0, 7, 19])
def test_a_bad_key_among_many_is_found(bad: str, position: int) -> None:
    """Objects of more than eight keys are checked as one joined string."""
    keys = [f"R{i}" for i in range(20)]
    keys[position] = bad
    err = rejected(tingwu("t", Result=dict.fromkeys(keys, "http://x")), "callback.tingwu")
    assert err.reason == "invalid-payload"
    assert repr(bad[:40]) in err.message


def test_dollars_and_nuls_in_values_and_keys_elsewhere_are_fine() -> None:
    (update,) = accepted(ice(UserData=json.dumps({"price": "$5", "note": "a\u0000b", "a$": 1}))).updates
    assert update.user_data == {"price": "$5", "note": "a\u0000b", "a$": 1}


def test_integers_beyond_64_bits_are_refused_before_the_database_refuses_them() -> None:
    """orjson reads integers up to 2**64 - 1 exactly; BSON stores them up to 2**63 - 1."""
    assert rejected(tencent(FooResult={"n": 2**63})).reason == "invalid-payload"
    assert rejected(tencent(FooResult={"n": [2**64 - 1]})).reason == "invalid-payload"
    (update,) = accepted(tencent(FooResult={"n": [2**63 - 1, -(2**63)]})).updates
    assert update.results["FooResult"] == {"n": [2**63 - 1, -(2**63)]}
    # Whatever an adapter makes: below -2**63 too.
    adapters = _tingwu_only(_with_results(-(2**63) - 1))
    with pytest.raises(Rejection) as err:
        core_normalize(Inbound(b"{}", "callback.tingwu"), adapters=adapters)
    assert err.value.reason == "invalid-payload"


def _tingwu_only(
    normalize: Callable[[Any, Context], Result], *, detect: Callable[[Any], bool] = lambda _: True
) -> dict[Provider, Adapter]:
    return {"tingwu": Adapter(provider="tingwu", detect=detect, normalize=normalize)}


def _raising(exc: BaseException) -> Callable[[Any, Context], Result]:
    def adapter(document: Any, ctx: Context) -> Result:
        raise exc

    return adapter


def _with_results(value: Any, *, user_data: Any = None) -> Callable[[Any, Context], Result]:
    def adapter(document: Any, ctx: Context) -> Result:
        results = {} if value is None else {"r": value}
        return [
            JobUpdate(
                provider="tingwu",
                task_id="t",
                status=JobStatus.COMPLETED,
                provider_status="COMPLETED",
                kind="k",
                source="s",
                results=results,
                user_data=user_data,
                origin=ctx.origin,
            )
        ]

    return adapter


class _Strict(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Strict.model_validate({"n": "secret-value"})
    except ValidationError as exc:
        return exc
    raise AssertionError("validated")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value"),
        TypeError("bad type"),
        OverflowError("date value out of range"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        RecursionError("maximum recursion depth exceeded"),
        _validation_error(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_what_the_input_makes_an_adapter_raise_is_an_invalid_payload(exc: BaseException) -> None:
    """The class: any adapter, any input-derived error, one reason, on the first delivery."""
    adapters = _tingwu_only(_raising(exc))
    with pytest.raises(Rejection) as err:
        core_normalize(Inbound(b"{}", "callback.tingwu"), adapters=adapters)
    assert (err.value.reason, err.value.provider) == ("invalid-payload", "tingwu")
    assert err.value.message.startswith(type(exc).__name__)
    assert "secret-value" not in err.value.message
    assert len(err.value.message) <= 300


@pytest.mark.parametrize("exc", [KeyError("k"), AttributeError("a")], ids=lambda exc: type(exc).__name__)
def test_bugs_stay_failures(exc: BaseException) -> None:
    adapters = _tingwu_only(_raising(exc))
    with pytest.raises(type(exc)):
        core_normalize(Inbound(b"{}", "callback.tingwu"), adapters=adapters)


def test_a_detect_that_trips_over_the_shape_is_an_invalid_payload() -> None:
    def detect(document: Any) -> bool:
        raise TypeError("unhashable type")

    adapters = _tingwu_only(_raising(AssertionError()), detect=detect)
    with pytest.raises(Rejection) as err:
        core_normalize(Inbound(b"{}", ""), adapters=adapters)
    assert err.value.reason == "invalid-payload"


# --- 2. Limits that hold for nested JSON too -------------------------------------------------------


@pytest.mark.parametrize("depth", [65, 100, 254, 255, 500, 1000])
def test_json_nested_in_a_string_keeps_the_depth_limit(depth: int) -> None:
    """Checked after the adapter; deeper than the models validate (255), their refusal says too-deep."""
    body = ice(JobId="deep-user-data", UserData='{"n":' * depth + '"leaf"' + "}" * depth)
    err = rejected(body, "callback.aliyun-ice")
    assert (err.reason, err.provider) == ("too-deep", "aliyun-ice")
    body = ice(JobResult={"AiResult": "[" * depth + "]" * depth})
    assert rejected(body, "callback.aliyun-ice").reason == "too-deep"


def test_json_nested_in_a_string_up_to_the_depth_limit_is_kept() -> None:
    (update,) = accepted(ice(UserData=json.dumps(nest(63))), "callback.aliyun-ice").updates
    assert update.user_data == nest(63)  # 63 objects and the leaf's level: 64


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (nest(70), "too-deep"),
        ("x" * (LIMITS.max_string_bytes + 1), "too-large"),
        ({"a\u0000": 1}, "invalid-payload"),
        ([{"$x": 1}], "invalid-payload"),
        (list(range(LIMITS.max_members + 1)), "too-large"),
    ],
    ids=["deep", "long-string", "nul-key", "dollar-key", "members"],
)
def test_the_limits_hold_whatever_adapter_made_the_update(value: Any, reason: str) -> None:
    """The class: results and user data are checked after any adapter, from any source."""
    for adapter in (_with_results(value), _with_results(None, user_data=value)):
        adapters = _tingwu_only(adapter)
        with pytest.raises(Rejection) as err:
            core_normalize(Inbound(b"{}", "callback.tingwu"), adapters=adapters)
        assert (err.value.reason, err.value.provider) == (reason, "tingwu")


def test_a_long_string_in_results_or_user_data_is_too_large() -> None:
    limit = LIMITS.max_string_bytes
    assert rejected(ice(UserData=json.dumps("x" * (limit + 1)))).reason == "too-large"
    assert rejected(ice(UserData="y" * (limit + 1))).reason == "too-large"  # not JSON: kept as text
    # UTF-8 bytes are counted, not characters.
    assert (
        rejected(tingwu("t", Result={"r": "é" * (limit // 2 + 1)}), "callback.tingwu").reason == "too-large"
    )
    (update,) = accepted(tingwu("t", Result={"r": "é" * (limit // 2)}), "callback.tingwu").updates
    assert len(str(update.results["r"]).encode()) == limit


def test_more_results_than_max_results_are_too_large() -> None:
    many = {f"R{i}": f"http://x/{i}" for i in range(LIMITS.max_results + 1)}
    assert rejected(tingwu("t", Result=many), "callback.tingwu").reason == "too-large"
    many.pop("R0")
    assert len(accepted(tingwu("t", Result=many), "callback.tingwu").updates[0].results) == LIMITS.max_results


def test_a_flat_body_with_100000_members_is_refused_before_any_adapter_runs() -> None:
    result = {_base36(i): "" for i in range(100_000)}
    body = orjson.dumps(
        {"Code": "0", "Data": {"TaskId": "members", "TaskStatus": "COMPLETED", "Result": result}}
    )
    assert len(body) < LIMITS.max_body_bytes
    adapters = _tingwu_only(_raising(AssertionError()))
    started = time.perf_counter()
    with pytest.raises(Rejection) as err:
        core_normalize(Inbound(body, "callback.tingwu"), adapters=adapters)
    assert (err.value.reason, err.value.provider) == ("too-large", "tingwu")
    assert time.perf_counter() - started < 0.5


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not number:
            return digits


def test_small_bodies_are_walked_when_their_members_could_exceed_the_limit() -> None:
    limits = Limits(max_members=16)
    body = tingwu("t", Result={f"R{i}": "u" for i in range(20)})
    assert rejected(body, "callback.tingwu", limits=limits).reason == "too-large"
    xml = b"<Response><JobsDetail>" + b"<JobId>j</JobId>" * 20 + b"</JobsDetail></Response>"
    assert rejected(xml, limits=limits).reason == "too-large"
    # Over 32 KB, the scan before xmltodict counts the elements.
    xml = b"<Response><JobsDetail>" + b"<JobId>j</JobId>" * 12_000 + b"</JobsDetail></Response>"
    assert rejected(xml).reason == "too-large"


def test_members_of_json_nested_in_strings_count_too() -> None:
    body = ice(UserData=json.dumps([0] * (LIMITS.max_members + 1)))
    assert rejected(body, "callback.aliyun-ice").reason == "too-large"
    body = ice(UserData=json.dumps([0] * 5_000), JobResult={"AiResult": json.dumps([0] * 5_001)})
    assert rejected(body, "callback.aliyun-ice").reason == "too-large"  # 10,001 in all


@pytest.mark.parametrize(
    "text",
    ['{"a":"]]]]]]","b":[[[[1]]]]}', '{"a":",,,,,,,,,,","b":[1,2,3]}', "[[[[1]]]]", "[" + "1," * 20 + "1]"],
)
def test_the_cheap_skip_never_skips_a_document_the_walk_would_refuse(text: str) -> None:
    """Brackets and commas in strings can only send a body to the walk, never past it."""
    document = orjson.loads(text)
    for depth in range(1, 8):
        for members in range(1, 25):
            try:
                decode_module.check_shape(document, max_depth=depth, max_members=members)
            except Rejection:
                skipped = not decode_module.may_exceed(
                    text.encode(), syntax="json", max_depth=depth, max_members=members
                )
                assert not skipped, (depth, members)


# --- 3. Fan-out ---------------------------------------------------------------------------------------


def test_one_message_may_update_at_most_max_jobs_per_message_jobs() -> None:
    def listing(jobs: int) -> bytes:
        entries = [{"JobId": f"fan-{i}", "JobState": "Finished"} for i in range(jobs)]
        return json.dumps({"SmartJobList": entries}).encode()

    err = rejected(listing(1000), "poll.aliyun-ice")
    assert (err.reason, err.provider) == ("too-many-jobs", "aliyun-ice")
    assert len(accepted(listing(LIMITS.max_jobs_per_message), "poll.aliyun-ice").updates) == 100
    assert rejected(listing(101), "poll.aliyun-ice").reason == "too-many-jobs"
    two = fixture_bytes("constructed/tencent_ci_taskfinish_two_jobs.json")
    assert rejected(two, limits=Limits(max_jobs_per_message=1)).reason == "too-many-jobs"


# --- 4. Every stored string has a cap ---------------------------------------------------------------


def _update(**fields: Any) -> JobUpdate:
    base: dict[str, Any] = {
        "provider": "tingwu",
        "task_id": "t",
        "status": JobStatus.FAILED,
        "provider_status": "FAILED",
        "kind": "transcription",
        "source": "tingwu.task",
        "origin": Origin(channel="callback", body_sha256="0" * 64),
    }
    return JobUpdate.model_validate(base | fields)


@pytest.mark.parametrize(
    ("field", "cap"), [("provider_status", 64), ("kind", 64), ("source", 64), ("task_key", 256)]
)
def test_stored_strings_have_caps(field: str, cap: int) -> None:
    assert getattr(_update(**{field: "x" * cap}), field) == "x" * cap
    with pytest.raises(ValidationError):
        _update(**{field: "x" * (cap + 1)})


def test_an_error_message_is_cut_to_its_cap_and_a_code_is_capped() -> None:
    error = JobError(code="E" * 256, message="m" * 10_000)
    assert error.message is not None
    assert len(error.message) == ERROR_MESSAGE_MAX
    assert error.message.endswith("…")
    assert JobError(message="short").message == "short"
    assert JobError(code="E" * 300).code == "E" * 256


def test_a_failure_with_a_huge_message_still_fails_the_job() -> None:
    body = tingwu("t", "FAILED", ErrorCode="E1", ErrorMessage="x" * 100_000)
    (update,) = accepted(body, "callback.tingwu").updates
    assert update.status is JobStatus.FAILED
    assert update.error is not None
    assert update.error.message is not None
    assert len(update.error.message) == ERROR_MESSAGE_MAX


def test_an_overlong_vendor_word_is_an_invalid_payload() -> None:
    job = {"JobId": "j", "Tag": "T" * 100, "State": "Success"}
    body = json.dumps({"EventName": "TaskFinish", "JobsDetail": [job]}).encode()
    assert rejected(body, "callback.tencent-ci").reason == "invalid-payload"
    (update,) = accepted(tingwu("t", "FAILED", ErrorCode="E" * 300), "callback.tingwu").updates
    assert update.error == JobError(code="E" * 256)


def test_a_job_stored_before_the_caps_still_loads_cut_to_them() -> None:
    """A document written before the caps must not lock its job: the next write stores it cut."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    entry = {"status": "running", "at": at, "body_sha256": "0" * 64, "channel": "mq", "applied": False}
    stored = {
        "provider": "tingwu",
        "task_id": "locked-job",
        "status": "running",
        "provider_status": "WEIRD_0_" + "X" * 1000,
        "kind": "k" * 100,
        "source": "s" * 100,
        "task_key": "t" * 300,
        "error": {"code": "E" * 300, "message": "m" * 5000},
        "history": [entry | {"provider_status": f"WEIRD_{i}_" + "X" * 1000} for i in range(71)],
        "created_at": at,
        "updated_at": at,
    }
    job = Job.model_validate(stored)
    assert (len(job.provider_status), len(job.kind), len(job.source)) == (64, 64, 64)
    assert job.task_key == "t" * 256
    assert all(len(h.provider_status) == 64 for h in job.history)
    done = apply(job, _update(status=JobStatus.COMPLETED, provider_status="COMPLETED"), now=at)
    assert done.job.status is JobStatus.COMPLETED
    assert done.event is not None
    assert len(done.job.history) == HISTORY_MAX


# --- 5. DTDs in any charset ---------------------------------------------------------------------------

SYSTEM_DTD = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><x>1</x>'
PUBLIC_DTD = '<!DOCTYPE x PUBLIC "-//X//EN" "http://127.0.0.1:9/y.dtd"><Response><JobsDetail/></Response>'
LAUGHS = '<!DOCTYPE l [<!ENTITY a "' + "a" * 20_000 + '"><!ENTITY b "&a;&a;&a;&a;&a;">]><l>&b;</l>'


@pytest.mark.parametrize("text", [SYSTEM_DTD, PUBLIC_DTD, LAUGHS], ids=["system", "public", "laughs"])
@pytest.mark.parametrize(
    ("encode", "content_type"),
    [
        (lambda t: t.encode("utf-16"), None),  # with the platform's mark
        (lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"), None),
        (lambda t: codecs.BOM_UTF32_LE + t.encode("utf-32-le"), None),
        (lambda t: t.encode("utf-16-le"), "application/xml; charset=utf-16-le"),
        (lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"), "application/xml; charset=utf-8"),
        (lambda t: ('<?xml version="1.0"?>' + t).encode("utf-16-le"), None),  # unmarked: '<?' tells
        (lambda t: ('<?xml version="1.0"?>' + t).encode("utf-32-be"), None),
        (lambda t: t.encode("utf-16-le"), None),  # unmarked, no '<?': the NULs tell
        (lambda t: t.encode("utf-32-be"), None),
        (lambda t: t.encode("gb18030"), "text/xml; charset=gbk"),
    ],
    ids=[
        *("utf16", "utf16be-bom", "utf32le-bom", "utf16le-declared", "bom-beats-label", "utf16-sniffed"),
        *("utf32-sniffed", "utf16-unmarked", "utf32-unmarked", "gbk"),
    ],
)
def test_a_dtd_is_unsafe_in_any_charset(
    text: str, encode: Callable[[str], bytes], content_type: str | None
) -> None:
    body = encode(text)
    started = time.perf_counter()
    err = rejected(body, "callback.tencent-ci", content_type=content_type)
    assert (err.reason, err.provider) == ("unsafe-xml", "tencent-ci")
    assert time.perf_counter() - started < 0.5
    assert declares_dtd(body)


def test_xml_expat_would_read_otherwise_than_we_checked_is_never_parsed() -> None:
    """Told UTF-8, expat still reads bytes with NULs after '<' as UTF-16: such text is refused unparsed."""
    body = SYSTEM_DTD.encode("utf-16-le")
    assert rejected(body, "callback.tencent-ci", content_type="text/xml; charset=utf-8").reason == "malformed"
    with pytest.raises(Rejection) as err:
        decode_module._parse_xml("<\x00!\x00D\x00", 64, 10_000)
    assert err.value.reason == "malformed"


def test_the_prescan_never_expands_a_dtd_itself() -> None:
    with pytest.raises(Rejection) as err:
        decode_module._xml_prescan(LAUGHS, 64, 10_000)
    assert err.value.reason == "unsafe-xml"


def test_xml_in_utf16_without_a_dtd_is_read_like_utf8() -> None:
    text = fixture_bytes("constructed/tencent_ci_taskfinish_two_jobs.xml").decode()
    utf8 = [u.model_dump(exclude={"origin"}) for u in accepted(text.encode(), "callback.tencent-ci").updates]
    assert len(utf8) == 2
    for body in (text.encode("utf-16"), codecs.BOM_UTF16_BE + text.encode("utf-16-be")):
        updates = accepted(body, "callback.tencent-ci").updates
        assert [u.model_dump(exclude={"origin"}) for u in updates] == utf8


def test_declares_dtd_keeps_its_bytes_answers() -> None:
    assert declares_dtd(b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "y">]><r/>')
    assert not declares_dtd(b"<Response><JobId>j</JobId></Response>")
    assert not declares_dtd("<Response><JobId>j</JobId></Response>".encode("utf-16"))
    assert declares_dtd(b"\xff\xfe\x00garbage")  # cannot be read: treated as unsafe


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<Response>\xed\xa0\x80</Response>", None),
        (b"<Response><JobsDetail><JobId>+2AA-</JobId></JobsDetail></Response>", "text/xml; charset=utf-7"),
        (b'{"JobId":"+2AA-","State":"Finished"}', "application/json; charset=utf-7"),
        ("<Response>\ud800</Response>".encode("utf-16-le", "surrogatepass"), "text/xml; charset=utf-16-le"),
    ],
    ids=["utf8-encoded-surrogate", "utf7-xml", "utf7-json", "utf16-lone-surrogate"],
)
def test_a_lone_surrogate_is_undecodable_not_unsafe(body: bytes, content_type: str | None) -> None:
    assert rejected(body, "callback.tencent-ci", content_type=content_type).reason == "undecodable"


def test_xml_the_parser_cannot_take_as_text_is_undecodable() -> None:
    """The class: xmltodict's UnicodeError is the text's fault, not an entity's."""
    with pytest.raises(Rejection) as err:
        decode_module._parse_xml("<Response>\ud800</Response>", 64, 10_000)
    assert err.value.reason == "undecodable"


# --- 6. Task ids keep their exact text --------------------------------------------------------------


def test_orjson_reads_integers_exactly_up_to_64_bits_and_beyond_as_floats() -> None:
    """Why integer ids are exact up to 2**64 - 1 and refused beyond: orjson's own behaviour."""
    assert orjson.loads(str(2**53 + 1)) == 2**53 + 1
    assert orjson.loads(str(2**63 + 1)) == 2**63 + 1
    assert orjson.loads(str(2**64 - 1)) == 2**64 - 1
    assert isinstance(orjson.loads(str(2**64)), float)
    assert orjson.loads(str(-(2**63))) == -(2**63)
    assert isinstance(orjson.loads(str(-(2**63) - 1)), float)
    assert orjson.loads("-0") == 0  # JSON's -0 is the integer 0: its text is not kept (no vendor sends it)


ID_BODIES = {
    "tingwu": ('{"Code":"0","Data":{"TaskId":%s,"TaskStatus":"COMPLETED"}}', "<x/>"),
    "tingwu-v1": ('{"Code":"0","Data":{"MeetingId":%s,"MeetingStatus":"COMPLETED"}}', "<x/>"),
    "aliyun-ice": (
        '{"JobId":%s,"State":"Finished"}',
        "<GetSmartHandleJobResponse><JobId>%s</JobId><State>Finished</State></GetSmartHandleJobResponse>",
    ),
    "aliyun-ice-list": (
        '{"SmartJobList":[{"JobId":%s,"JobState":"Finished"}]}',
        "<ListSmartJobsResponse><SmartJobList><JobId>%s</JobId><JobState>Finished</JobState>"
        "</SmartJobList></ListSmartJobsResponse>",
    ),
    "aliyun-ice-event": ('{"EventType":"X","MessageBody":{"JobId":%s,"Status":"Success"}}', "<x/>"),
    "tencent-ci": (
        '{"JobsDetail":{"JobId":%s,"Tag":"Tts","State":"Success"}}',
        "<Response><JobsDetail><JobId>%s</JobId><Tag>Tts</Tag><State>Success</State></JobsDetail></Response>",
    ),
    "tencent-ci-workflow": (
        '{"WorkflowExecution":{"RunId":%s,"State":"Success"}}',
        "<Response><WorkflowExecution><RunId>%s</RunId><State>Success</State></WorkflowExecution></Response>",
    ),
    "huawei-metastudio": ('{"job_id":%s,"status":"FINISHED"}', "<x/>"),
}


@pytest.mark.parametrize("vendor", list(ID_BODIES))
@pytest.mark.parametrize("number", [2**53 + 1, 2**63 + 1, 2**64 - 1, -(2**63)])
def test_integer_ids_up_to_64_bits_keep_their_digits_in_json(vendor: str, number: int) -> None:
    json_form, _ = ID_BODIES[vendor]
    body = (json_form % number).encode()
    assert [u.task_id for u in accepted(body).updates] == [str(number)]
    # JSON nested in a string: the EventBridge CloudEvent whose data is serialized.
    envelope = json.dumps(
        {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": body.decode()}
    )
    assert [u.task_id for u in accepted(envelope.encode()).updates] == [str(number)]


@pytest.mark.parametrize("vendor", [v for v, (_, xml) in ID_BODIES.items() if xml != "<x/>"])
@pytest.mark.parametrize("number", [2**53 + 1, 2**64, 2**70 + 1])
def test_integer_ids_of_any_size_keep_their_digits_in_xml(vendor: str, number: int) -> None:
    _, xml_form = ID_BODIES[vendor]
    assert [u.task_id for u in accepted((xml_form % number).encode()).updates] == [str(number)]


@pytest.mark.parametrize("vendor", list(ID_BODIES))
@pytest.mark.parametrize("number", ["1e-999", "1.5", "1E2", "1.0", "-2.5e+30", str(2**64), str(-(2**63) - 1)])
def test_ids_that_were_json_floats_are_an_invalid_payload(vendor: str, number: str) -> None:
    json_form, _ = ID_BODIES[vendor]
    err = rejected((json_form % number).encode())
    assert err.reason == "invalid-payload"
    assert "exact text is lost" in err.message


def test_ids_that_only_look_like_floats_are_kept() -> None:
    assert accepted(tingwu("1.5"), "callback.tingwu").updates[0].task_id == "1.5"
    xml = b"<Response><JobsDetail><JobId>1e-999</JobId><Tag>Tts</Tag><State>Success</State></JobsDetail>"
    xml += b"</Response>"
    assert accepted(xml).updates[0].task_id == "1e-999"


def test_120_distinct_integer_ids_above_2_53_stay_120_jobs() -> None:
    """The stress run saw 64 of 120 such ids collapse; in the core each keeps its digits."""
    ids = [2**53 + i for i in range(60)] + [2**63 + i for i in range(60)]
    task_ids = {accepted(tingwu(i), "callback.tingwu").updates[0].task_id for i in ids}
    assert task_ids == {str(i) for i in ids}


def test_an_x_task_id_header_that_is_not_text_or_an_integer_is_refused() -> None:
    body = b'{"state":"SUCCEED"}'
    assert rejected(body, "poll.huawei-metastudio", headers={"x-task-id": 9.007199254740993e15}).reason == (
        "invalid-payload"
    )
    assert rejected(body, "poll.huawei-metastudio", headers={"x-task-id": True}).reason == "invalid-payload"
    for hint in (2**53 + 1, str(2**53 + 1), str(2**53 + 1).encode()):
        (update,) = accepted(body, "poll.huawei-metastudio", **{"x-task-id": hint}).updates
        assert update.task_id == str(2**53 + 1)
