"""The probe and metrics endpoints of a running service."""

from __future__ import annotations

import asyncio

from tests.conftest import fixture_bytes
from tests.integration.harness import Bus, Names, ServiceProcess


async def test_health_ready_and_metrics(service: ServiceProcess, bus: Bus, names: Names) -> None:
    assert await service.http_get("/healthz") == (200, "ok\n")
    assert await service.http_get("/readyz") == (200, "ok\n")
    await bus.publish(fixture_bytes("seeds/tingwu_callback_completed.json"), "callback.tingwu")
    await bus.publish(fixture_bytes("seeds/tingwu_callback_completed.json"), "callback.tingwu")
    await bus.publish(b"garbage", "callback.tingwu")
    await bus.drain(names.dead_letter_queue, expect=1)
    await asyncio.sleep(0.3)
    status, metrics = await service.http_get("/metrics")
    assert status == 200
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert lines['speechjobs_messages_total{outcome="stored",provider="tingwu"}'] == 1
    assert lines['speechjobs_messages_total{outcome="duplicate",provider="tingwu"}'] == 1
    assert lines['speechjobs_messages_total{outcome="dead-lettered",provider="tingwu"}'] == 1
    assert lines['speechjobs_duplicates_total{provider="tingwu"}'] == 1
    assert lines['speechjobs_dead_letters_total{reason="malformed"}'] == 1
    assert lines['speechjobs_job_transitions_total{provider="tingwu",status="completed"}'] == 1
    assert lines['speechjobs_events_published_total{provider="tingwu",type="job.completed"}'] == 1
    assert lines["speechjobs_processing_seconds_count"] == 3
    assert lines["speechjobs_db_seconds_count"] >= 1
    assert lines["speechjobs_publish_seconds_count"] == 1
    assert lines["speechjobs_batch_size_count"] >= 1
    assert lines["speechjobs_in_flight_messages"] == 0


async def test_unknown_routes(service: ServiceProcess) -> None:
    assert (await service.http_get("/nope"))[0] == 404
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 405")
    writer.close()
