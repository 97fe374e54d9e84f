"""The one interface every vendor adapter implements, and helpers they share."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, JsonValue, ValidationError

from consumer.core.decode import check_shape
from consumer.core.errors import Rejection
from schemas.job import JobStatus, JobUpdate, Origin, Provider

__all__ = [
    "Adapter",
    "Context",
    "Ignored",
    "Result",
    "as_list",
    "json_in_string",
    "kebab",
    "parse_time",
    "unescape_amp",
    "validate",
    "validation_summary",
    "vendor_state",
]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What an adapter knows besides the body: where it came from, the relay's task-id hint, and the limits
    that JSON nested in the body's strings must keep too."""

    origin: Origin
    max_depth: int
    max_members: int
    task_id_hint: str | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A body that is understood and needs no work (a console test ping); acked and logged."""

    why: str


Result = list[JobUpdate] | Ignored


@dataclass(frozen=True, slots=True)
class Adapter:
    """A vendor: recognise its bodies by shape, and turn one into job updates (or raise Rejection)."""

    provider: Provider
    detect: Callable[[Any], bool]
    normalize: Callable[[Any, Context], Result]


def validate(model: type[M], data: Any, *, provider: Provider, what: str) -> M:
    """Validate into a vendor model; a failure becomes an invalid-payload rejection without input values."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Rejection("invalid-payload", f"{what}: {validation_summary(exc)}", provider=provider) from None


def validation_summary(exc: ValidationError) -> str:
    """Where and why validation failed, for the first three errors, without the input values."""
    first = exc.errors(include_input=False, include_url=False)[:3]
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in first)


def vendor_state(table: Mapping[str, JobStatus], state: str, *, provider: Provider, what: str) -> JobStatus:
    """A vendor's state word as a JobStatus: none is an invalid payload, one the table lacks unknown-state."""
    if not state:
        raise Rejection("invalid-payload", f"{what} is missing", provider=provider)
    status = table.get(state)
    if status is None:
        # Guessing could publish a wrong terminal event; dead-lettered, the body is replayed after an upgrade
        # and the operator sees speechjobs_dead_letters{reason="unknown-state"} grow.
        raise Rejection("unknown-state", f"{what} {state[:40]!r} is not a known state", provider=provider)
    return status


def as_list(value: Any) -> list[Any]:
    """XML gives one child as an object and several as a list; None (empty element) is no child."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def json_in_string(value: str | None, ctx: Context) -> JsonValue:
    """Vendors nest JSON in strings (ICE AiResult, UserData); parse it, or keep the text as it is.

    What is parsed keeps the body's member limit before anything validates it (validating is the costly
    part); its depth, like everything in an update, is checked by normalize.
    """
    if value is None or value == "":
        return None
    try:
        parsed: JsonValue = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    # As in decode.may_exceed: fewer commas and brackets than members allowed cannot hold more members.
    if value.count(",") + value.count("[") + value.count("{") > ctx.max_members:
        check_shape(parsed, max_depth=ctx.max_depth, max_members=ctx.max_members)
    return parsed


def unescape_amp(url: str) -> str:
    """Tingwu returns some result URLs HTML-escaped; &amp; must become & before anyone fetches them."""
    return url.replace("&amp;", "&")


_KEBAB = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def kebab(name: str) -> str:
    """SpeechRecognition -> speech-recognition, TextToSpeech -> text-to-speech."""
    return _KEBAB.sub("-", name.strip()).replace("_", "-").lower()


def parse_time(value: Any) -> datetime | None:
    """Vendor timestamp to aware UTC; '-' and empty mean not yet; naive times are taken as UTC."""
    if value is None:
        return None
    text = str(value).strip()
    if text in ("", "-"):
        return None
    # Python 3.11 reads +0800, Z and the space separator; VOD writes milliseconds after a colon.
    text = _VOD_MILLIS.sub(r"\1.\2", text)
    try:
        parsed = datetime.fromisoformat(text)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError:
        return None
    except OverflowError:  # year 1 or 9999 with an offset: no UTC time exists, as good as no time
        return None


_VOD_MILLIS = re.compile(r"(T\d{2}:\d{2}:\d{2}):(\d{3})")
