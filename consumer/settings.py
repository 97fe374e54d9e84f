"""Settings in sections from SPEECHJOBS_* variables (or .env, or secret files), built once and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.job import PROVIDERS, Provider

__all__ = [
    "AmqpSettings",
    "ConsumerSettings",
    "LimitsSettings",
    "MongoSettings",
    "PollerSettings",
    "ReceiverSettings",
    "RuntimeSettings",
    "Settings",
    "VendorSettings",
    "load_settings",
    "reference_markdown",
]


class _Section(BaseSettings):
    # Every section reads the same flat SPEECHJOBS_* names, so a variable's name never depends on the
    # section it is grouped in.
    # hide_input_in_errors: a refused setting may be a secret, and the error is printed.
    model_config = SettingsConfigDict(
        env_prefix="SPEECHJOBS_", env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )


class AmqpSettings(_Section):
    """RabbitMQ: the connection and the exchanges every process shares."""

    # Only the local broker has a default; anything else comes from the environment or a secret file.
    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="RabbitMQ URL; amqps:// with ?cafile=...&certfile=...&keyfile=... for TLS",
    )
    inbound_exchange: str = Field(
        default="speechjobs.inbound",
        description="Topic exchange that the receiver, the poller and relays publish to",
    )
    events_exchange: str = Field(default="speechjobs.events", description="Topic exchange of job.* events")
    events_unrouted: str = Field(
        default="speechjobs.events.unrouted",
        description="Alternate exchange and queue of the events exchange: they catch only events that "
        "no subscriber's binding matched",
    )
    events_unrouted_max_length: int = Field(
        default=100_000, ge=1, description="Unrouted events kept; beyond it the oldest are dropped"
    )
    dead_letter_exchange: str = Field(
        default="speechjobs.dead-letter", description="Fanout exchange for rejects"
    )
    publish_timeout_s: float = Field(default=10, gt=0, description="Wait for a publisher confirm")


class MongoSettings(_Section):
    """MongoDB: where jobs, confirms and raw bodies are kept, and how durably."""

    mongodb_url: SecretStr | None = Field(
        default=None,
        description="MongoDB URL; add tls=true&tlsCAFile=... for TLS",
    )
    mongodb_database: str = Field(
        default="speechjobs", description="Database holding jobs, published_events and raw_bodies"
    )
    mongodb_timeout_ms: int = Field(default=5_000, ge=100, description="Server selection and connect timeout")
    mongodb_write_concern: str = Field(
        default="majority",
        description="`w` of every write an ack depends on: majority (a standalone counts as its own "
        "majority), or a number of members",
    )
    mongodb_journal: bool = Field(
        default=True,
        description="Wait for the journal before a write counts (`j: true`); without it an acked "
        "message can be lost when the server dies",
    )

    @field_validator("mongodb_write_concern")
    @classmethod
    def _w(cls, value: str) -> str:
        if value != "majority" and not (value.isdigit() and int(value) >= 1):
            raise ValueError("must be majority or a whole number of at least 1")
        return value

    def write_concern_w(self) -> int | str:
        return int(self.mongodb_write_concern) if self.mongodb_write_concern.isdigit() else "majority"


class RuntimeSettings(_Section):
    """What every process shares: probes, logs, the event loop, shutdown."""

    http_port: int = Field(
        default=8080, ge=0, le=65535, description="/healthz, /readyz, /metrics; 0 disables"
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="json lines, or text for a terminal"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="uvloop spends less CPU per message; asyncio is the standard loop"
    )
    shutdown_grace_s: float = Field(default=20, gt=0, description="SIGTERM: time to finish in-flight work")


class LimitsSettings(_Section):
    """What a body may be; the same limits wherever a body enters."""

    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Larger bodies are dead-lettered unparsed"
    )
    max_depth: int = Field(default=64, ge=2, description="Deeper JSON/XML nesting is dead-lettered")
    max_members: int = Field(
        default=10_000,
        ge=16,
        description="Most JSON members and array items, or XML elements, in one body (JSON nested in its "
        "strings included); more is dead-lettered as too-large",
    )
    max_jobs_per_message: int = Field(
        default=100, ge=1, description="Most jobs one message may update; more is dead-lettered"
    )
    max_string_bytes: int = Field(
        default=262_144,
        ge=256,
        description="Longest string a job's results or user data may hold (an inline transcript is one)",
    )
    max_results: int = Field(default=256, ge=1, description="Most result entries one job keeps")


class ConsumerSettings(_Section):
    """`speechjobs run`: its queues, batching and retries."""

    inbound_queue: str = Field(default="speechjobs.inbound", description="Queue consumed, bound with #")
    queue_type: Literal["quorum", "classic"] = Field(
        default="quorum", description="quorum counts deliveries (x-delivery-count) and survives node loss"
    )
    dead_letter_queue: str = Field(default="speechjobs.dead-letter", description="Where dead letters wait")
    providers: Annotated[tuple[Provider, ...], NoDecode] = Field(
        default=PROVIDERS, description="Comma-separated providers to accept; others are dead-lettered"
    )
    max_deliveries: int = Field(
        default=5, ge=1, description="Attempts before a failing message is dead-lettered"
    )
    prefetch: int = Field(default=512, ge=1, description="Unacked deliveries held per replica")
    batch_size: int = Field(default=256, ge=1, description="Messages per database round trip")
    batch_linger_ms: float = Field(default=2.0, ge=0, description="How long a batch waits to fill")
    batches_in_flight: int = Field(
        default=1,
        ge=1,
        description="Batches in progress at once; one writes jobs while the others publish and settle",
    )
    max_bytes_in_flight: int = Field(
        default=64 << 20,
        ge=1 << 20,
        description="Bodies held unsettled at once, in bytes; over it the replica stops taking deliveries "
        "until it has settled half; what was already on its way (at most SPEECHJOBS_PREFETCH "
        "deliveries) still arrives",
    )
    raw_body_max_bytes: int = Field(
        default=262_144, ge=0, description="Larger bodies are kept as metadata only"
    )
    raw_retention_days: float = Field(default=30, gt=0, description="TTL of stored raw bodies")

    @field_validator("providers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            names = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(PROVIDERS) if names in ([], ["all"]) else tuple(names)
        return value


class ReceiverSettings(_Section):
    """`speechjobs receive`: the HTTP callback receiver."""

    receiver_port: int = Field(
        default=8000, ge=1, le=65535, description="Callbacks, /healthz, /readyz and /metrics"
    )
    callback_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated provider=token pairs; a callback URL is /callbacks/<provider>/<token>. "
        "Several tokens of a provider are valid at once (rotation); a provider without one accepts nothing",
    )
    ice_auth_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated ICE callback AuthKeys; when set, ICE callbacks must carry a valid "
        "X-ICE-SIGNATURE for one of them",
    )
    ice_callback_url: str = Field(
        default="", description="The callback URL exactly as registered with ICE (its signature covers it)"
    )
    ice_signature_window_s: float = Field(
        default=300, gt=0, description="How far X-ICE-TIMESTAMP may be from now"
    )
    receiver_confirm_timeout_s: float = Field(
        default=2.5,
        gt=0,
        description="Wait for the broker's confirm before answering 503 (below the vendors' 3-5 s deadlines)",
    )
    receiver_max_in_flight: int = Field(
        default=256, ge=1, description="Requests being handled at once; over it, 503 at once"
    )
    receiver_read_timeout_s: float = Field(
        default=5, gt=0, description="Time to receive a request's head, and again its body"
    )
    receiver_max_header_bytes: int = Field(
        default=16_384, ge=1_024, description="Largest request head (request line and headers)"
    )

    def tokens(self) -> dict[str, tuple[str, ...]]:
        """The valid tokens of each provider."""
        found: dict[str, list[str]] = {}
        for pair in self.callback_tokens.get_secret_value().split(","):
            provider, _, token = pair.strip().partition("=")
            if provider and token:
                found.setdefault(provider.strip(), []).append(token.strip())
        return {provider: tuple(tokens) for provider, tokens in found.items()}

    def ice_keys(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.ice_auth_keys.get_secret_value().split(",") if k.strip())

    @field_validator("callback_tokens")
    @classmethod
    def _known_providers(cls, value: SecretStr) -> SecretStr:
        for pair in value.get_secret_value().split(","):
            provider, sep, token = pair.strip().partition("=")
            if not pair.strip():
                continue
            if not sep or not token.strip() or provider.strip() not in PROVIDERS:
                # Name the provider, never the token.
                raise ValueError(f"not a provider=token pair of a known provider: {provider.strip()[:40]!r}")
        return value


class PollerSettings(_Section):
    """`speechjobs poll`: which jobs are due, how often, how fast each vendor is asked."""

    poll_interval_s: float = Field(
        default=60, gt=0, description="First poll after tracking, and the interval after a change"
    )
    poll_max_interval_s: float = Field(
        default=300,
        gt=0,
        description="Cap of the interval, which doubles (with jitter) while nothing changes",
    )
    poll_fast_interval_s: float = Field(
        default=3,
        gt=0,
        description="MetaStudio's interval while its job is PROCESSING (its docs poll every 3 s)",
    )
    poll_silence: Annotated[dict[Provider, float], NoDecode] = Field(
        default_factory=lambda: dict.fromkeys(PROVIDERS, 600.0),
        description="Reconciliation: a running job silent this long (seconds) is polled; "
        "`600` for all or provider=seconds pairs",
    )
    poll_rate: Annotated[dict[Provider, float], NoDecode] = Field(
        default_factory=lambda: dict.fromkeys(PROVIDERS, 5.0),
        description="Status requests per second to each vendor, per replica; `5` or provider=rate pairs",
    )
    poll_max_age_s: float = Field(
        default=172_800, gt=0, description="Jobs older than this are no longer polled"
    )
    poll_not_found_limit: int = Field(
        default=3, ge=1, description="Answers of 'no such job' in a row before polling stops"
    )
    poll_concurrency: int = Field(default=16, ge=1, description="Status requests in flight per vendor")
    poll_lease_s: float = Field(
        default=120,
        gt=0,
        description="A claimed job is another replica's to take after this (a killed poller)",
    )
    poll_reconcile_every_s: float = Field(
        default=60, gt=0, description="How often silent jobs are looked for"
    )

    @field_validator("poll_silence", "poll_rate")
    @classmethod
    def _positive(cls, value: dict[Provider, float]) -> dict[Provider, float]:
        if any(not seconds > 0 for seconds in value.values()):
            raise ValueError("every value must be a number above 0")
        return value

    @field_validator("poll_silence", "poll_rate", mode="before")
    @classmethod
    def _per_provider(cls, value: object, info: ValidationInfo) -> object:
        # `600` for every provider, or `tingwu=300,aliyun-ice=120` over the defaults of the others.
        if not isinstance(value, str):
            return value
        text = value.strip()
        if "=" not in text:
            return dict.fromkeys(PROVIDERS, float(text))
        assert info.field_name is not None
        found: dict[str, float] = cls.model_fields[info.field_name].get_default(call_default_factory=True)
        for pair in text.split(","):
            provider, _, number = pair.strip().partition("=")
            if provider.strip() not in PROVIDERS:
                raise ValueError(f"not a provider: {provider.strip()[:40]!r}")
            found[provider.strip()] = float(number)
        return found


class VendorSettings(_Section):
    """The vendors' status APIs, for the poller: credentials (secret files work) and endpoints.

    A provider without its credentials is not polled.
    """

    alibaba_access_key_id: SecretStr | None = Field(default=None, description="Tingwu and ICE: AccessKey ID")
    alibaba_access_key_secret: SecretStr | None = Field(
        default=None, description="Tingwu and ICE: AccessKey secret"
    )
    alibaba_security_token: SecretStr | None = Field(
        default=None, description="Tingwu and ICE: STS security token, with temporary AccessKeys"
    )
    tencent_secret_id: SecretStr | None = Field(default=None, description="Tencent CI: SecretId")
    tencent_secret_key: SecretStr | None = Field(default=None, description="Tencent CI: SecretKey")
    tencent_ci_bucket: str | None = Field(default=None, description="Tencent CI: `<bucket>-<appid>`")
    tencent_ci_region: str | None = Field(default=None, description="Tencent CI: region, e.g. ap-beijing")
    tencent_ci_queue_id: str | None = Field(
        default=None,
        description="Tencent CI: the speech queue the jobs go to; when set, due jobs are asked about with "
        "its listing (DescribeSpeechJobs), a page for up to 100 jobs",
    )
    huawei_access_key: SecretStr | None = Field(default=None, description="MetaStudio: AK")
    huawei_secret_key: SecretStr | None = Field(default=None, description="MetaStudio: SK")
    huawei_project_id: str | None = Field(default=None, description="MetaStudio: project ID")
    tingwu_endpoint: str = Field(
        default="https://tingwu.cn-beijing.aliyuncs.com", description="Tingwu API: scheme, host and port"
    )
    ice_endpoint: str = Field(
        default="https://ice.cn-shanghai.aliyuncs.com", description="ICE API: scheme, host and port"
    )
    ice_signature: Literal["v3", "v2"] = Field(
        default="v3",
        description="ICE request signature: v3 (ACS3-HMAC-SHA256) or v2 (RPC HMAC-SHA1, as ICE's SDK)",
    )
    tencent_ci_endpoint: str | None = Field(
        default=None,
        description="Tencent CI API; default `https://<bucket>-<appid>.ci.<region>.myqcloud.com`",
    )
    metastudio_endpoint: str = Field(
        default="https://metastudio.cn-north-4.myhuaweicloud.com",
        description="MetaStudio API: scheme, host and port",
    )
    vendor_timeout_s: float = Field(default=10, gt=0, description="Each status request, connect to last byte")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every section; a process passes each part only what it needs."""

    amqp: AmqpSettings
    mongodb: MongoSettings
    runtime: RuntimeSettings
    limits: LimitsSettings
    consumer: ConsumerSettings
    receiver: ReceiverSettings
    poller: PollerSettings
    vendors: VendorSettings


