"""The speechjobs command line: run the consumer, parse files offline, send files as the relay would."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from consumer.errors import Rejection
from consumer.normalize import Inbound, Limits, normalize
from consumer.settings import Settings
from schemas.job import PROVIDERS

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechjobs", description="Cloud speech-job notifications to one deduplicated event stream."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the consumer (settings from SPEECHJOBS_* variables)")
    run.set_defaults(func=_run)

    parse = sub.add_parser("parse", help="normalize files offline and print the job updates as JSON lines")
    parse.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parse.add_argument("--provider", choices=PROVIDERS, help="as the x-provider header would")
    parse.add_argument("--task-id", help="as the x-task-id header would (MetaStudio poll bodies)")
    parse.add_argument("--routing-key", default="", help="the routing key the relay would use")
    parse.set_defaults(func=_parse)

    send = sub.add_parser("send", help="publish a file to the inbound exchange as the relay would")
    send.add_argument("file", type=Path, metavar="FILE")
    send.add_argument("--provider", choices=PROVIDERS, help="sets the x-provider header")
    send.add_argument("--routing-key", help="default: callback.<provider>, or callback.unknown")
    send.add_argument("--task-id", help="sets the x-task-id header")
    send.add_argument("--content-type", help="the AMQP content_type (left unset by default)")
    send.set_defaults(func=_send)

    schema = sub.add_parser("schema", help="print the JSON Schema of the outbound event")
    schema.set_defaults(func=_schema)
    return parser


def _run(args: argparse.Namespace) -> int:
    from consumer.logs import setup_logging
    from consumer.service import Service

    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    return asyncio.run(Service(settings).run())


def _headers(provider: str | None, task_id: str | None) -> dict[str, object]:
    headers: dict[str, object] = {}
    if provider:
        headers["x-provider"] = provider
    if task_id:
        headers["x-task-id"] = task_id
    return headers


def _parse(args: argparse.Namespace) -> int:
    settings = Settings()
    limits = Limits(max_body_bytes=settings.max_body_bytes, max_depth=settings.max_depth)
    status = 0
    for path in args.files:
        inbound = Inbound(path.read_bytes(), args.routing_key, _headers(args.provider, args.task_id))
        try:
            result = normalize(inbound, enabled=settings.providers, limits=limits)
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
    import aio_pika

    settings = Settings()
    routing_key = args.routing_key or f"callback.{args.provider or 'unknown'}"

    async def publish() -> None:
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(settings.inbound_exchange)
            message = aio_pika.Message(
                args.file.read_bytes(),
                headers=_headers(args.provider, args.task_id),  # type: ignore[arg-type]
                content_type=args.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await exchange.publish(message, routing_key=routing_key, mandatory=True)

    asyncio.run(publish())
    print(f"sent {args.file} to {settings.inbound_exchange} with routing key {routing_key}")
    return 0


def event_schema_json() -> str:
    import json

    from schemas.event import JobEvent

    return json.dumps(JobEvent.model_json_schema(mode="serialization"), indent=2, ensure_ascii=False) + "\n"


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.write(event_schema_json())
    return 0
