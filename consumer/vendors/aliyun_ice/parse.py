"""Alibaba Cloud ICE smart jobs: GetSmartHandleJob, Submit*Job, ListSmartJobs (JSON, XML), IMS/VOD events."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Discriminator, JsonValue, Tag

from consumer.core.adapter import (
    Adapter,
    Context,
    Result,
    as_list,
    json_in_string,
    kebab,
    parse_time,
    validate,
    vendor_state,
)
from consumer.core.errors import Rejection
from schemas.aliyun_ice import IceEvent, IceJobList, IceJobResult, IceSmartJob, IceSmartJobInfo
from schemas.job import JobError, JobStatus, JobUpdate

__all__ = ["Payload", "adapter", "detect", "from_xml", "normalize", "updates"]

_STATES = {
    "Created": JobStatus.QUEUED,
    "Executing": JobStatus.RUNNING,
    "Finished": JobStatus.COMPLETED,
    "Failed": JobStatus.FAILED,
}
# IMS envelopes say Success/Fail, VOD-style flat events success/fail.
_EVENT_STATES = {
    "Success": JobStatus.COMPLETED,
    "success": JobStatus.COMPLETED,
    "Fail": JobStatus.FAILED,
    "fail": JobStatus.FAILED,
}
_KINDS = {"ASR": "smart-asr", "TextToSpeech": "tts", "TextGenerate": "text-generate"}
_JOB_KEYS = {"JobId", "SmartJobInfo", "SmartJobList"}
# OpenAPI answers with Format=XML: the JSON object's fields inside a <GetSmartHandleJobResponse> (etc.) root.
_XML_ROOT = re.compile(r"[A-Z][A-Za-z0-9]*Response")


def detect(document: Any) -> bool:
    document = from_xml(document)
    if not isinstance(document, dict):
        return False
    if "EventType" in document:
        return "MessageBody" in document or {"EventTime", "Status"} <= document.keys()
    return not _JOB_KEYS.isdisjoint(document)


def normalize(document: Any, ctx: Context) -> Result:
    document = from_xml(document)
    if not isinstance(document, dict):
        raise Rejection("unknown-format", "ICE body is not an object")
    shape = _shape(document)
    if shape == "event":
        return updates(validate(IceEvent, document, provider="aliyun-ice", what="ICE event"), ctx)
    if shape == "listing":
        return updates(validate(IceJobList, document, provider="aliyun-ice", what="ICE ListSmartJobs"), ctx)
    return updates(validate(IceSmartJob, document, provider="aliyun-ice", what="ICE smart job"), ctx)


def _shape(document: Any) -> str:
    """Which of the ICE models a body (or an already validated model) is."""
    if isinstance(document, IceEvent) or (isinstance(document, dict) and "EventType" in document):
        return "event"
    if isinstance(document, IceJobList) or (isinstance(document, dict) and "SmartJobList" in document):
        return "listing"
    return "job"


# What an ICE body validates into (after from_xml), told apart by its keys as normalize tells them.
Payload = Annotated[
    Annotated[IceEvent, Tag("event")]
    | Annotated[IceJobList, Tag("listing")]
    | Annotated[IceSmartJob, Tag("job")],
    Discriminator(_shape),
]


def updates(payload: IceEvent | IceJobList | IceSmartJob, ctx: Context) -> Result:
    """The job updates of a validated body: one per event or job, one per listed job."""
    if isinstance(payload, IceEvent):
        return [_event(payload, ctx)]
    if isinstance(payload, IceJobList):
        return [
            _update(
                ctx,
                task_id=_require(job.JobId, "ICE SmartJobList entry carries no JobId"),
                state=job.JobState,
                states=_STATES,
                kind=_kind(job.JobType),
                source="aliyun-ice.job-listing",
                user_data=job.UserData,
                code=job.ErrorCode,
                message=job.ErrorMessage,
                created=job.CreateTime,
                reported=job.ModifiedTime,
            )
            for job in payload.SmartJobList
        ]
    return [_job(payload, ctx)]


def from_xml(document: Any) -> Any:
    """The XML form in the JSON form's shape, so that both run the same code; JSON passes unchanged."""
    if not (isinstance(document, dict) and len(document) == 1):
        return document
    ((root, content),) = document.items()
    if not (_XML_ROOT.fullmatch(root) and isinstance(content, dict)):
        return document
    # A JSON array is repeated elements in XML: one entry arrives as an object, none as no element at all.
    if root == "ListSmartJobsResponse":
        content = content | {"SmartJobList": as_list(content.get("SmartJobList"))}
    return content


