"""The normalized job update, the stored job and their shared vocabulary."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

__all__ = [
    "PROVIDERS",
    "Channel",
    "EventRecord",
    "HistoryEntry",
    "Job",
    "JobError",
    "JobStatus",
    "JobUpdate",
    "Origin",
    "Provider",
]

Provider = Literal["tingwu", "tencent-ci", "huawei-metastudio", "aliyun-ice"]
PROVIDERS: tuple[Provider, ...] = ("tingwu", "tencent-ci", "huawei-metastudio", "aliyun-ice")

Channel = Literal["callback", "mq", "poll", "unknown"]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def rank(self) -> int:
        """Position in the one-way lifecycle: queued < running/paused < terminal."""
        return _RANK[self]

    @property
    def terminal(self) -> bool:
        return self.rank == 2


_RANK = {
    JobStatus.QUEUED: 0,
    JobStatus.RUNNING: 1,
    JobStatus.PAUSED: 1,
    JobStatus.COMPLETED: 2,
    JobStatus.FAILED: 2,
    JobStatus.CANCELLED: 2,
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobError(_Frozen):
    code: str | None = None
    message: str | None = None


class Origin(_Frozen):
    """Where one update came from: the message's channel and the sha256 of its raw body."""

    channel: Channel
    body_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    envelope: Literal["cloudevents"] | None = None


class _JobFields(_Frozen):
    """What an update says about a job, and so what a stored job knows."""

    provider: Provider
    task_id: str = Field(min_length=1, max_length=256)
    status: JobStatus
    provider_status: str
    kind: str
    source: str = Field(description="Vendor format the update was read from, e.g. tingwu.task")
    task_key: str | None = None
    user_data: JsonValue = None
    error: JobError | None = None
    results: dict[str, JsonValue] = Field(default_factory=dict)
    submitted_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    reported_at: AwareDatetime | None = None


class JobUpdate(_JobFields):
    """One vendor notification about one job, normalized."""

    origin: Origin


class HistoryEntry(_Frozen):
    """A distinct state seen for a job; applied is false for a terminal state that lost to an earlier one."""

    status: JobStatus
    provider_status: str
    at: AwareDatetime
    body_sha256: str
    channel: Channel
    applied: bool


class EventRecord(_Frozen):
    """The job's outbound event (an outbox of one); the store logs each broker confirm apart from it."""

    event_id: str
    routing_key: str
    body: str = Field(description="The serialized JobEvent, published verbatim on every retry")
    created_at: AwareDatetime
    owner: str = Field(default="", description="The delivery whose write created the event")


class Job(_JobFields):
    """The stored state of one (provider, task_id): the latest applied fields, plus its history."""

    history: tuple[HistoryEntry, ...] = ()
    event: EventRecord | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = 0
