"""Tencent Cloud CI: TaskFinish / WorkflowFinish callbacks and the speech-job API responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import JsonValue

from consumer.core.adapter import Adapter, Context, Result, kebab, parse_time, validate, vendor_state
from consumer.core.errors import Rejection
from schemas.job import JobError, JobStatus, JobUpdate
from schemas.tencent_ci import CiJob, CiNotification, CiOperation, CiOutcome, CiWorkflowExecution

__all__ = ["Payload", "adapter", "content", "detect", "normalize", "updates"]

# What a Tencent CI body validates into, once out of its <Response> root (content()).
Payload = CiNotification

_STATUS = {
    "Submitted": JobStatus.QUEUED,
    "Running": JobStatus.RUNNING,
    "Pause": JobStatus.PAUSED,
    "Success": JobStatus.COMPLETED,
    "Failed": JobStatus.FAILED,
    "Cancel": JobStatus.CANCELLED,
}
_KINDS = {"SpeechRecognition": "transcription", "Tts": "tts"}
_BODIES = frozenset({"JobsDetail", "WorkflowExecution"})
_EVENTS = ("TaskFinish", "WorkflowFinish")
_SPEECH_FIELDS = {"AudioTime", "Result", "ObjectName", "DetailObjectName"}
_OUTPUT_FILE_FIELDS = {"Bucket", "Region", "ObjectName", "Md5Info"}


def content(document: Any) -> Any:
    """The body without its <Response> root: XML always has one, the JSON callback none, API-style JSON
    may have it."""
    if isinstance(document, dict) and isinstance(document.get("Response"), dict):
        return document["Response"]
    return document


def detect(document: Any) -> bool:
    body = content(document)
    if not isinstance(body, dict):
        return False
    return bool(body.keys() & _BODIES) or body.get("EventName") in _EVENTS


def normalize(document: Any, ctx: Context) -> Result:
    body = content(document)
    if not isinstance(body, dict) or not body.keys() & _BODIES:
        raise Rejection("unknown-format", "Tencent CI body without JobsDetail or WorkflowExecution")
    return updates(validate(CiNotification, body, provider="tencent-ci", what="Tencent CI body"), ctx)


def updates(body: Payload, ctx: Context) -> Result:
    """The job updates of a validated body: one per job it details, or a workflow's."""
    if body.WorkflowExecution is not None:
        return _workflow(body.WorkflowExecution, ctx)
    # A callback names its event; the speech-job APIs answer with the same JobsDetail but no EventName.
    source = "tencent-ci.task-finish" if body.EventName else "tencent-ci.job-listing"
    return [_job(job, source, ctx) for job in body.JobsDetail]


def _job(job: CiJob, source: str, ctx: Context) -> JobUpdate:
    if not job.JobId:
        raise Rejection("missing-task-id", "Tencent CI JobsDetail without JobId")
    operation = job.Operation or CiOperation()
    return _update(
        job,
        ctx,
        task_id=job.JobId,
        kind=_KINDS.get(job.Tag) or kebab(job.Tag),
        source=source,
        user_data=operation.UserData,
        results=_results(operation),
        submitted_at=parse_time(job.CreationTime),
        started_at=parse_time(job.StartTime),
        finished_at=parse_time(job.EndTime),
    )


def _workflow(run: CiWorkflowExecution, ctx: Context) -> list[JobUpdate]:
    if not run.RunId:
        raise Rejection("missing-task-id", "Tencent CI WorkflowExecution without RunId")
    source = "tencent-ci.workflow-finish"
    tasks: list[JsonValue] = [task.model_dump(mode="json", exclude_none=True) for task in run.Tasks]
    updates = [
        _update(
            run,
            ctx,
            task_id=run.RunId,
            kind="workflow",
            source=source,
            results={"Tasks": tasks},
            submitted_at=parse_time(run.CreateTime),
        )
    ]
    for task in run.Tasks:
        if not task.JobId:  # a node that never ran has no job to track; the run's Tasks still lists it
            continue
        created = parse_time(task.CreateTime)
        updates.append(
            _update(
                task,
                ctx,
                task_id=task.JobId,
                kind=kebab(task.Type),
                source=source,
                submitted_at=created,
                started_at=created,
                finished_at=parse_time(task.EndTime),
            )
        )
    return updates


def _update(
    node: CiOutcome,
    ctx: Context,
    *,
    task_id: str,
    kind: str,
    source: str,
    user_data: str | None = None,
    results: dict[str, JsonValue] | None = None,
    submitted_at: datetime | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> JobUpdate:
    state = node.State or ""
    status = vendor_state(_STATUS, state, provider="tencent-ci", what="Tencent CI State")
    error = None
    # Sub-results carry their own State (a Failed DigitalWatermark in a Success job): only the job's counts.
    if status in (JobStatus.FAILED, JobStatus.CANCELLED):
        error = JobError(code=node.Code, message=node.Message)
    return JobUpdate(
        provider="tencent-ci",
        task_id=task_id,
        status=status,
        provider_status=state,
        kind=kind,
        source=source,
        user_data=user_data,
        error=error,
        results=results or {},
        submitted_at=submitted_at,
        started_at=started_at,
        finished_at=finished_at,
        origin=ctx.origin,
    )


def _results(operation: CiOperation) -> dict[str, JsonValue]:
    results: dict[str, JsonValue] = {}
    if (speech := operation.SpeechRecognitionResult) is not None:
        dumped = speech.model_dump(mode="json", include=_SPEECH_FIELDS)
        results.update({name: value for name, value in dumped.items() if value not in (None, "")})
        if speech.ResultDetail:
            results["ResultDetail"] = [
                s.model_dump(mode="json", exclude_unset=True) for s in speech.ResultDetail
            ]
    if operation.MediaResult is not None and (output_file := operation.MediaResult.OutputFile) is not None:
        results["OutputFile"] = output_file.model_dump(mode="json", include=_OUTPUT_FILE_FIELDS)
    if operation.Output:
        results["Output"] = operation.Output
    # Each Tag reports in its own <TagResult> (SoundHoundResult, PicProcessResult, ...): kept as sent.
    for name, value in (operation.model_extra or {}).items():
        if value and (name.endswith("Result") or name == "ExtractDigitalWatermark"):
            results[name] = value
    return results


adapter = Adapter(provider="tencent-ci", detect=detect, normalize=normalize)
