"""The pure normalization core: one inbound message to job updates, or a Rejection. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from consumer.core.adapter import Adapter, Context, Ignored
from consumer.core.contract import PROVIDER, TASK_ID, Inbound, header_text, parse_routing_key
from consumer.core.decode import decode
from consumer.core.errors import Rejection
from schemas.job import PROVIDERS, JobUpdate, Origin, Provider

__all__ = ["Limits", "Normalized", "normalize"]

# The CloudEvents `source` of each provider's EventBridge events; any other source falls back to the shape.
_CLOUDEVENT_SOURCES: dict[str, Provider] = {"acs.tingwu": "tingwu", "acs.ice": "aliyun-ice"}


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
        )
    except Rejection as exc:
        exc.provider = exc.provider or hinted
        raise
    provider = (
        hinted
        or _provider_from_cloudevent(decoded.cloudevent)
        or _provider_from_shape(decoded.document, adapters)
    )
    if provider not in enabled:
        raise Rejection("unsupported-provider", f"provider {provider} is not enabled", provider=provider)
    channel, _ = parse_routing_key(msg.routing_key)
    if channel == "unknown" and decoded.cloudevent is not None:
        channel = "mq"
    origin = Origin(
        channel=channel,
        body_sha256=sha,
        envelope="cloudevents" if decoded.cloudevent is not None else None,
    )
    ctx = Context(origin=origin, task_id_hint=header_text(msg.headers, TASK_ID))
    try:
        result = adapters[provider].normalize(decoded.document, ctx)
    except Rejection as exc:
        exc.provider = provider
        raise
    if isinstance(result, Ignored):
        return Normalized(provider, sha, ignored=result.why)
    if not result:
        raise Rejection("unknown-format", "no job found in the body", provider=provider)
    return Normalized(provider, sha, updates=tuple(result))


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
