"""A minimal HTTP endpoint for probes and Prometheus: /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["Check", "serve"]

log = logging.getLogger("speechjobs.http")

Check = Callable[[], Awaitable[list[str]]]


async def serve(host: str, port: int, *, live: Check, ready: Check) -> asyncio.Server:
    """Three read-only GET routes; anything fancier belongs in a real framework, not here."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]
            if method != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest()
            elif path in ("/healthz", "/readyz"):
                problems = await (live if path == "/healthz" else ready)()
                status = "503 Service Unavailable" if problems else "200 OK"
                ctype, body = "text/plain; charset=utf-8", ("\n".join(problems) or "ok").encode() + b"\n"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("http endpoints listening", extra={"port": port})
    return server
