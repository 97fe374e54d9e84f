"""Service settings from SPEECHJOBS_* environment variables (or a .env file), built once and passed down."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.job import PROVIDERS, Provider

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPEECHJOBS_", env_file=".env", extra="ignore", secrets_dir=None, frozen=True
    )

    # Only the local broker has a default; anything else comes from the environment or a secret file.
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    mongodb_url: SecretStr | None = None
    mongodb_database: str = "speechjobs"

    inbound_exchange: str = "speechjobs.inbound"
    inbound_queue: str = "speechjobs.inbound"
    queue_type: Literal["quorum", "classic"] = "quorum"
    dead_letter_exchange: str = "speechjobs.dead-letter"
    dead_letter_queue: str = "speechjobs.dead-letter"
    events_exchange: str = "speechjobs.events"
    events_queue: str = Field(
        default="speechjobs.events",
        description="A durable queue bound to every event so none is unroutable; empty to declare none",
    )

    providers: Annotated[tuple[Provider, ...], NoDecode] = PROVIDERS
    max_deliveries: int = Field(
        default=5, ge=1, description="Attempts before a failing message is dead-lettered"
    )
    prefetch: int = Field(default=256, ge=1)
    batch_size: int = Field(default=128, ge=1)
    batch_linger_ms: float = Field(default=5.0, ge=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    max_depth: int = Field(default=64, ge=2)
    raw_body_max_bytes: int = Field(
        default=262_144, ge=0, description="Larger bodies are kept as metadata only"
    )
    raw_retention_days: float = Field(default=30, gt=0)
    publish_timeout_s: float = Field(default=10, gt=0)
    shutdown_grace_s: float = Field(default=20, gt=0)
    mongodb_timeout_ms: int = Field(default=5_000, ge=100)

    http_port: int = Field(default=8080, ge=0, le=65535)
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    @field_validator("providers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            names = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(PROVIDERS) if names in ([], ["all"]) else tuple(names)
        return value
