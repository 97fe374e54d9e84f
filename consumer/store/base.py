"""What the pipeline needs of a job store, and the records it hands one; no database here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from consumer.core.state import Outcome
from schemas.job import JobUpdate, Provider

__all__ = ["JobStore", "RawBody", "StoreConflict"]


@dataclass(frozen=True, slots=True)
class RawBody:
    """An inbound body kept so that jobs can be re-normalized after a parser fix."""

    sha256: str
    body: bytes
    routing_key: str
    content_type: str | None
    headers: dict[str, str]
    provider: str
    task_ids: tuple[str, ...]
    received_at: datetime


class StoreConflict(Exception):
    """Other writers kept changing the same jobs; the batch is retried as a whole."""


class JobStore(Protocol):
    async def setup(self) -> None: ...
    async def close(self) -> None: ...
    async def apply(self, updates: Sequence[tuple[JobUpdate, datetime, str]]) -> list[Outcome]: ...
    async def confirm(self, events: Sequence[tuple[str, str]], now: datetime) -> None: ...
    async def published(self, event_ids: Sequence[str]) -> set[str]: ...
    async def save_raw(self, bodies: Sequence[RawBody]) -> None: ...
    async def ping(self) -> None: ...
    async def track(self, jobs: Sequence[tuple[Provider, str]], *, now: datetime, due_at: datetime) -> None:
        """Put jobs on the poller's schedule (`track.<provider>` messages); one already on it stays as is."""
        ...
