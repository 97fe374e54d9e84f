"""The AsyncAPI 3 document of every message speechjobs takes and sends, built from the code's own models."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, get_args
from urllib.parse import urlsplit

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema
from pydantic_settings import BaseSettings

# The kind header's cap is the publisher's own rule; a copy here could drift from it unnoticed.
from consumer.amqp.publisher import MAX_KIND_CHARS
from consumer.core.contract import (
    CHANNELS,
    CONVERTED_HEADERS,
    DEAD_LETTER_PROVIDER,
    DEAD_LETTERED_AT,
    DELIVERIES,
    DELIVERY_COUNT,
    DROPPED_HEADERS,
    ERROR,
    INBOUND_HEADERS,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    POLLED_AT,
    PROVIDER,
    REASON,
    RECEIVED_AT,
    REPLAYS,
    TASK_ID,
    TRACEPARENT,
    VERDICT,
    VERDICT_HEADERS,
)
from consumer.core.errors import Reason
from consumer.core.state import event_id
from consumer.settings import AmqpSettings, ConsumerSettings, LimitsSettings
from consumer.vendors.aliyun_ice.parse import Payload as IcePayload
from consumer.vendors.huawei_metastudio.parse import Payload as MetaStudioPayload
from consumer.vendors.tencent_ci.parse import Payload as CiPayload
from consumer.vendors.tingwu.parse import Payload as TingwuPayload
from schemas.event import SCHEMA_VERSION, JobEvent
from schemas.job import PROVIDERS, JobError, JobStatus, Provider, TrackRequest
from schemas.tencent_ci import Many

__all__ = ["AMQP_BINDING_VERSION", "ASYNCAPI_VERSION", "document", "render"]

ASYNCAPI_VERSION: Final = "3.0.0"
AMQP_BINDING_VERSION: Final = "0.3.0"

_SCHEMAS = "#/components/schemas/"
_PERSISTENT = 2  # AMQP delivery mode
_TRACEPARENT_EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_ONE_OR_MANY = get_args(Many)[1].func


class _VendorJsonSchema(GenerateJsonSchema):
    """What the vendor models accept where pydantic's schema says less, so that real bodies validate."""

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        # VendorModel takes a number for text, and pydantic text for a number: vendors mix 0 and "0", and
        # XML has nothing but text.
        return super().str_schema(schema) | {"type": ["string", "number"]}

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return super().float_schema(schema) | {"type": ["number", "string"]}

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return super().int_schema(schema) | {"type": ["integer", "string"]}

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        json_schema = super().function_before_schema(schema)
        # Tencent CI's lists: a single element arrives without its list, and none as null (XML, and the
        # JSON made from it).
        if schema["function"]["function"] is _ONE_OR_MANY and "items" in json_schema:
            return {"anyOf": [json_schema["items"], json_schema, {"type": "null"}]}
        return json_schema

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        json_schema = super().tagged_union_schema(schema)
        # Told apart by a function of their keys; but the models are open and their fields mostly optional,
        # so one body can match several: oneOf would refuse it.
        if "oneOf" in json_schema:
            json_schema["anyOf"] = json_schema.pop("oneOf")
        return json_schema


@dataclass(frozen=True, slots=True)
class _Vendor:
    title: str
    payload: Any  # what `pydantic.TypeAdapter` takes: the parser's Payload type
    content_type: str  # the usual one; the body, not content_type, decides how it is read
    bodies: str


