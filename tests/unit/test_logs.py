"""Log lines, JSON and text, never carry a secret: not in the message, a traceback or any extra field."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from consumer.runtime.logs import _JsonFormatter, _Sink, _TextFormatter, outcome, setup_logging

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


@pytest.fixture
def json_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """setup_logging's JSON handler as the root's only one, writing to a buffer; the root restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    setup_logging("json", "INFO")
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)
    _Sink.handler = None


def json_handler_alone() -> None:
    """Only setup_logging's handler on the root, so outcome() takes its fast path: pytest adds its own
    handlers to each test phase."""
    assert _Sink.handler is not None
    logging.getLogger().handlers[:] = [_Sink.handler]


def test_an_outcome_line_is_the_line_a_record_would_make(json_sink: io.StringIO) -> None:
    json_handler_alone()
    logger = logging.getLogger("speechjobs.test-outcome")
    fields = {"provider": "tingwu", "status": 200, "confirm_ms": None, "duration_ms": 1.25}
    outcome(logger, "callback 200", fields)
    logger.info("callback 200", extra=fields)
    fast, slow = (json.loads(line) for line in json_sink.getvalue().splitlines())
    assert {k: v for k, v in fast.items() if k != "ts"} == {k: v for k, v in slow.items() if k != "ts"}
    assert fast["logger"] == "speechjobs.test-outcome"
    assert fast["level"] == "info"
    assert fast["status"] == 200
    assert fast["confirm_ms"] is None
    assert len(fast["ts"]) == len("2026-11-30T09:15:30.811+00:00")
    assert fast["ts"].endswith("+00:00")


def test_an_outcome_line_redacts_like_any_other(json_sink: io.StringIO) -> None:
    json_handler_alone()
    outcome(logging.getLogger("speechjobs.test-outcome"), f"dropped ?token={SECRET}", dict(EXTRA))
    line = json_sink.getvalue()
    assert SECRET not in line
    entry = json.loads(line)
    assert entry["routing_key"] == "callback.tingwu?Signature=***"
    assert entry["password"] == "***"
    assert entry["headers"]["x-api-key"] == "***"


def test_an_outcome_below_the_level_writes_nothing(json_sink: io.StringIO) -> None:
    json_handler_alone()
    logger = logging.getLogger("speechjobs.test-outcome-quiet")
    logger.setLevel(logging.WARNING)
    outcome(logger, "callback 200", {"status": 200})
    assert json_sink.getvalue() == ""


def test_with_another_handler_an_outcome_is_a_record(
    json_sink: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outcome(logging.getLogger("speechjobs.test-outcome"), "callback 404", {"status": 404})
    [record] = [r for r in caplog.records if r.name == "speechjobs.test-outcome"]
    assert (record.getMessage(), record.__dict__["status"]) == ("callback 404", 404)
    assert json.loads(json_sink.getvalue())["status"] == 404  # the JSON handler still wrote it
