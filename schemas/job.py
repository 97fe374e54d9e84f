"""The normalized job update, the stored job and their shared vocabulary."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

__all__ = [
    "ERROR_CODE_MAX",
    "ERROR_MESSAGE_MAX",
    "PROVIDERS",
    "TASK_ID_MAX",
    "WORD_MAX",
    "Channel",
    "EventRecord",
    "HistoryEntry",
    "Job",
    "JobError",
    "JobStatus",
    "JobUpdate",
    "Origin",
    "Provider",
    "TrackRequest",
]

Provider = Literal["tingwu", "tencent-ci", "huawei-metastudio", "aliyun-ice"]
PROVIDERS: tuple[Provider, ...] = ("tingwu", "tencent-ci", "huawei-metastudio", "aliyun-ice")

Channel = Literal["callback", "mq", "poll", "track", "unknown"]


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


# Every string a job stores has a cap, so that no input can grow a job document without bound: in an
# update an over-long value is an invalid payload (the error's are cut instead: a failure must still fail
# the job). A stored job, written before the caps, is cut as it loads: no old document may lock its job.
TASK_ID_MAX = 256
WORD_MAX = 64
ERROR_CODE_MAX = 256
ERROR_MESSAGE_MAX = 4096


# Its caps are validators, not constraints, and it has no docstring: JobEvent's exported schema is unchanged.
class JobError(_Frozen):
    code: str | None = None
    message: str | None = None

    @field_validator("code")
    @classmethod
    def _code_cut_to_cap(cls, code: str | None) -> str | None:
        return code[:ERROR_CODE_MAX] if code is not None else None

    @field_validator("message")
    @classmethod
    def _message_cut_to_cap(cls, message: str | None) -> str | None:
        # The message's start says the most; the mark tells a reader that it goes on.
        if message is not None and len(message) > ERROR_MESSAGE_MAX:
            return message[: ERROR_MESSAGE_MAX - 1] + "…"
        return message


class TrackRequest(_Frozen):
    """The body of a `track.<provider>` message: a job its submitter wants polled."""

    task_id: str = Field(min_length=1, max_length=TASK_ID_MAX)


class Origin(_Frozen):
    """Where one update came from: the message's channel and the sha256 of its raw body."""

    channel: Channel
    body_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    envelope: Literal["cloudevents"] | None = None


class _JobFields(_Frozen):
    """What an update says about a job, and so what a stored job knows."""

    provider: Provider
    task_id: str = Field(min_length=1, max_length=TASK_ID_MAX)
    status: JobStatus
    provider_status: str = Field(max_length=WORD_MAX)
    kind: str = Field(max_length=WORD_MAX)
    source: str = Field(
        max_length=WORD_MAX, description="Vendor format the update was read from, e.g. tingwu.task"
    )
    task_key: str | None = Field(default=None, max_length=TASK_ID_MAX)
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
    provider_status: str = Field(max_length=WORD_MAX)
    at: AwareDatetime
    body_sha256: str = Field(max_length=64)
    channel: Channel
    applied: bool

    @field_validator("provider_status", mode="before")
    @classmethod
    def _cut_stored(cls, value: Any) -> Any:
        # Entries are made from updates within the cap; a longer one was stored before it.
        return value[:WORD_MAX] if isinstance(value, str) else value


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

    @model_validator(mode="before")
    @classmethod
    def _cut_stored(cls, data: Any) -> Any:
        # Jobs are made from updates within the caps; a longer value was stored before them.
        if isinstance(data, dict) and any(
            isinstance(data.get(name), str) and len(data[name]) > cap for name, cap in _STORED_CAPS
        ):
            data = data | {
                name: data[name][:cap] for name, cap in _STORED_CAPS if isinstance(data.get(name), str)
            }
        return data


_STORED_CAPS = (
    ("provider_status", WORD_MAX),
    ("kind", WORD_MAX),
    ("source", WORD_MAX),
    ("task_key", TASK_ID_MAX),
)
