"""The pure normalization core: one inbound message to job updates, or a Rejection. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from consumer.adapters import REGISTRY
from consumer.adapters._base import Context, Ignored
from consumer.decode import decode
from consumer.errors import Rejection
from schemas.job import PROVIDERS, Channel, JobUpdate, Origin, Provider

__all__ = ["Inbound", "Limits", "Normalized", "header_text", "normalize"]

_CHANNELS: tuple[Channel, ...] = ("callback", "mq", "poll")


@dataclass(frozen=True, slots=True)
class Inbound:
    """An inbound message as the relay sent it."""

    body: bytes
    routing_key: str = ""
    headers: Mapping[str, object] = field(default_factory=dict)
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1_048_576
    max_depth: int = 64


@dataclass(frozen=True, slots=True)
class Normalized:
    provider: Provider
    body_sha256: str
    updates: tuple[JobUpdate, ...] = ()
    ignored: str | None = None


def header_text(headers: Mapping[str, object], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.strip() or None


def normalize(
    msg: Inbound, *, enabled: Collection[Provider] = PROVIDERS, limits: Limits = Limits()
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
        )
    except Rejection as exc:
        exc.provider = exc.provider or hinted
        raise
    provider = (
        hinted or _provider_from_cloudevent(decoded.cloudevent) or _provider_from_shape(decoded.document)
    )
    if provider not in enabled:
        raise Rejection("unsupported-provider", f"provider {provider} is not enabled", provider=provider)
    channel = _channel(msg.routing_key, cloudevent=decoded.cloudevent is not None)
    origin = Origin(
        channel=channel,
        body_sha256=sha,
        envelope="cloudevents" if decoded.cloudevent is not None else None,
    )
    ctx = Context(origin=origin, task_id_hint=header_text(msg.headers, "x-task-id"))
    try:
        result = REGISTRY[provider].normalize(decoded.document, ctx)
    except Rejection as exc:
        exc.provider = provider
        raise
    if isinstance(result, Ignored):
        return Normalized(provider, sha, ignored=result.why)
    if not result:
        raise Rejection("unknown-format", "no job found in the body", provider=provider)
    return Normalized(provider, sha, updates=tuple(result))


def _provider_hint(msg: Inbound) -> Provider | None:
    named = header_text(msg.headers, "x-provider")
    if named is not None:
        if named not in PROVIDERS:
            raise Rejection("unknown-provider", f"x-provider {named[:40]!r} is not a known provider")
        return named
    for segment in msg.routing_key.split(".")[1:]:
        if segment in PROVIDERS:
            return segment
    return None


def _provider_from_cloudevent(attrs: Mapping[str, str] | None) -> Provider | None:
    if not attrs:
        return None
    where = f"{attrs.get('source', '')} {attrs.get('type', '')}".lower()
    return next((p for p in PROVIDERS if p.split("-")[0] in where), None)


def _provider_from_shape(document: object) -> Provider:
    for provider, adapter in REGISTRY.items():
        if adapter.detect(document):
            return provider
    raise Rejection("unknown-format", "no adapter recognises the body's shape")


def _channel(routing_key: str, *, cloudevent: bool) -> Channel:
    first = routing_key.split(".", 1)[0]
    for channel in _CHANNELS:
        if first == channel:
            return channel
    return "mq" if cloudevent else "unknown"
