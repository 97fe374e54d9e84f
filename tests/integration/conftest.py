"""Fixtures for tests against the real RabbitMQ and MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from consumer.cli import main
from tests.integration.harness import AMQP_URL, Bus, Cli, Names, Run, ServiceProcess, mongo, mongodb_url

pytestmark = pytest.mark.integration


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture(autouse=True)
async def no_leaked_services() -> AsyncIterator[None]:
    yield
    while ServiceProcess.started:
        proc = ServiceProcess.started.pop().proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def bus(names: Names) -> AsyncIterator[Bus]:
    bus = Bus(names)
    await bus.open()
    yield bus
    await bus.cleanup()


@pytest.fixture
async def db(names: Names) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = mongo()
    yield client[names.mongodb_database]
    await client.drop_database(names.mongodb_database)
    await client.close()


@pytest.fixture
async def service(names: Names, bus: Bus) -> AsyncIterator[ServiceProcess]:
    proc = ServiceProcess(names)
    await proc.start()
    yield proc
    code = await proc.stop()
    assert code == 0, proc.logs()[-3000:]


@pytest.fixture
def cli(names: Names, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """`speechjobs ...` in-process with this test's names; main() runs its own loop, so in a thread."""
    for key, value in {
        **names.env,
        "SPEECHJOBS_AMQP_URL": AMQP_URL,
        "SPEECHJOBS_MONGODB_URL": mongodb_url(),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SPEECHJOBS_PROVIDERS", raising=False)

    def call(args: list[str]) -> int:
        try:
            return main(args)
        except SystemExit as exit_:  # argparse's verdict on bad arguments
            return int(exit_.code or 0)

    async def run(*args: str) -> Run:
        capsys.readouterr()
        started = time.monotonic()
        code = await asyncio.to_thread(call, list(args))
        seconds = time.monotonic() - started
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err, seconds)

    return run
