"""Pure pydantic models: vendor payloads, the normalized job and the outbound event."""

from schemas.event import SCHEMA_VERSION, JobEvent
from schemas.job import (
    PROVIDERS,
    Channel,
    EventRecord,
    HistoryEntry,
    Job,
    JobError,
    JobStatus,
    JobUpdate,
    Origin,
    Provider,
    TrackRequest,
)

__all__ = [
    "PROVIDERS",
    "SCHEMA_VERSION",
    "Channel",
    "EventRecord",
    "HistoryEntry",
    "Job",
    "JobError",
    "JobEvent",
    "JobStatus",
    "JobUpdate",
    "Origin",
    "Provider",
    "TrackRequest",
]