# Indexed by every provider, so that a new provider without a description fails to generate.
_VENDORS: Final[dict[Provider, _Vendor]] = {
    "tingwu": _Vendor(
        "Alibaba Cloud Tingwu",
        TingwuPayload,
        "application/json",
        "JSON: v2 `GetTaskInfo` answers and callbacks (HTTP, or EventBridge CloudEvents whose `data` is the "
        "same body), and legacy v1 meeting/file bodies.",
    ),
    "tencent-ci": _Vendor(
        "Tencent Cloud CI",
        CiPayload,
        "application/xml",
        "XML or JSON: `TaskFinish` / `WorkflowFinish` callbacks with one or many `JobsDetail`, and "
        "`DescribeSpeechJobs` / `DescribeSpeechJob` / `CreateSpeechJobs` answers. The schema is of the "
        "content of the `<Response>` root element (XML always has it, API-style JSON may).",
    ),
    "huawei-metastudio": _Vendor(
        "Huawei Cloud MetaStudio",
        MetaStudioPayload,
        "application/json",
        "JSON: async-TTS callbacks and `ShowAsyncTtsJob` answers; the answers carry no job id, so their "
        f"producer sets `{TASK_ID}`. The API's error body is dead-lettered as `vendor-error`.",
    ),
    "aliyun-ice": _Vendor(
        "Alibaba Cloud ICE",
        IcePayload,
        "application/json",
        "JSON or XML: `GetSmartHandleJob`, `Submit*Job` and `ListSmartJobs` answers, and IMS event "
        "envelopes. The schema is of the JSON form; XML has one `<...Response>` root element around it.",
    ),
}

# Indexed by every name in INBOUND_HEADERS, so that a new header without a description fails to generate.
_INBOUND_HEADERS: Final[dict[str, dict[str, Any]]] = {
    PROVIDER: {
        "type": "string",
        "enum": list(PROVIDERS),
        "description": "The provider. Wins over the routing key and the body's shape; a value naming no "
        "provider is dead-lettered as `unknown-provider`.",
    },
    TASK_ID: {
        "type": "string",
        "description": "The job's id, for bodies that carry none (MetaStudio's `ShowAsyncTtsJob` answers, "
        "an id taken from a callback URL).",
    },
    TRACEPARENT: {
        "type": "string",
        "description": "W3C trace context (version 00), carried to the job's event; an invalid one is not.",
        "examples": [_TRACEPARENT_EXAMPLE],
    },
    RECEIVED_AT: {
        "type": "string",
        "format": "date-time",
        "description": "When the receiver took the HTTP callback (ISO 8601, UTC).",
    },
    POLLED_AT: {
        "type": "string",
        "format": "date-time",
        "description": "When the poller got the vendor's answer (ISO 8601, UTC).",
    },
}


