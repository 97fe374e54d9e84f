"""Developer commands: parse files offline, send one to the broker, print the message schemas or settings."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from consumer.core.contract import CHANNELS, Inbound, inbound
from consumer.core.errors import Rejection
from consumer.core.normalize import Limits
from consumer.settings import load_settings, reference_markdown
from consumer.vendors import normalize
from schemas.job import PROVIDERS

__all__ = ["add_commands", "event_schema_json"]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parse = sub.add_parser("parse", help="normalize files offline and print the job updates as JSON lines")
    parse.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parse.add_argument("--provider", choices=PROVIDERS, help="as the x-provider header would")
    parse.add_argument("--task-id", help="as the x-task-id header would (MetaStudio poll bodies)")
    parse.add_argument("--routing-key", default="", help="the routing key the producer would use")
    parse.set_defaults(func=_parse)

    send = sub.add_parser("send", help="publish a file to the inbound exchange as the receiver would")
    send.add_argument("file", type=Path, metavar="FILE")
    send.add_argument("--provider", choices=PROVIDERS, help="sets the x-provider header")
    send.add_argument(
        "--channel",
        choices=CHANNELS,
        default="callback",
        help="how the vendor reported it; the routing key is <channel>.<provider> (default callback)",
    )
    send.add_argument("--task-id", help="sets the x-task-id header")
    send.add_argument("--content-type", help="the AMQP content_type (left unset by default)")
    send.add_argument(
        "--http",
        metavar="URL",
        help="POST the file to this receiver URL as the vendor would (/callbacks/<provider>/<token>), "
        "signed for ICE when SPEECHJOBS_ICE_AUTH_KEYS is set, instead of publishing it",
    )
    send.set_defaults(func=_send)

    schema = sub.add_parser(
        "schema", help="print the AsyncAPI document of every message speechjobs takes and sends"
    )
    schema.add_argument(
        "--event",
        action="store_true",
        help="the JSON Schema of the outbound event instead (schemas/job-event.schema.json)",
    )
    schema.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="compare with FILE instead of printing; exit 1, saying so, if it differs",
    )
    schema.set_defaults(func=_schema)

    settings = sub.add_parser("settings", help="print the configuration reference (docs/configuration.md)")
    settings.set_defaults(func=_settings)


def _parse(args: argparse.Namespace) -> int:
    settings = load_settings()
    limits = Limits.of(settings.limits)
    headers: dict[str, object] = {}
    if args.provider:
        headers["x-provider"] = args.provider
    if args.task_id:
        headers["x-task-id"] = args.task_id
    status = 0
    for path in args.files:
        message = Inbound(path.read_bytes(), args.routing_key, headers)
        try:
            result = normalize(message, enabled=settings.consumer.providers, limits=limits)
        except Rejection as exc:
            print(f"{path}: dead-letter: {exc.reason}: {exc.message}", file=sys.stderr)
            status = 1
            continue
        if result.ignored:
            print(f"{path}: ignored: {result.ignored}", file=sys.stderr)
        for update in result.updates:
            print(update.model_dump_json(exclude_none=False))
    return status


def _send(args: argparse.Namespace) -> int:
    if args.http:
        return _post(args)
    from consumer.amqp.connection import connect_producer
    from consumer.amqp.publisher import publish_inbound

    settings = load_settings()
    message = inbound(
        args.file.read_bytes(),
        channel=args.channel,
        provider=args.provider,
        task_id=args.task_id,
        content_type=args.content_type,
    )

    async def publish() -> None:
        producer = await connect_producer(settings.amqp, name="speechjobs-send")
        try:
            await publish_inbound(producer, message, timeout=settings.amqp.publish_timeout_s)
        finally:
            await producer.close()

    asyncio.run(publish())
    print(f"sent {args.file} to {settings.amqp.inbound_exchange} with routing key {message.routing_key}")
    return 0


def event_schema_json() -> str:
    from schemas.event import JobEvent

    return json.dumps(JobEvent.model_json_schema(mode="serialization"), indent=2, ensure_ascii=False) + "\n"


def _schema(args: argparse.Namespace) -> int:
    if args.event:
        text, regenerate = event_schema_json(), "speechjobs schema --event"
    else:
        from consumer.ops import asyncapi

        text, regenerate = asyncapi.render(), "speechjobs schema"
    if args.check is None:
        sys.stdout.write(text)
        return 0
    try:
        current = args.check.read_bytes()
    except OSError as exc:
        print(f"speechjobs: cannot read {args.check}: {exc.strerror}", file=sys.stderr)
        return 1
    if current != text.encode():
        print(
            f"speechjobs: {args.check} differs from the code's; regenerate: {regenerate} > {args.check}",
            file=sys.stderr,
        )
        return 1
    return 0


def _settings(args: argparse.Namespace) -> int:
    sys.stdout.write(reference_markdown())
    return 0


def _post(args: argparse.Namespace) -> int:
    import time

    import httpx

    from consumer.vendors.aliyun_ice import webhook

    settings = load_settings().receiver
    body = args.file.read_bytes()
    xml = body.lstrip()[:1] == b"<"
    headers = {"content-type": args.content_type or ("application/xml" if xml else "application/json")}
    keys = settings.ice_keys()
    if args.provider == "aliyun-ice" and keys:
        timestamp = str(int(time.time()))
        url = settings.ice_callback_url or args.http
        headers[webhook.TIMESTAMP] = timestamp
        headers[webhook.SIGNATURE] = webhook.sign(url, timestamp, keys[0])
    # Connection failures are retried by the transport; a 503 is the receiver asking the vendor to retry.
    with httpx.Client(timeout=10, transport=httpx.HTTPTransport(retries=2)) as client:
        response = client.post(args.http, content=body, headers=headers)
    print(f"{response.status_code} {response.text.strip()}")
    return 0 if response.status_code == 200 else 1
