"""Huawei Cloud MetaStudio async TTS: ShowAsyncTtsJob bodies, TTS callbacks and API error bodies."""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from consumer.core.adapter import Adapter, Context, Result, validate, vendor_state
from consumer.core.errors import Rejection
from schemas.huawei_metastudio import MetaStudioError, MetaStudioTtsCallback, MetaStudioTtsJob
from schemas.job import JobError, JobStatus, JobUpdate, Provider

__all__ = ["adapter", "detect", "normalize"]

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
    if "status" in document:
        callback = validate(MetaStudioTtsCallback, document, provider=_PROVIDER, what="MetaStudio callback")
        what, job_id, state = "callback", callback.job_id, callback.status
        status, results, error = _callback(callback)
    elif "state" in document:
        job = validate(MetaStudioTtsJob, document, provider=_PROVIDER, what="MetaStudio TTS job")
        what, job_id, state = "ShowAsyncTtsJob", job.job_id, job.state
        status, results, error = _poll(job)
    elif "error_code" in document:
        failure = validate(MetaStudioError, document, provider=_PROVIDER, what="MetaStudio error")
        raise Rejection("vendor-error", f"MetaStudio error {failure.error_code}: {failure.error_msg or ''}")
    else:
        raise Rejection("unknown-format", "MetaStudio body without state, status or error_code")
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