def document() -> dict[str, Any]:
    """The AsyncAPI document: the inbound, events and dead-letter exchanges, from the settings' defaults."""
    amqp = _defaults(AmqpSettings)
    consumer = _defaults(ConsumerSettings)
    components: dict[str, Any] = {}
    schemas = {
        "InboundHeaders": _inbound_headers(consumer),
        "CloudEvent": _cloudevent(),
        "TrackRequest": _schema(TrackRequest, components),
        "JobEvent": _job_event_schema(components),
        "EventHeaders": _event_headers(),
        "DeadLetterHeaders": _dead_letter_headers(),
        "BrokerDeadLetterHeaders": _broker_dead_letter_headers(),
        **{
            _name(p, "Payload"): _schema(_VENDORS[p].payload, components, generator=_VendorJsonSchema)
            for p in PROVIDERS
        },
    }
    for name, schema in schemas.items():
        _add(components, name, schema)
    notifications = [c for c in CHANNELS if c != "track"]
    outcomes = _outcomes()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "speechjobs",
            "version": str(SCHEMA_VERSION),
            "description": _overview(amqp, consumer),
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {"broker": _server(amqp)},
        "channels": {
            "notifications": {
                "address": "{channel}.{provider}",
                "title": "Vendor notifications",
                "description": "A vendor's notification or status answer, as received. The consumer's queue "
                "is bound with `#`, so any routing key arrives; it is a hint only: the provider is the "
                f"`{PROVIDER}` header's, else the routing key's, else recognised from the body's shape.\n\n"
                + _limits(),
                "parameters": {
                    "channel": {
                        "enum": notifications,
                        "description": "How the vendor reported it: `callback` (HTTP callbacks, from "
                        "`speechjobs receive`), `mq` (the vendor's message queue or EventBridge, from a "
                        "relay), `poll` (the vendor's status API, from `speechjobs poll`).",
                    },
                    "provider": {
                        "enum": [*PROVIDERS, "unknown"],
                        "description": f"The provider; `unknown` when the producer cannot tell (then the "
                        f"`{PROVIDER}` header or the body's shape decides).",
                    },
                },
                "messages": {_name(p, "", lower=True): {"$ref": _message_ref(p)} for p in PROVIDERS},
                "bindings": _exchange(amqp["inbound_exchange"], "topic"),
                "x-speechjobs-limits": _defaults(LimitsSettings),
            },
            "track": {
                "address": "track.{provider}",
                "title": "Jobs to poll",
                "description": "A job its submitter wants polled (`speechjobs track` publishes these): "
                "stored as queued, then polled until it is terminal. Same exchange as the notifications.",
                "parameters": {"provider": {"enum": list(PROVIDERS), "description": "The job's provider."}},
                "messages": {"trackRequest": {"$ref": "#/components/messages/trackRequest"}},
                "bindings": _exchange(amqp["inbound_exchange"], "topic"),
            },
            "events": {
                "address": "job.{outcome}",
                "title": "Job events",
                "description": "One event per job, when it first reaches a terminal state; a later, "
                "conflicting terminal state is recorded in the job's history and publishes nothing. "
                "Subscribers bind their own queues, e.g. with `job.*`. An event no binding matches goes to "
                f"the alternate exchange `{amqp['events_unrouted']}` (channel `unroutedEvents`).",
                "parameters": {
                    "outcome": {
                        "enum": [o.removeprefix("job.") for o in outcomes],
                        "description": "completed, or failed (status failed or cancelled).",
                    }
                },
                "messages": {_camel(o): {"$ref": f"#/components/messages/{_camel(o)}"} for o in outcomes},
                "bindings": _exchange(amqp["events_exchange"], "topic"),
            },
            "unroutedEvents": {
                "address": None,
                "title": "Unrouted job events",
                "description": f"The alternate exchange of `{amqp['events_exchange']}`: events that no "
                f"subscriber's binding matched, kept in the queue `{amqp['events_unrouted']}` (at most "
                f"{amqp['events_unrouted_max_length']}, the oldest dropped first) instead of being lost "
                "or returned.",
                "messages": {_camel(o): {"$ref": f"#/components/messages/{_camel(o)}"} for o in outcomes},
                "bindings": _exchange(amqp["events_unrouted"], "fanout"),
            },
            "deadLetters": {
                "address": None,
                "title": "Dead letters",
                "description": "What could not be processed, with its body byte for byte, waiting in the "
                f"queue `{consumer['dead_letter_queue']}` for an operator: `speechjobs dlq list / show / "
                "replay / purge` (docs/dead-letters.md). The routing key is the original one, signatures "
                "redacted; the exchange is fanout, so it plays no part in routing.",
                "messages": {
                    "deadLetter": {"$ref": "#/components/messages/deadLetter"},
                    "brokerDeadLetter": {"$ref": "#/components/messages/brokerDeadLetter"},
                },
                "bindings": _exchange(amqp["dead_letter_exchange"], "fanout"),
            },
        },
        "operations": {
            "receiveNotifications": {
                "action": "receive",
                "channel": {"$ref": "#/channels/notifications"},
                "title": "Normalize notifications",
                "description": _consumed(consumer)
                + " Each becomes job updates; a job's first terminal state publishes its event.",
                "messages": [
                    {"$ref": f"#/channels/notifications/messages/{_name(p, '', lower=True)}"}
                    for p in PROVIDERS
                ],
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
            },
            "receiveTrackRequests": {
                "action": "receive",
                "channel": {"$ref": "#/channels/track"},
                "title": "Store jobs to poll",
                "description": _consumed(consumer),
                "messages": [{"$ref": "#/channels/track/messages/trackRequest"}],
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
            },
            "publishEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/events"},
                "title": "Publish job events",
                "description": "At least once. The event is published (persistent, mandatory) and its "
                "confirm awaited before the input that caused it is acked, and published again when a "
                "redelivery finds it unconfirmed; so a subscriber may see an event twice and deduplicates "
                "on `event_id` (also the AMQP `message_id`): a UUIDv5 of provider, task id and status, the "
                "same for every copy of the same transition.",
                "messages": [{"$ref": f"#/channels/events/messages/{_camel(o)}"} for o in outcomes],
                "bindings": _publishing(),
            },
            "publishDeadLetters": {
                "action": "send",
                "channel": {"$ref": "#/channels/deadLetters"},
                "title": "Dead-letter what cannot be processed",
                "description": "The input is acked only once the broker confirmed its dead letter; one bad "
                "message never fails or delays the rest of its batch.",
                "messages": [{"$ref": "#/channels/deadLetters/messages/deadLetter"}],
                "bindings": _publishing(),
            },
        },
        "components": {
            "schemas": dict(sorted(components.items())),
            "messages": _messages(outcomes),
        },
    }


