"""Shared test helpers: fixture files and update builders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from schemas.job import JobStatus, JobUpdate, Origin, Provider

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    """A fixture by path relative to tests/fixtures, e.g. 'samples/tingwu_gettaskinfo_completed_1.json'."""
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(fixture_bytes(name))
    return document


def parsed_fixtures(*patterns: str) -> list[tuple[str, Any]]:
    """(file name, parsed document) of every well-formed fixture matching the glob patterns."""
    from consumer.core.decode import parse_document

    found = []
    for pattern in patterns:
        for path in sorted(FIXTURES.glob(pattern)):
            if "malformed" in path.name or path.name == "aliyun_ims_event_fileuploadcomplete_success_1.json":
                continue
            document, _ = parse_document(path.read_bytes(), None, max_depth=64)
            found.append((path.name, document))
    return found


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
