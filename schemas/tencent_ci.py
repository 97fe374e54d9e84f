"""Tencent Cloud CI payloads: TaskFinish and WorkflowFinish callbacks and the speech-job API responses."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field, JsonValue

from schemas._vendor import VendorModel

__all__ = [
    "CiJob",
    "CiMediaResult",
    "CiNotification",
    "CiOperation",
    "CiOutcome",
    "CiOutputFile",
    "CiSentence",
    "CiSpeechResult",
    "CiWorkflowExecution",
    "CiWorkflowTask",
    "Many",
]

T = TypeVar("T")


def _as_list(value: Any) -> Any:
    # XML gives one child as an object, several as a list and an empty element as None;
    # Tencent's JSON is converted from the XML, so it collapses the same way.
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


Many = Annotated[list[T], BeforeValidator(_as_list)]


class CiOutcome(VendorModel):
    State: str | None = None
    # Only meaningful when State is Failed; on success Code is "Success" and Message anything.
    Code: str | None = None
    Message: str | None = None


class CiSentence(VendorModel):
    Words: Many[dict[str, JsonValue]] = Field(default_factory=list)


class CiSpeechResult(VendorModel):
    AudioTime: float | None = None
    Result: str | None = None
    ObjectName: str | None = None
    DetailObjectName: str | None = None
    ResultDetail: Many[CiSentence] = Field(default_factory=list, description="Empty when ResTextFormat=0")


class CiOutputFile(VendorModel):
    Bucket: str | None = None
    Region: str | None = None
    ObjectName: Many[str] = Field(default_factory=list)
    Md5Info: Many[dict[str, str | None]] = Field(default_factory=list)


class CiMediaResult(VendorModel):
    OutputFile: CiOutputFile | None = None


class CiOperation(VendorModel):
    """Per-Tag contents; other children (TtsConfig, MediaInfo, SoundHoundResult, ...) stay as extras."""

    UserData: str | None = None
    Output: dict[str, JsonValue] | None = None
    SpeechRecognitionResult: CiSpeechResult | None = None
    MediaResult: CiMediaResult | None = None


class CiJob(CiOutcome):
    JobId: str | None = None
    Tag: str
    CreationTime: str | None = None
    StartTime: str | None = None
    EndTime: str | None = Field(default=None, description="'-' while the job is not finished")
    Operation: CiOperation | None = None


class CiWorkflowTask(CiOutcome):
    Type: str
    JobId: str | None = None
    Name: str | None = None
    CreateTime: str | None = None
    EndTime: str | None = None
    TemplateId: str | None = None
    TemplateName: str | None = None


class CiWorkflowExecution(CiOutcome):
    RunId: str | None = None
    WorkflowId: str | None = None
    WorkflowName: str | None = None
    CreateTime: str | None = None
    Tasks: Many[CiWorkflowTask] = Field(default_factory=list)


class CiNotification(VendorModel):
    """The content of <Response> (or the JSON callback without it)."""

    EventName: str | None = None
    JobsDetail: Many[CiJob] = Field(default_factory=list)
    WorkflowExecution: CiWorkflowExecution | None = None