def render() -> str:
    """The document as committed in docs/asyncapi.json."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def _defaults(settings: type[BaseSettings]) -> dict[str, Any]:
    # The class's defaults, never the environment's: the document must be the same wherever it is built.
    return {name: field.default for name, field in settings.model_fields.items()}


def _env(settings: type[BaseSettings], name: str) -> str:
    return f"{settings.model_config.get('env_prefix', '')}{name.upper()}"


def _server(amqp: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(amqp["amqp_url"].get_secret_value())
    return {
        "host": "{host}",
        "protocol": "amqp",
        "protocolVersion": "0.9.1",
        "title": "RabbitMQ",
        "description": f"The broker of `{_env(AmqpSettings, 'amqp_url')}` (amqps:// for TLS); every "
        "exchange below is declared durable by each process that uses it, at start.",
        "variables": {
            "host": {
                "default": f"{url.hostname}:{url.port}",
                "description": f"Host and port of `{_env(AmqpSettings, 'amqp_url')}`.",
            }
        },
    }


def _exchange(name: str, kind: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {"name": name, "type": kind, "durable": True, "autoDelete": False, "vhost": "/"},
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _publishing() -> dict[str, Any]:
    return {
        "amqp": {
            "deliveryMode": _PERSISTENT,
            "mandatory": True,
            "timestamp": True,
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _consumed(consumer: dict[str, Any]) -> str:
    return (
        f"Consumed from the queue `{consumer['inbound_queue']}` ({consumer['queue_type']}, bound with `#`) "
        "by `speechjobs run`, acked only once its effects are written and confirmed. Input that can never "
        "be processed is dead-lettered at once; a message that keeps failing for other reasons, after "
        f"{consumer['max_deliveries']} deliveries, as `processing-failed`."
    )


def _limits() -> str:
    rules = "\n".join(
        f"- `{_env(LimitsSettings, name)}` = {value}: {LimitsSettings.model_fields[name].description}"
        for name, value in _defaults(LimitsSettings).items()
    )
    return f"Every body is held to these limits (the defaults; `x-speechjobs-limits` lists them):\n{rules}"


def _overview(amqp: dict[str, Any], consumer: dict[str, Any]) -> str:
    return (
        "Cloud speech-job notifications in, one deduplicated `job.completed` / `job.failed` event per job "
        "out.\n\n"
        f"- Producers (the callback receiver, the poller, relays) publish vendor bodies unchanged to the "
        f"topic exchange `{amqp['inbound_exchange']}` with routing keys `<channel>.<provider>` and the "
        f"headers of `InboundHeaders`; `track.<provider>` asks for a job to be polled.\n"
        f"- `speechjobs run` normalizes them, keeps each job's state monotonic in MongoDB and publishes "
        f"each job's terminal event to the topic exchange `{amqp['events_exchange']}`, at least once "
        "(deduplicate on `event_id`).\n"
        f"- What it cannot process goes to the fanout exchange `{amqp['dead_letter_exchange']}` with the "
        f"reason in `{REASON}`, for `speechjobs dlq` (docs/dead-letters.md).\n\n"
        "Exchange and queue names are the defaults of their `SPEECHJOBS_*` settings (docs/configuration.md)."
    )


def _inbound_headers(consumer: dict[str, Any]) -> dict[str, Any]:
    properties = {name: copy.deepcopy(_INBOUND_HEADERS[name]) for name in INBOUND_HEADERS}
    properties[DELIVERY_COUNT] = {
        "type": "integer",
        "description": "The broker's (quorum queues), not a producer's: earlier deliveries of the message. "
        f"After {consumer['max_deliveries']} a message that keeps failing is dead-lettered.",
    }
    return {
        "type": "object",
        "description": "Headers a producer may set on an inbound message; all are optional. Other headers "
        "are kept, and travel with a dead letter.",
        "properties": properties,
        "patternProperties": {
            "^cloud[Ee]vents[:_]": {
                "type": "string",
                "description": "A CloudEvents attribute in AMQP binary mode (`cloudEvents:specversion`, "
                "...): the body is then the event's data.",
            }
        },
        "additionalProperties": True,
    }


def _cloudevent() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A CloudEvents envelope in structured mode (EventBridge and other relays on the mq "
        "channel): unwrapped, and its `data` (or `data_base64`) read as the vendor's body.",
        "required": ["specversion"],
        "properties": {
            "specversion": {"type": "string"},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"type": "string"},
            "datacontenttype": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "data": {"description": "The vendor's body, or its text."},
            "data_base64": {"type": "string", "contentEncoding": "base64"},
        },
        "additionalProperties": True,
    }


def _event_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The AMQP headers of an event, for routing and filtering without reading the body.",
        "required": ["provider"],
        "properties": {
            "provider": {"type": "string", "enum": list(PROVIDERS), "description": "The job's provider."},
            "kind": {
                "type": "string",
                "maxLength": MAX_KIND_CHARS,
                "description": f"The job's kind; left out when longer than {MAX_KIND_CHARS} characters.",
            },
            TRACEPARENT: {
                "type": "string",
                "description": "W3C trace context (version 00) continuing the trace of the input that "
                "completed the job; absent when it had none.",
                "examples": [_TRACEPARENT_EXAMPLE],
            },
        },
        "additionalProperties": False,
    }


def _dead_letter_headers() -> dict[str, Any]:
    text, names = {"type": "string"}, {"type": "array", "items": {"type": "string"}}
    properties: dict[str, dict[str, Any]] = {
        REASON: {
            "type": "string",
            "enum": list(get_args(Reason)),
            "description": "The reason class; docs/dead-letters.md says what each means and how to fix it.",
        },
        ERROR: text | {"description": "A short message, URL signatures and credentials removed."},
        DEAD_LETTER_PROVIDER: text | {"description": "The provider, when it was known."},
        DEAD_LETTERED_AT: text | {"format": "date-time", "description": "When (ISO 8601, UTC)."},
        DELIVERIES: {
            "type": ["integer", "string"],
            "description": "Which delivery of the message was dead-lettered (as text if beyond 64 bits).",
        },
        ORIGINAL_EXCHANGE: text | {"description": "Where the message first came in, and a replay goes."},
        ORIGINAL_ROUTING_KEY: text | {"description": "Its routing key then (a signature or token redacted)."},
        REPLAYS: {"type": "integer", "description": "How often `speechjobs dlq replay` sent it back."},
        DROPPED_HEADERS: names
        | {"description": "Original headers left out: not encodable, or over the header table's budget."},
        CONVERTED_HEADERS: names
        | {"description": "Original headers AMQP could not carry as they were, converted (bytes as text)."},
    }
    # Every dead letter speechjobs publishes has these; the provider only when it was known.
    required = [REASON, ERROR, ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY, DEAD_LETTERED_AT, DELIVERIES]
    return {
        "type": "object",
        "description": "The verdict, and the original message's headers (secret-looking ones masked).",
        "required": required,
        "properties": properties,
        "additionalProperties": True,
    }


def _broker_dead_letter_headers() -> dict[str, Any]:
    death = sorted(VERDICT_HEADERS - {*VERDICT, DELIVERY_COUNT})
    return {
        "type": "object",
        "description": "RabbitMQ's death records, on a message the broker itself dead-lettered from the "
        "inbound queue (delivery limit, rejection, expiry); the tools show its reason as "
        "`broker:<reason>` and a replay sends it where the records say.",
        "properties": {
            name: (
                {"type": "array", "items": {"type": "object"}, "description": "The broker's death records."}
                if name == "x-death"
                else {"type": "string", "description": "Set by the broker when it dead-letters."}
            )
            for name in death
        },
        "additionalProperties": True,
    }


def _messages(outcomes: tuple[str, ...]) -> dict[str, Any]:
    messages: dict[str, Any] = {}
    for provider in PROVIDERS:
        vendor = _VENDORS[provider]
        payload = {"$ref": _SCHEMAS + _name(provider, "Payload")}
        messages[_name(provider, "Notification", lower=True)] = {
            "name": f"{provider}.notification",
            "title": f"{vendor.title} notification",
            "summary": f"A {vendor.title} body, exactly as the vendor sent or answered it.",
            "description": vendor.bodies
            + " JSON or XML is recognised from the body, not from `content_type`, whose charset is used "
            "to decode it (UTF-8 by default).",
            "contentType": vendor.content_type,
            "headers": {"$ref": _SCHEMAS + "InboundHeaders"},
            "payload": {
                "anyOf": [
                    payload,
                    {
                        "allOf": [
                            {"$ref": _SCHEMAS + "CloudEvent"},
                            {"properties": {"data": {"anyOf": [payload, {"type": "string"}]}}},
                        ]
                    },
                ]
            },
        }
    messages["trackRequest"] = {
        "name": "track",
        "title": "Track request",
        "summary": "Poll this job until it is terminal.",
        "contentType": "application/json",
        "headers": {"$ref": _SCHEMAS + "InboundHeaders"},
        "payload": {"$ref": _SCHEMAS + "TrackRequest"},
        "examples": [{"name": "track", "payload": {"task_id": "2f0c6c1ee1d94b4c9a5f8d1c1b7e0a11"}}],
    }
    for outcome, example in zip(outcomes, _event_examples(), strict=True):
        statuses = _statuses(outcome)
        messages[_camel(outcome)] = {
            "name": outcome,
            "title": f"{outcome} event",
            "summary": f"A job reached the terminal status {' or '.join(statuses)}.",
            "description": "AMQP properties: `message_id` = `event_id`, `type` = the routing key, "
            "`content_type` application/json, persistent (delivery mode 2), `timestamp` = when published.",
            "contentType": "application/json",
            "headers": {"$ref": _SCHEMAS + "EventHeaders"},
            "payload": {
                "allOf": [
                    {"$ref": _SCHEMAS + "JobEvent"},
                    {"properties": {"type": {"const": outcome}, "status": {"enum": statuses}}},
                ]
            },
            "bindings": {"amqp": {"messageType": outcome, "bindingVersion": AMQP_BINDING_VERSION}},
            "examples": [example],
        }
    messages["deadLetter"] = {
        "name": "dead-letter",
        "title": "Dead letter",
        "summary": "A message speechjobs could not process, with its verdict.",
        "description": "The original body byte for byte, with its `content_type` and `message_id`; "
        "persistent, timestamped when dead-lettered.",
        "headers": {"$ref": _SCHEMAS + "DeadLetterHeaders"},
        "payload": {"description": "The original body, unchanged."},
    }
    messages["brokerDeadLetter"] = {
        "name": "broker-dead-letter",
        "title": "Broker dead letter",
        "summary": "A message the broker dead-lettered from the inbound queue.",
        "headers": {"$ref": _SCHEMAS + "BrokerDeadLetterHeaders"},
        "payload": {"description": "The original body, unchanged."},
    }
    return messages


def _event_examples() -> list[dict[str, Any]]:
    at = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    events = [
        JobEvent(
            event_id=event_id("tingwu", "2f0c6c1ee1d94b4c9a5f8d1c1b7e0a11", JobStatus.COMPLETED),
            type="job.completed",
            occurred_at=at,
            provider="tingwu",
            task_id="2f0c6c1ee1d94b4c9a5f8d1c1b7e0a11",
            status=JobStatus.COMPLETED,
            provider_status="COMPLETED",
            kind="transcription",
            results={"Transcription": "https://example.com/transcription.json"},
            finished_at=at,
        ),
        JobEvent(
            event_id=event_id("tencent-ci", "s7a1d3c2e9b8f4a6c5d0e1f2a3b4c5d6", JobStatus.FAILED),
            type="job.failed",
            occurred_at=at,
            provider="tencent-ci",
            task_id="s7a1d3c2e9b8f4a6c5d0e1f2a3b4c5d6",
            status=JobStatus.FAILED,
            provider_status="Failed",
            kind="transcription",
            error=JobError(code="InvalidInput", message="the audio could not be decoded"),
            finished_at=at,
        ),
    ]
    return [
        {
            "name": event.type,
            "headers": {"provider": event.provider, "kind": event.kind, TRACEPARENT: _TRACEPARENT_EXAMPLE},
            "payload": json.loads(event.model_dump_json()),
        }
        for event in events
    ]


def _outcomes() -> tuple[str, ...]:
    outcomes: tuple[str, ...] = get_args(JobEvent.model_fields["type"].annotation)
    return outcomes


def _statuses(outcome: str) -> list[str]:
    """The terminal statuses an event type stands for, as the state machine picks it."""
    completed = outcome == "job.completed"
    return [s.value for s in JobStatus if s.terminal and (s is JobStatus.COMPLETED) == completed]


def _job_event_schema(components: dict[str, Any]) -> dict[str, Any]:
    schema = _schema(JobEvent, components, mode="serialization")
    # Its $id would make every reference in it relative to that address, not to this document; the
    # committed schemas/job-event.schema.json keeps it.
    del schema["$id"]
    return schema


def _schema(
    model: Any,
    components: dict[str, Any],
    *,
    mode: JsonSchemaMode = "validation",
    generator: type[GenerateJsonSchema] = GenerateJsonSchema,
) -> dict[str, Any]:
    """A model's JSON Schema, its definitions moved to the components; the references follow them."""
    schema: dict[str, Any] = TypeAdapter(model).json_schema(
        mode=mode, ref_template=_SCHEMAS + "{model}", schema_generator=generator
    )
    for name, definition in schema.pop("$defs", {}).items():
        _add(components, name, definition)
    return schema


def _add(components: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if components.setdefault(name, schema) != schema:
        raise ValueError(f"two models define a schema {name!r} differently")


def _name(provider: str, suffix: str, *, lower: bool = False) -> str:
    name = "".join(part.title() for part in provider.split("-")) + suffix
    return name[0].lower() + name[1:] if lower else name


def _camel(routing_key: str) -> str:
    return _name(routing_key.replace(".", "-"), "", lower=True)


def _message_ref(provider: str) -> str:
    return "#/components/messages/" + _name(provider, "Notification", lower=True)
