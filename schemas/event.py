"""The outbound job.completed / job.failed event."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from schemas.job import JobError, JobStatus, Provider

__all__ = ["SCHEMA_VERSION", "JobEvent"]

SCHEMA_VERSION = 1


class JobEvent(BaseModel):
    """Published once per job when it first reaches a terminal state.

    The public contract: its fields are spelled out here, not inherited, so that no internal change
    can alter the exported schema unnoticed.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="SpeechJobsJobEvent",
        json_schema_extra={"$id": "https://speechjobs.dev/schemas/job-event.v1.json"},
    )

    event_id: str = Field(description="UUIDv5 of (provider, task_id, status): the same transition, same id")
    type: Literal["job.completed", "job.failed"]
    schema_version: Literal[1] = 1
    occurred_at: AwareDatetime = Field(description="When speechjobs received the transition, UTC")
    provider: Provider
    task_id: str
    status: JobStatus
    provider_status: str
    kind: str
    task_key: str | None = None
    user_data: JsonValue = None
    error: JobError | None = None
    results: dict[str, JsonValue] = Field(default_factory=dict)
    submitted_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
