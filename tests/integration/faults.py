"""Fault injection for the integration tests: a private MongoDB server to stop, broker connections to cut."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from tests.integration.harness import free_port


class PrivateMongo:
    """A SecantusDB server of the test's own, on its own port and storage, to stop and restart."""

    def __init__(self, *extra_args: str) -> None:
        self.extra_args = extra_args
        self.port = free_port()
        self.storage = Path(tempfile.mkdtemp(prefix="speechjobs-faults-db-"))
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&retryWrites=false"

    def client(self) -> AsyncMongoClient[dict[str, Any]]:
        return AsyncMongoClient(self.url, tz_aware=True)

    async def start(self) -> None:
        server = Path(sys.executable).with_name("secantusd-py")
        self.proc = await asyncio.create_subprocess_exec(
            str(server), "--host", "127.0.0.1", "--port", str(self.port),
            "--storage-path", str(self.storage), "--log-level", "WARNING", *self.extra_args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise TimeoutError("private SecantusDB did not start")

    async def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
            await self.proc.wait()


async def rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out.decode()


async def close_connections_of(pid: int) -> int:
    """Force-close the broker connections of one service process (named '... pid <pid>'); how many."""
    listing = await rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "client_properties")
    closed = 0
    for line in listing.splitlines():
        if f'pid {pid}"' in line:
            await rabbitmqctl("close_connection", line.split("\t", 1)[0], "fault injection")
            closed += 1
    return closed


def rss_kib_of(pid: int) -> int:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith("VmRSS")).split()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tingwu_body(task: int, status: str) -> bytes:
    """A Tingwu callback for a numbered task; COMPLETED carries a signed, &amp;-escaped result URL."""
    data: dict[str, object] = {"TaskId": f"task-{task:04d}", "TaskKey": f"key-{task}", "TaskStatus": status}
    if status == "COMPLETED":
        data["Result"] = {
            "Transcription": f"http://example.com/{task}.json?Expires=1&amp;Signature=s3cr3t{task}"
        }
    return json.dumps({"Code": "0", "Data": data, "Message": "success", "RequestId": f"r-{task}"}).encode()
