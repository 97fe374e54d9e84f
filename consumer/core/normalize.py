"""The pure normalization core: one inbound message to job updates, or a Rejection. No I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue, ValidationError

from consumer.core.adapter import Adapter, Context, Ignored, validation_summary
from consumer.core.contract import PROVIDER, TASK_ID, Inbound, header_text, parse_routing_key
from consumer.core.decode import decode
from consumer.core.errors import Rejection, error_name
from schemas.job import PROVIDERS, JobStatus, JobUpdate, Origin, Provider, TrackRequest

__all__ = ["Limits", "Normalized", "normalize"]

# The CloudEvents `source` of each provider's EventBridge events; any other source falls back to the shape.
_CLOUDEVENT_SOURCES: dict[str, Provider] = {"acs.tingwu": "tingwu", "acs.ice": "aliyun-ice"}


@dataclass(frozen=True, slots=True)
class Limits:
    """What a body may be; the defaults are the settings' (consumer.settings.LimitsSettings)."""

    max_body_bytes: int = 1_048_576
    max_depth: int = 64
    max_members: int = 10_000
    max_jobs_per_message: int = 100
    max_string_bytes: int = 262_144
    max_results: int = 256

    @classmethod
    def of(cls, settings: object) -> Limits:
        """The limits from an object with the same field names (LimitsSettings)."""
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class Normalized:
    provider: Provider
    body_sha256: str
    updates: tuple[JobUpdate, ...] = ()
    ignored: str | None = None


def normalize(
    msg: Inbound,
    *,
    adapters: Mapping[Provider, Adapter],
    enabled: Collection[Provider] = PROVIDERS,
    limits: Limits = Limits(),
) -> Normalized:
    """Decode, find the provider (header, then routing key, then body shape) and run its adapter."""
    sha = hashlib.sha256(msg.body).hexdigest()
    hinted = _provider_hint(msg)
    try:
        decoded = decode(
            msg.body,
            content_type=msg.content_type,
            headers=msg.headers,
            max_bytes=limits.max_body_bytes,
            max_depth=limits.max_depth,
            max_members=limits.max_members,
        )
        task_id_hint = _task_id_hint(msg.headers)
    except Rejection as exc:
        exc.provider = exc.provider or hinted
        raise
    try:
        provider = (
            hinted
            or _provider_from_cloudevent(decoded.cloudevent)
            or _provider_from_shape(decoded.document, adapters)
        )
    except _INPUT_ERRORS as exc:  # a detect() tripped over the shape: as below, the input's fault
        raise _rejection(exc, None) from None
    if provider not in enabled:
        raise Rejection("unsupported-provider", f"provider {provider} is not enabled", provider=provider)
    channel, _ = parse_routing_key(msg.routing_key)
    if channel == "track":
        return Normalized(provider, sha, updates=(_tracked(decoded.document, provider, sha),))
    if channel == "unknown" and decoded.cloudevent is not None:
        channel = "mq"
    origin = Origin(
        channel=channel,
        body_sha256=sha,
        envelope="cloudevents" if decoded.cloudevent is not None else None,
    )
    ctx = Context(
        origin=origin,
        task_id_hint=task_id_hint,
        max_depth=limits.max_depth,
        max_members=limits.max_members,
    )
    try:
        result = adapters[provider].normalize(decoded.document, ctx)
        if isinstance(result, Ignored):
            return Normalized(provider, sha, ignored=result.why)
        if not result:
            raise Rejection("unknown-format", "no job found in the body")
        _check_updates(result, decoded.document, limits)
    except Rejection as exc:
        exc.provider = provider
        raise
    except _INPUT_ERRORS as exc:
        # What the input made an adapter raise (a model refusing a value, a date out of range) can never
        # succeed: dead-lettered now, not redelivered. KeyError and AttributeError stay failures: bugs.
        raise _rejection(exc, provider) from None
    return Normalized(provider, sha, updates=tuple(result))


def _tracked(document: Any, provider: Provider, sha: str) -> JobUpdate:
    """A `track.<provider>` body: the job, stored as queued until a poll or a notification says more."""
    try:
        request = TrackRequest.model_validate(document)
    except ValidationError as exc:
        raise _rejection(exc, provider) from None
    return JobUpdate(
        provider=provider,
        task_id=request.task_id,
        status=JobStatus.QUEUED,
        provider_status="TRACKED",
        kind="unknown",
        source="speechjobs.track",
        origin=Origin(channel="track", body_sha256=sha),
    )


# ValidationError and UnicodeError are ValueErrors.
_INPUT_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)


