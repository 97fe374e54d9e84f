"""python -m bench.relay [bare]: the baselines of `python -m bench.receiver`.

`python -m bench.relay` is the relay a user would write. A FastAPI app with one route,
`POST /callbacks/{provider}/{token}`: it checks the token, reads the body,
publishes it with aio-pika on a channel with publisher confirms and answers 200 once the broker confirmed.
One robust connection and channel are opened at startup (the lifespan), and it runs with uvicorn's
defaults, which pick uvloop and httptools when they are installed, as they are here. It reads the
receiver's own variables, so both contenders are configured alike:

    SPEECHJOBS_AMQP_URL, SPEECHJOBS_INBOUND_EXCHANGE, SPEECHJOBS_CALLBACK_TOKENS (provider=token,...),
    SPEECHJOBS_RECEIVER_PORT

Nothing in it is tuned: the point is what the obvious code costs.

`python -m bench.relay bare` is the floor, not a contender: the same checks and the same publish on the
same server, with nothing around them. A bare ASGI callable (no framework, no logging, no metrics) on
uvicorn, publishing straight on aiormq's channel (the layer under aio-pika). What a request costs there is
what uvicorn, httptools, uvloop and aiormq take, the part no receiver built on them can save.
"""

from __future__ import annotations

import hmac
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pamqp.commands import Basic

AMQP_URL = os.environ.get("SPEECHJOBS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
EXCHANGE = os.environ.get("SPEECHJOBS_INBOUND_EXCHANGE", "speechjobs.inbound")
PORT = int(os.environ.get("SPEECHJOBS_RECEIVER_PORT", "8000"))


def _tokens(text: str) -> dict[str, list[bytes]]:
    """`tingwu=tok1,tingwu=tok2,tencent-ci=tok3`: every provider's valid tokens."""
    tokens: dict[str, list[bytes]] = {}
    for pair in text.split(","):
        provider, _, token = pair.strip().partition("=")
        if provider and token:
            tokens.setdefault(provider.strip(), []).append(token.strip().encode())
    return tokens


TOKENS = _tokens(os.environ.get("SPEECHJOBS_CALLBACK_TOKENS", ""))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    app.state.exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    yield
    await connection.close()


app = FastAPI(lifespan=lifespan)


@app.post("/callbacks/{provider}/{token}")
async def callback(provider: str, token: str, request: Request) -> PlainTextResponse:
    # The same rule as the receiver: any of the provider's tokens, compared in constant time; an unknown
    # provider and a wrong token both get 404.
    given = token.encode()
    if not any(hmac.compare_digest(given, valid) for valid in TOKENS.get(provider, ())):
        raise HTTPException(status_code=404, detail="not found")
    body = await request.body()
    message = aio_pika.Message(
        body,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type=request.headers.get("content-type"),
        headers={"x-provider": provider, "x-received-at": datetime.now(UTC).isoformat()},
    )
    # On a channel with publisher confirms, publish returns once the broker confirmed the message.
    await request.app.state.exchange.publish(message, routing_key=f"callback.{provider}", mandatory=True)
    return PlainTextResponse("ok\n")


# The floor ---------------------------------------------------------------------------------------------

_bare: dict[str, aiormq.abc.AbstractChannel] = {}


async def _answer(send: Any, status: int, text: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                connection = await aiormq.connect(AMQP_URL)
                _bare["channel"] = channel = await connection.channel(publisher_confirms=True)
                await channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await _bare["channel"].connection.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    parts = scope["path"].split("/")  # "", "callbacks", provider, token
    provider, token = (parts[2], parts[3]) if len(parts) == 4 and parts[1] == "callbacks" else ("", "")
    given = token.encode()
    if not any(hmac.compare_digest(given, valid) for valid in TOKENS.get(provider, ())):
        await _answer(send, 404, b"not found\n")
        return
    if scope["method"] != "POST":
        await _answer(send, 405, b"POST only\n")
        return
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    headers = {"x-provider": provider, "x-received-at": datetime.now(UTC).isoformat()}
    await _bare["channel"].basic_publish(
        body,
        exchange=EXCHANGE,
        routing_key=f"callback.{provider}",
        properties=Basic.Properties(delivery_mode=2, headers=headers),
        mandatory=True,
    )
    await _answer(send, 200, b"ok\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["bare"]:
        # No access log: the floor carries nothing a receiver could leave out.
        uvicorn.run(bare_app, host="0.0.0.0", port=PORT, access_log=False, log_level="warning")
    else:
        uvicorn.run(app, host="0.0.0.0", port=PORT)
