"""Service settings from SPEECHJOBS_* environment variables (or a .env file), built once and passed down."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.job import PROVIDERS, Provider

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPEECHJOBS_", env_file=".env", extra="ignore", frozen=True)

    # Only the local broker has a default; anything else comes from the environment or a secret file.
    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="RabbitMQ URL; amqps:// with ?cafile=...&certfile=...&keyfile=... for TLS",
    )
    mongodb_url: SecretStr | None = Field(
        default=None,
        description="MongoDB URL; add tls=true&tlsCAFile=... for TLS, w=majority for replica sets",
    )
    mongodb_database: str = Field(default="speechjobs", description="Database holding jobs and raw_bodies")

    inbound_exchange: str = Field(
        default="speechjobs.inbound", description="Topic exchange the relay publishes to"
    )
    inbound_queue: str = Field(default="speechjobs.inbound", description="Queue consumed, bound with #")
    queue_type: Literal["quorum", "classic"] = Field(
        default="quorum", description="quorum counts deliveries (x-delivery-count) and survives node loss"
    )
    dead_letter_exchange: str = Field(
        default="speechjobs.dead-letter", description="Fanout exchange for rejects"
    )
    dead_letter_queue: str = Field(default="speechjobs.dead-letter", description="Where dead letters wait")
    events_exchange: str = Field(default="speechjobs.events", description="Topic exchange of job.* events")
    events_queue: str = Field(
        default="speechjobs.events",
        description="A durable queue bound to every event so none is unroutable; empty to declare none",
    )

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
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Larger bodies are dead-lettered unparsed"
    )
    max_depth: int = Field(default=64, ge=2, description="Deeper JSON/XML nesting is dead-lettered")
    raw_body_max_bytes: int = Field(
        default=262_144, ge=0, description="Larger bodies are kept as metadata only"
    )
    raw_retention_days: float = Field(default=30, gt=0, description="TTL of stored raw bodies")
    publish_timeout_s: float = Field(default=10, gt=0, description="Wait for a publisher confirm")
    shutdown_grace_s: float = Field(default=20, gt=0, description="SIGTERM: time to finish in-flight work")
    mongodb_timeout_ms: int = Field(default=5_000, ge=100, description="Server selection and connect timeout")

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

    @field_validator("providers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            names = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(PROVIDERS) if names in ([], ["all"]) else tuple(names)
        return value


def load_settings() -> Settings:
    """Settings from the environment, plus one file per secret in SPEECHJOBS_SECRETS_DIR (a mounted
    Kubernetes secret: files named speechjobs_amqp_url, speechjobs_mongodb_url, ...)."""
    secrets_dir = os.environ.get("SPEECHJOBS_SECRETS_DIR")
    return Settings(_secrets_dir=secrets_dir) if secrets_dir else Settings()