_SECTIONS: dict[str, type[_Section]] = {
    "amqp": AmqpSettings,
    "mongodb": MongoSettings,
    "runtime": RuntimeSettings,
    "limits": LimitsSettings,
    "consumer": ConsumerSettings,
    "receiver": ReceiverSettings,
    "poller": PollerSettings,
    "vendors": VendorSettings,
}


def load_settings(**overrides: Any) -> Settings:
    """Every section from the environment, plus one file per secret in SPEECHJOBS_SECRETS_DIR (a mounted
    Kubernetes secret: files named speechjobs_amqp_url, speechjobs_mongodb_url, ...).

    `overrides` (field name to value) win over the environment; a name no section has is an error.
    """
    secrets_dir = os.environ.get("SPEECHJOBS_SECRETS_DIR")
    unknown = set(overrides) - {name for cls in _SECTIONS.values() for name in cls.model_fields}
    if unknown:
        raise TypeError(f"no such setting: {', '.join(sorted(unknown))}")
    built: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        mine = {k: v for k, v in overrides.items() if k in cls.model_fields}
        built[section] = cls(_secrets_dir=secrets_dir, **mine) if secrets_dir else cls(**mine)
    return Settings(**built)


def reference_markdown() -> str:
    """docs/configuration.md, generated from the fields' descriptions (a test keeps the file in sync)."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated by `speechjobs settings`; edit the descriptions in consumer/settings.py. -->",
        "",
        "Every setting is an environment variable (or a line in `.env`). Secrets can instead be files in",
        "the folder named by `SPEECHJOBS_SECRETS_DIR` (a mounted Kubernetes Secret), one file per setting,",
        "named after the variable in lower case, e.g. `speechjobs_mongodb_url`.",
    ]
    for cls in _SECTIONS.values():
        title = (cls.__doc__ or cls.__name__).strip()
        lines += ["", f"## {cls.__name__.removesuffix('Settings')}", "", title, ""]
        lines += ["| Variable | Default | Meaning |", "|---|---|---|"]
        for name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            shown = _shown_default(default)
            lines.append(f"| `SPEECHJOBS_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(lines) + "\n"


def _shown_default(default: object) -> str:
    if default is None:
        return "(none)"
    if isinstance(default, SecretStr):
        return "(local broker, guest)" if default.get_secret_value() else "(none)"
    if isinstance(default, tuple):
        return "`" + ",".join(str(v) for v in default) + "`"
    if isinstance(default, dict):
        values = set(default.values())
        if len(values) == 1:
            return f"`{values.pop():g}` each"
        return "`" + ",".join(f"{k}={v:g}" for k, v in default.items()) + "`"
    return f"`{default}`"
