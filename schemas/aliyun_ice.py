"""Alibaba Cloud ICE payloads: GetSmartHandleJob, Submit*Job, ListSmartJobs and IMS / VOD-style events."""

from __future__ import annotations

from pydantic import Field

from schemas._vendor import VendorModel

__all__ = [
    "IceEvent",
    "IceEventBody",
    "IceInputConfig",
    "IceJobList",
    "IceJobResult",
    "IceListedJob",
    "IceOutputConfig",
    "IceSmartJob",
    "IceSmartJobInfo",
]

# UserData, AiResult, Usage, Output, EditingConfig and JobParameters are JSON inside strings:
# kept as text here, parsed by the adapter only where it reports them.


class IceJobResult(VendorModel):
    AiResult: str | None = Field(default=None, description="ASR/TTS: JSON list of {content, from, to}")
    MediaId: str | None = None
    MediaUrl: str | None = None
    Usage: str | None = Field(default=None, description='TextGenerate only: {"total_tokens": n}')


class IceInputConfig(VendorModel):
    InputFile: str | None = Field(default=None, description="For TextToSpeech, the input text itself")
    JobParameters: str | None = None
    Keyword: str | None = None


class IceOutputConfig(VendorModel):
    Bucket: str | None = None
    Object: str | None = None


class IceSmartJobInfo(VendorModel):
    JobType: str | None = None
    Title: str | None = None
    Description: str | None = None
    UserId: str | None = Field(default=None, description="A string or a number, depending on the API")
    InputConfig: IceInputConfig | None = None
    OutputConfig: IceOutputConfig | None = None
    EditingConfig: str | None = None
    CreateTime: str | None = None
    ModifiedTime: str | None = None


class IceSmartJob(VendorModel):
    """GetSmartHandleJob (JSON, or XML without JobResult) and the Submit*Job answers."""

    RequestId: str | None = None
    JobId: str | None = None
    State: str | None = None
    Output: str | None = None
    UserData: str | None = None
    ErrorCode: str | None = None
    ErrorMessage: str | None = None
    MediaId: str | None = Field(default=None, description="Submit*Job answers only")
    JobResult: IceJobResult | None = None
    SmartJobInfo: IceSmartJobInfo | None = None


class IceListedJob(IceSmartJobInfo):
    JobId: str | None = None
    JobState: str | None = None
    UserData: str | None = None
    ErrorCode: str | None = None
    ErrorMessage: str | None = None


class IceJobList(VendorModel):
    RequestId: str | None = None
    SmartJobList: list[IceListedJob] = Field(default_factory=list)
    NextToken: str | None = None
    MaxResults: str | None = None
    TotalCount: str | None = None


class IceEventBody(VendorModel):
    JobId: str | None = None
    JobType: str | None = None
    Status: str | None = Field(
        default=None, description="Success|Fail in IMS events, success|fail in VOD ones"
    )
    UserData: str | None = None
    ErrorCode: str | None = None
    ErrorMessage: str | None = None
    # VOD-style flat events use the short names.
    Code: str | None = None
    Message: str | None = None


class IceEvent(IceEventBody):
    """An IMS envelope (the job in MessageBody) or a flat VOD-style event (the job at the top)."""

    EventType: str
    EventTime: str | None = None
    UserId: str | None = None
    MessageBody: IceEventBody | None = None
