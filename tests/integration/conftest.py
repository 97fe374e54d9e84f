"""Fixtures for tests against the real RabbitMQ and MongoDB-protocol server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.harness import Bus, Names, ServiceProcess, mongo

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
