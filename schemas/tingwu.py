"""Alibaba Cloud Tingwu payloads: v2 GetTaskInfo / callback bodies and the legacy v1 meeting and file APIs."""

from __future__ import annotations

from pydantic import Field

from schemas._vendor import VendorModel

__all__ = ["TingwuData", "TingwuEnvelope"]


class TingwuData(VendorModel):
    TaskId: str | None = None
    TaskKey: str | None = None
    TaskStatus: str | None = None
    ErrorCode: str | None = None
    ErrorMessage: str | None = None
    MeetingJoinUrl: str | None = None
    OutputMp3Path: str | None = None
    OutputMp4Path: str | None = None
    OutputThumbnailPath: str | None = None
    OutputSpectrumPath: str | None = None
    Result: dict[str, str | None] | None = None
    Test: str | None = Field(default=None, description="Console ping: CheckSyncConf..., no TaskId")
    # Legacy v1 (2022-09-30) meeting and file transcription.
    MeetingId: str | None = None
    MeetingKey: str | None = None
    MeetingStatus: str | None = None
    TransId: str | None = None
    TransKey: str | None = None
    TransStatus: str | None = None


class TingwuEnvelope(VendorModel):
    Code: str | None = None
    Message: str | None = None
    RequestId: str | None = None
    Data: TingwuData | None = None
