"""Huawei Cloud MetaStudio async TTS: ShowAsyncTtsJob bodies, TTS callbacks and API error bodies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, JsonValue, Tag

from consumer.core.adapter import Adapter, Context, Result, validate, vendor_state
from consumer.core.errors import Rejection
from schemas.huawei_metastudio import MetaStudioError, MetaStudioTtsCallback, MetaStudioTtsJob
from schemas.job import JobError, JobStatus, JobUpdate, Provider

__all__ = ["Payload", "adapter", "detect", "normalize", "updates"]

_PROVIDER: Provider = "huawei-metastudio"
# Polling and the callback use different words for the same states.
_POLL_STATES = {
    "WAITING": JobStatus.QUEUED,
    "PROCESSING": JobStatus.RUNNING,
    "SUCCEED": JobStatus.COMPLETED,
    "FAILED": JobStatus.FAILED,
}
_CALLBACK_STATES = {"WAITING": JobStatus.QUEUED, "FINISHED": JobStatus.COMPLETED, "ERROR": JobStatus.FAILED}
_CALLBACK_RESULTS = {"audio_file_download_url", "subtitle_file_download_url", "audio_duration"}
_POLL_URLS = ("audio_file_url", "audio_info_file_url", "audio_srt_file_url", "audio_action_file_url")


def detect(document: Any) -> bool:
    if not isinstance(document, dict):
        return False
    if "state" in document:
        return "code" in document or any(str(key).startswith("audio_") for key in document)
    if "status" in document:
        return "job_id" in document
    code = document.get("error_code")
    return isinstance(code, str) and code.startswith("MSS.") and "error_msg" in document


def normalize(document: Any, ctx: Context) -> Result:
    if not isinstance(document, dict):
        raise Rejection("unknown-format", "MetaStudio body is not an object")
    shape = _shape(document)
    if shape == "callback":
        payload: MetaStudioTtsCallback | MetaStudioTtsJob | MetaStudioError = validate(
            MetaStudioTtsCallback, document, provider=_PROVIDER, what="MetaStudio callback"
        )
    elif shape == "job":
        payload = validate(MetaStudioTtsJob, document, provider=_PROVIDER, what="MetaStudio TTS job")
    elif shape == "error":
        payload = validate(MetaStudioError, document, provider=_PROVIDER, what="MetaStudio error")
    else:
        raise Rejection("unknown-format", "MetaStudio body without state, status or error_code")
    return updates(payload, ctx)


def _shape(document: Any) -> str | None:
    """Which of the MetaStudio models a body (or an already validated model) is; None for none."""
    if isinstance(document, MetaStudioTtsCallback | MetaStudioTtsJob | MetaStudioError):
        return {MetaStudioTtsCallback: "callback", MetaStudioTtsJob: "job"}.get(type(document), "error")
    if not isinstance(document, dict):
        return None
    if "status" in document:
        return "callback"
    if "state" in document:
        return "job"
    return "error" if "error_code" in document else None


# What a MetaStudio body validates into, told apart by its keys as normalize tells them.
Payload = Annotated[
    Annotated[MetaStudioTtsCallback, Tag("callback")]
    | Annotated[MetaStudioTtsJob, Tag("job")]
    | Annotated[MetaStudioError, Tag("error")],
    Discriminator(_shape),
]


def updates(payload: MetaStudioTtsCallback | MetaStudioTtsJob | MetaStudioError, ctx: Context) -> Result:
    """The job update of a validated body; an API error body is a vendor-error rejection."""
    if isinstance(payload, MetaStudioError):
        raise Rejection("vendor-error", f"MetaStudio error {payload.error_code}: {payload.error_msg or ''}")
    if isinstance(payload, MetaStudioTtsCallback):
        what, job_id, state = "callback", payload.job_id, payload.status
        status, results, error = _callback(payload)
    else:
        what, job_id, state = "ShowAsyncTtsJob", payload.job_id, payload.state
        status, results, error = _poll(payload)
    # The poll answer never names its job (the id is in the request path): the relay's header must.
    task_id = job_id or ctx.task_id_hint
    if not task_id:
        raise Rejection(
            "missing-task-id", f"MetaStudio {what} body carries no job id; send it in the x-task-id header"
        )
    source = "huawei-metastudio.callback" if what == "callback" else "huawei-metastudio.async-tts-job"
    return [
        JobUpdate(
            provider=_PROVIDER,
            task_id=task_id,
            status=status,
            provider_status=state,
            kind="tts",
            source=source,
            error=error,
            results=results,
            origin=ctx.origin,
        )
    ]


def _poll(job: MetaStudioTtsJob) -> tuple[JobStatus, dict[str, JsonValue], JobError | None]:
    status = vendor_state(_POLL_STATES, job.state, provider=_PROVIDER, what="MetaStudio state")
    code = job.code if job.code not in (None, "", "0") else None
    if code is not None:  # a 200 body can still be a failure: a non-zero code outranks the state
        status = JobStatus.FAILED
    results: dict[str, JsonValue] = {name: url for name in _POLL_URLS if (url := getattr(job, name))}
    error = JobError(code=code, message=job.message or None) if status is JobStatus.FAILED else None
    return status, results, error


def _callback(callback: MetaStudioTtsCallback) -> tuple[JobStatus, dict[str, JsonValue], JobError | None]:
    status = vendor_state(
        _CALLBACK_STATES, callback.status, provider=_PROVIDER, what="MetaStudio callback status"
    )
    dumped = callback.model_dump(include=_CALLBACK_RESULTS)
    results: dict[str, JsonValue] = {name: value for name, value in dumped.items() if value not in (None, "")}
    error = None
    if status is JobStatus.FAILED:
        error = JobError(code=callback.error_code or None, message=callback.error_msg or None)
    return status, results, error


adapter = Adapter(provider=_PROVIDER, detect=detect, normalize=normalize)
