"""Alibaba Cloud Tingwu: v2 task bodies (poll, HTTP callback, EventBridge data) and v1 meeting/file bodies."""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from consumer.core.adapter import Adapter, Context, Ignored, Result, unescape_amp, validate, vendor_state
from consumer.core.errors import Rejection
from schemas.job import JobError, JobStatus, JobUpdate
from schemas.tingwu import TingwuData, TingwuEnvelope

__all__ = ["Payload", "adapter", "detect", "normalize", "updates"]

# What a Tingwu body validates into: every form shares the envelope.
Payload = TingwuEnvelope

_STATUS = {
    "NEW": JobStatus.QUEUED,
    "ONGOING": JobStatus.RUNNING,
    "PRE_COMPLETE": JobStatus.RUNNING,  # v1: transcription over, post-meeting extraction running
    "PAUSED": JobStatus.PAUSED,
    "COMPLETED": JobStatus.COMPLETED,
    "FAILED": JobStatus.FAILED,
    "INVALID": JobStatus.FAILED,
}
_DATA_KEYS = {"TaskId", "TaskStatus", "Test", "MeetingId", "MeetingStatus", "TransId", "TransStatus"}
_OUTPUT_PATHS = ("OutputMp3Path", "OutputMp4Path", "OutputThumbnailPath", "OutputSpectrumPath")


def detect(document: Any) -> bool:
    data = document.get("Data") if isinstance(document, dict) else None
    return isinstance(data, dict) and not _DATA_KEYS.isdisjoint(data)


def normalize(document: Any, ctx: Context) -> Result:
    return updates(validate(TingwuEnvelope, document, provider="tingwu", what="Tingwu body"), ctx)


def updates(envelope: Payload, ctx: Context) -> Result:
    """The job update of a validated body (or Ignored for a console test ping)."""
    if envelope.Code not in (None, "0"):
        raise Rejection("vendor-error", f"Tingwu error {envelope.Code}: {envelope.Message or ''}")
    data = envelope.Data
    if data is None:
        raise Rejection("unknown-format", "Tingwu body without Data")
    if data.Test is not None and not (data.TaskId or data.MeetingId or data.TransId):
        return Ignored("Tingwu console test ping")
    task_id, task_key, vendor_status, source = _identity(data, ctx)
    status = vendor_state(_STATUS, vendor_status, provider="tingwu", what="Tingwu task status")
    error = None
    if status is JobStatus.FAILED:
        error = JobError(code=data.ErrorCode, message=data.ErrorMessage)
    return [
        JobUpdate(
            provider="tingwu",
            task_id=task_id,
            status=status,
            provider_status=vendor_status,
            kind="meeting" if data.MeetingJoinUrl or data.MeetingId else "transcription",
            source=source,
            task_key=task_key,
            error=error,
            results=_results(data),
            origin=ctx.origin,
        )
    ]


def _identity(data: TingwuData, ctx: Context) -> tuple[str, str | None, str, str]:
    task_id: str | None
    status: str | None
    if data.MeetingId or data.MeetingStatus:
        # v1 CreateMeetingTrans answers without a status: the meeting is NEW.
        task_id, key, status, source = (
            data.MeetingId,
            data.MeetingKey,
            data.MeetingStatus or "NEW",
            "v1-meeting",
        )
    elif data.TransId or data.TransStatus:
        task_id, key, status, source = data.TransId, data.TransKey, data.TransStatus, "v1-file-trans"
    else:
        task_id, key, status, source = data.TaskId, data.TaskKey, data.TaskStatus, "task"
    task_id = task_id or ctx.task_id_hint
    if not task_id:
        raise Rejection("missing-task-id", "Tingwu body without TaskId")
    return task_id, key, status or "", f"tingwu.{source}"


def _results(data: TingwuData) -> dict[str, JsonValue]:
    results: dict[str, JsonValue] = {}
    for name in _OUTPUT_PATHS:
        if url := getattr(data, name):
            results[name] = unescape_amp(url)
    for name, url in (data.Result or {}).items():
        if url:
            results[name] = unescape_amp(url)
    return results


adapter = Adapter(provider="tingwu", detect=detect, normalize=normalize)
