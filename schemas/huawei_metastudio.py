"""Huawei Cloud MetaStudio async TTS payloads: ShowAsyncTtsJob, the TTS callback and the API error body."""

from __future__ import annotations

from pydantic import Field

from schemas._vendor import VendorModel

__all__ = ["MetaStudioError", "MetaStudioTtsCallback", "MetaStudioTtsJob"]


class MetaStudioTtsJob(VendorModel):
    """ShowAsyncTtsJob 200 body; the job id is in the request path, not here."""

    state: str
    code: str | None = Field(
        default=None, description='"0" is success; anything else fails even with HTTP 200'
    )
    message: str | None = None
    job_id: str | None = Field(default=None, description="Only when a relay added it")
    audio_file_url: str | None = None
    audio_info_file_url: str | None = None
    audio_srt_file_url: str | None = None
    audio_action_file_url: str | None = None


class MetaStudioTtsCallback(VendorModel):
    status: str
    job_id: str | None = None
    audio_file_download_url: str | None = None
    subtitle_file_download_url: str | None = None
    audio_duration: float | None = Field(default=None, description="Seconds")
    error_code: str | None = None
    error_msg: str | None = None


class MetaStudioError(VendorModel):
    """HTTP 400/500 body; error_code is MSS.000000001..4."""

    error_code: str
    error_msg: str | None = None
    request_id: str | None = None