def _rejection(exc: BaseException, provider: Provider | None) -> Rejection:
    """The error's class and a short message; a ValidationError's without the input values it quotes."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_url=False)
        # A model refusing to validate deeper (JSON nested in a string, parsed by the adapter) is nesting.
        deep = next((e for e in errors if e["type"] == "recursion_depth_exceeded"), None)
        if deep is not None:
            where = str(deep["loc"][0]) if deep["loc"] else "<root>"
            return Rejection("too-deep", f"{where}: nested deeper than a model validates", provider=provider)
        return Rejection(
            "invalid-payload", f"{error_name(exc)}: {validation_summary(exc)}", provider=provider
        )
    return Rejection("invalid-payload", f"{error_name(exc)}: {str(exc)[:120]}", provider=provider)


def _task_id_hint(headers: Mapping[str, object]) -> str | None:
    raw = headers.get(TASK_ID)
    # An AMQP float or double has lost the id's exact digits before it got here; a table is no id at all.
    if raw is not None and (isinstance(raw, bool) or not isinstance(raw, str | bytes | int)):
        raise Rejection("invalid-payload", f"the {TASK_ID} header is a {type(raw).__name__}, not text")
    return header_text(headers, TASK_ID)


def _check_updates(updates: list[JobUpdate], document: Any, limits: Limits) -> None:
    """What any adapter made from any source (JSON nested in strings included) is checked here, once."""
    if len(updates) > limits.max_jobs_per_message:
        raise Rejection(
            "too-many-jobs", f"{len(updates)} jobs exceed the limit of {limits.max_jobs_per_message}"
        )
    for update in updates:
        if len(update.results) > limits.max_results:
            raise Rejection(
                "too-large", f"{len(update.results)} results exceed the limit of {limits.max_results}"
            )
        # Each result counts its depth from 1, as user data does: the results object is ours.
        members = _check_tree(update.results, 0, "results", limits)
        members += _check_tree(update.user_data, 1, "user data", limits)
        if members > limits.max_members:
            raise Rejection("too-large", f"results and user data hold more than {limits.max_members} members")
    _check_ids(updates, document)


# BSON stores integers in 64 bits; a larger one would fail at the database, after the core said yes.
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_KEY_MAX = 256
_FINE = frozenset({float, bool, type(None)})  # values with nothing to check


def _check_tree(root: JsonValue, depth: int, where: str, limits: Limits) -> int:
    """Refuse what could not be stored or breaks a limit, at `depth` for the root; the members and items."""
    if type(root) is not dict and type(root) is not list:
        _check_scalar(root, where, limits)
        return 0
    max_depth = limits.max_depth
    unchecked = limits.max_string_bytes // 4  # no string this short can exceed the limit in UTF-8
    members = 0
    # This runs for every update: no recursion, exact type tests (validated JSON holds no subclasses),
    # and each distinct key checked once (lists of objects repeat theirs).
    keys: set[str] = set()
    stack: list[tuple[dict[str, JsonValue] | list[JsonValue], int]] = [(root, depth)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise Rejection("too-deep", f"{where}: nested deeper than {max_depth} levels")
        members += len(node)
        values: Iterable[JsonValue]
        if type(node) is dict:
            if not node.keys() <= keys:
                _check_keys(node, where)
                keys.update(node)
            values = node.values()
        else:
            values = node
        depth += 1
        for value in values:
            kind = type(value)
            if kind is str:
                if len(value) > unchecked:  # type: ignore[arg-type]
                    _check_scalar(value, where, limits)
            elif kind in _FINE:
                pass
            elif kind is dict or kind is list:
                stack.append((value, depth))  # type: ignore[arg-type]
            elif kind is int and not _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
                _check_scalar(value, where, limits)
    return members


def _check_keys(node: dict[str, JsonValue], where: str) -> None:
    """Keys become BSON field names: C strings, in which a leading $ is an operator."""
    if len(node) > 8:  # one joined string: C speed for the many keys of one object
        joined = "\x00".join(node)
        if (
            (len(joined) <= _KEY_MAX or max(map(len, node)) <= _KEY_MAX)
            and joined.count("\x00") == len(node) - 1
            and joined[:1] != "$"
            and "\x00$" not in joined
        ):
            return
    for key in node:  # one by one, to name the key
        if len(key) > _KEY_MAX or "\x00" in key or key[:1] == "$":
            raise Rejection("invalid-payload", f"{where} key {key[:40]!r} cannot be stored")


def _check_scalar(value: JsonValue, where: str, limits: Limits) -> None:
    if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) > limits.max_string_bytes:
        raise Rejection("too-large", f"a string in {where} exceeds {limits.max_string_bytes} bytes")
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        raise Rejection("invalid-payload", f"an integer in {where} does not fit in 64 bits")


# What str() gives for a finite float: the only shapes in which a JSON number with a fraction or an
# exponent (or an integer beyond 64 bits, which orjson reads as a float) can reach a task id.
_FLOAT_TEXT = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]\d+)?")


def _check_ids(updates: Iterable[JobUpdate], document: Any) -> None:
    """Refuse a task id that was a JSON float: the vendor models turn numbers into text, but a float's text is
    not what was sent (1e-999 became 0.0, 2**64 + 1 became 1.8446744073709552e+19)."""
    for update in updates:
        task_id = update.task_id
        float_like = ("." in task_id or "e" in task_id) and _FLOAT_TEXT.fullmatch(task_id)
        if float_like and _has_float(document, task_id):
            raise Rejection(
                "invalid-payload",
                f"task id {task_id[:40]} was a JSON number with a fraction or an exponent, or beyond "
                "64 bits: its exact text is lost",
            )


def _has_float(document: Any, text: str) -> bool:
    """Whether the document holds a float that reads as `text`: rare, so walked only for float-like ids."""
    stack = [document]
    while stack:
        node = stack.pop()
        values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else (node,)
        for value in values:
            if isinstance(value, float) and str(value) == text:
                return True
            if type(value) is dict or type(value) is list:
                stack.append(value)
    return False


def _provider_hint(msg: Inbound) -> Provider | None:
    named = header_text(msg.headers, PROVIDER)
    if named is not None:
        if named not in PROVIDERS:
            raise Rejection("unknown-provider", f"x-provider {named[:40]!r} is not a known provider")
        return named
    return parse_routing_key(msg.routing_key)[1]


def _provider_from_cloudevent(attrs: Mapping[str, str] | None) -> Provider | None:
    if not attrs:
        return None
    return _CLOUDEVENT_SOURCES.get(attrs.get("source", "").strip().lower())


def _provider_from_shape(document: object, adapters: Mapping[Provider, Adapter]) -> Provider:
    for provider, adapter in adapters.items():
        if adapter.detect(document):
            return provider
    raise Rejection("unknown-format", "no adapter recognises the body's shape")