def _job(job: IceSmartJob, ctx: Context) -> JobUpdate:
    info = job.SmartJobInfo or IceSmartJobInfo()
    result = job.JobResult or IceJobResult()  # the XML variant has none
    results = {
        "AiResult": json_in_string(result.AiResult, ctx),
        "MediaId": result.MediaId or job.MediaId,  # Submit*Job answers name the output media at the top
        "MediaUrl": result.MediaUrl,
        "Usage": json_in_string(result.Usage, ctx),
        "Output": json_in_string(job.Output, ctx),
    }
    return _update(
        ctx,
        task_id=_require(job.JobId or ctx.task_id_hint, "ICE smart job body carries no JobId"),
        state=job.State,
        states=_STATES,
        kind=_kind(info.JobType),
        source="aliyun-ice.smart-job",
        user_data=job.UserData,
        # Output is "{}" when the job has nothing to add to JobResult.
        results={name: value for name, value in results.items() if value not in (None, "", {}, [])},
        code=job.ErrorCode,
        message=job.ErrorMessage,
        created=info.CreateTime,
        reported=info.ModifiedTime,
    )


def _event(event: IceEvent, ctx: Context) -> JobUpdate:
    body = event.MessageBody or event  # a flat VOD-style event carries the job fields at the top
    # Most IMS events (uploads, media assets) are about media, not jobs: without a JobId there is no job.
    task_id = _require(body.JobId or ctx.task_id_hint, f"ICE event {event.EventType[:40]} carries no JobId")
    return _update(
        ctx,
        task_id=task_id,
        state=body.Status,
        states=_EVENT_STATES,
        kind=_kind(body.JobType) if body.JobType else kebab(event.EventType),
        source="aliyun-ice.event",
        user_data=body.UserData,
        code=body.ErrorCode or body.Code,
        message=body.ErrorMessage or body.Message,
        reported=event.EventTime,
    )


def _require(task_id: str | None, why: str) -> str:
    if not task_id:
        raise Rejection("missing-task-id", why)
    return task_id


def _kind(job_type: str | None) -> str:
    if not job_type:
        return "smart-job"
    return _KINDS.get(job_type) or kebab(job_type)


def _update(
    ctx: Context,
    *,
    task_id: str,
    state: str | None,
    states: dict[str, JobStatus],
    kind: str,
    source: str,
    user_data: str | None,
    results: dict[str, JsonValue] | None = None,
    code: str | None = None,
    message: str | None = None,
    created: str | None = None,
    reported: str | None = None,
) -> JobUpdate:
    state = state or ""
    status = vendor_state(states, state, provider="aliyun-ice", what="ICE state")
    reported_at = parse_time(reported)
    return JobUpdate(
        provider="aliyun-ice",
        task_id=task_id,
        status=status,
        provider_status=state,
        kind=kind,
        source=source,
        user_data=json_in_string(user_data, ctx),
        # The generic example sends ErrorCode "" on a Finished job: only a failure has an error.
        error=JobError(code=code or None, message=message or None) if status is JobStatus.FAILED else None,
        results=results or {},
        submitted_at=parse_time(created),
        finished_at=reported_at if status.terminal else None,
        reported_at=reported_at,
        origin=ctx.origin,
    )


adapter = Adapter(provider="aliyun-ice", detect=detect, normalize=normalize)
