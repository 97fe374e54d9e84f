"""Log lines, JSON and text, never carry a secret: not in the message, a traceback or any extra field."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from consumer.runtime.logs import _JsonFormatter, _TextFormatter

SECRET = "s3cr3tMARKER"


@dataclass
class Payload:
    url: str


@pytest.fixture
def stream() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("speechjobs.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out, handler
    logger.removeHandler(handler)


EXTRA = {
    "routing_key": f"callback.tingwu?Signature={SECRET}",  # as the pipeline logs it
    "task_ids": ["t1", f"http://u/?token={SECRET}"],
    "headers": {"x-api-key": SECRET, "nested": [{"authorization": f"Bearer {SECRET}"}]},
    "raw": f"password={SECRET}".encode(),
    "payload": Payload(f"https://b/o?x-oss-signature={SECRET}"),
    "password": SECRET,
    "outcome": "dead-lettered",
    "duration_ms": 1.5,
}


def test_json_line_redacts_every_extra_field(
    stream: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, handler = stream
    handler.setFormatter(_JsonFormatter())
    logger.warning("message dead-lettered", extra=EXTRA)
    line = out.getvalue()
    assert SECRET not in line
    entry = json.loads(line)
    assert entry["msg"] == "message dead-lettered"
    assert entry["routing_key"] == "callback.tingwu?Signature=***"
    assert entry["task_ids"] == ["t1", "http://u/?token=***"]
    assert entry["headers"] == {"x-api-key": "***", "nested": [{"authorization": "***"}]}
    assert entry["raw"] == "password=***"
    assert entry["payload"] == "Payload(url='https://b/o?x-oss-signature=***')"
    assert entry["password"] == "***"
    assert (entry["outcome"], entry["duration_ms"]) == ("dead-lettered", 1.5)


def test_json_line_redacts_message_and_traceback(
    stream: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, handler = stream
    handler.setFormatter(_JsonFormatter())
    try:
        raise ValueError(f"fetch http://b/x?Signature={SECRET}")
    except ValueError:
        logger.exception("failed for %s", f"callback.tingwu?Signature={SECRET}")
    assert SECRET not in out.getvalue()
    assert "Signature=***" in json.loads(out.getvalue())["exc"]


def test_text_line_redacts_every_extra_field(
    stream: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, handler = stream
    handler.setFormatter(_TextFormatter())
    logger.warning("message dead-lettered", extra=EXTRA)
    line = out.getvalue()
    assert SECRET not in line
    assert "routing_key=callback.tingwu?Signature=***" in line
    assert "outcome=dead-lettered" in line
