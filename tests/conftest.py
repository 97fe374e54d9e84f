"""Shared test helpers: fixture files and update builders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from schemas.job import JobStatus, JobUpdate, Origin, Provider

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    """A fixture by path relative to tests/fixtures, e.g. 'samples/tingwu_gettaskinfo_completed_1.json'."""
    return (FIXTURES / name).read_bytes()


def make_update(
    status: JobStatus,
    provider_status: str | None = None,
    *,
    task_id: str = "t1",
    provider: Provider = "tingwu",
    results: dict[str, object] | None = None,
    body: bytes = b"",
    **fields: object,
) -> JobUpdate:
    return JobUpdate.model_validate(
        {
            "provider": provider,
            "task_id": task_id,
            "status": status,
            "provider_status": provider_status or status.value.upper(),
            "kind": "transcription",
            "source": "test",
            "results": results or {},
            "origin": Origin(channel="callback", body_sha256=hashlib.sha256(body).hexdigest()),
            **fields,
        }
    )


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
