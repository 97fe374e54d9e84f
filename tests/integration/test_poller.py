"""`speechjobs poll` against the vendor fake, the real broker, the consumer and SecantusDB."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from schemas.job import PROVIDERS, Provider
from tests.fakes.vendors import TENCENT_QUEUE_ID, Credentials, FakeVendors
from tests.integration.harness import AMQP_URL, Bus, Names, ServiceProcess, mongodb_url

CREDENTIALS = Credentials(
    alibaba_access_key_id="LTAI-poller-test",
    alibaba_access_key_secret="alibaba-s3cr3t-MARKER",
    tencent_secret_id="AKID-poller-test",
    tencent_secret_key="tencent-s3cr3t-MARKER",
    huawei_access_key="HWPOLLERTEST",
    huawei_secret_key="huawei-s3cr3t-MARKER",
    huawei_project_id="0123456789abcdef",
)
SECRETS = ("alibaba-s3cr3t-MARKER", "tencent-s3cr3t-MARKER", "huawei-s3cr3t-MARKER", "wrong-s3cr3t")
# Each vendor's running and finished states, as its status API says them.
STATES: dict[Provider, tuple[str, str]] = {
    "tingwu": ("ONGOING", "COMPLETED"),
    "aliyun-ice": ("Executing", "Finished"),
    "tencent-ci": ("Running", "Success"),
    "huawei-metastudio": ("PROCESSING", "SUCCEED"),
}
INTERVAL_S = 1.0  # SPEECHJOBS_POLL_INTERVAL_S in these tests
FAST_S = 0.5  # SPEECHJOBS_POLL_FAST_INTERVAL_S
JITTER = 0.1


def poller_env(fake: FakeVendors, credentials: Credentials = CREDENTIALS, **extra: str) -> dict[str, str]:
    c = credentials
    return {
        "SPEECHJOBS_ALIBABA_ACCESS_KEY_ID": c.alibaba_access_key_id,
        "SPEECHJOBS_ALIBABA_ACCESS_KEY_SECRET": c.alibaba_access_key_secret,
        "SPEECHJOBS_TENCENT_SECRET_ID": c.tencent_secret_id,
        "SPEECHJOBS_TENCENT_SECRET_KEY": c.tencent_secret_key,
        "SPEECHJOBS_HUAWEI_ACCESS_KEY": c.huawei_access_key,
        "SPEECHJOBS_HUAWEI_SECRET_KEY": c.huawei_secret_key,
        "SPEECHJOBS_HUAWEI_PROJECT_ID": c.huawei_project_id,
        "SPEECHJOBS_TINGWU_ENDPOINT": fake.endpoint,
        "SPEECHJOBS_ICE_ENDPOINT": fake.endpoint,
        "SPEECHJOBS_TENCENT_CI_ENDPOINT": fake.endpoint,
        "SPEECHJOBS_METASTUDIO_ENDPOINT": fake.endpoint,
        "SPEECHJOBS_VENDOR_TIMEOUT_S": "3",
        "SPEECHJOBS_POLL_INTERVAL_S": str(INTERVAL_S),
        "SPEECHJOBS_POLL_MAX_INTERVAL_S": "4",
        "SPEECHJOBS_POLL_FAST_INTERVAL_S": str(FAST_S),
        "SPEECHJOBS_POLL_RATE": "50",
        "SPEECHJOBS_POLL_SILENCE": "600",
        "SPEECHJOBS_POLL_RECONCILE_EVERY_S": "1",
        "SPEECHJOBS_POLL_LEASE_S": "6",
        **extra,
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeVendors]:
    async with FakeVendors(CREDENTIALS) as vendors:
        yield vendors


@pytest.fixture
async def consumer(names: Names, bus: Bus) -> AsyncIterator[ServiceProcess]:
    # The consumer stores a tracked job's first poll SPEECHJOBS_POLL_INTERVAL_S after tracking.
    proc = ServiceProcess(names, SPEECHJOBS_POLL_INTERVAL_S=str(INTERVAL_S))
    await proc.start()
    yield proc
    assert await proc.stop() == 0, proc.logs()[-3000:]


async def start_poller(names: Names, env: dict[str, str]) -> ServiceProcess:
    proc = ServiceProcess(names, command="poll", **env)
    await proc.start()
    return proc


async def track(bus: Bus, jobs: Iterable[tuple[Provider, str]]) -> None:
    for provider, task_id in jobs:
        await bus.publish(json.dumps({"task_id": task_id}).encode(), f"track.{provider}")


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


async def terminal_count(db: AsyncDatabase[dict[str, Any]]) -> int:
    return await db["jobs"].count_documents({"status": {"$in": ["completed", "failed", "cancelled"]}})


def events_by_task(messages: Iterable[Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for message in messages:
        body = json.loads(message.body)
        found.setdefault(body["task_id"], []).append(body["event_id"])
    return found


def too_close(fake: FakeVendors, jobs: Iterable[tuple[Provider, str]]) -> list[tuple[str, float]]:
    """Polls of one job closer together than its shortest interval allows (with jitter and a margin)."""
    close = []
    for provider, task_id in jobs:
        floor = (FAST_S if provider == "huawei-metastudio" else INTERVAL_S) * (1 - JITTER) - 0.05
        times = fake.polls(provider, task_id)
        close += [(task_id, b - a) for a, b in itertools.pairwise(times) if b - a < floor]
    return close


async def test_tracked_jobs_of_every_vendor_end_with_one_event_each_polled_no_faster_than_allowed(
    names: Names, bus: Bus, db: AsyncDatabase[dict[str, Any]], fake: FakeVendors, consumer: ServiceProcess
) -> None:
    rng = random.Random(13)
    jobs: list[tuple[Provider, str]] = []
    for n in range(200):
        provider = PROVIDERS[n % 4]
        task_id = f"{provider}-job-{n:03d}"
        running, done = STATES[provider]
        fake.add_job(provider, task_id, [(0, running), (rng.uniform(3, 30), done)])
        jobs.append((provider, task_id))
    await track(bus, jobs)
    poller = await start_poller(names, poller_env(fake))
    await until(lambda: _eq(terminal_count(db), 200), 90, "200 terminal jobs")
    events = events_by_task(await bus.drain(names.events_queue, expect=200, timeout=20))
    assert sorted(events) == sorted(task_id for _, task_id in jobs)
    assert all(len(ids) == 1 for ids in events.values()), {k: v for k, v in events.items() if len(v) > 1}
    assert too_close(fake, jobs) == []
    assert fake.rejected == {}
    assert await poller.stop() == 0, poller.logs()[-3000:]
    # Finished jobs are no longer polled, and say why.
    assert await db["polls"].count_documents({"stopped": "terminal"}) == 200


async def test_a_job_whose_callback_never_came_is_reconciled_after_the_silence(
    names: Names, bus: Bus, db: AsyncDatabase[dict[str, Any]], fake: FakeVendors, consumer: ServiceProcess
) -> None:
    # The vendor called back once (running), then its final callback was lost.
    fake.add_job("tingwu", "lost-callback", [(0, "ONGOING"), (1, "COMPLETED")])
    body = {"Code": "0", "Data": {"TaskId": "lost-callback", "TaskStatus": "ONGOING"}, "RequestId": "r"}
    await bus.publish(json.dumps(body).encode(), "callback.tingwu")
    await until(lambda: _eq(db["jobs"].count_documents({"status": "running"}), 1), 20, "the running job")
    poller = await start_poller(names, poller_env(fake, SPEECHJOBS_POLL_SILENCE="3"))
    await until(lambda: _eq(terminal_count(db), 1), 30, "the reconciled job")
    events = events_by_task(await bus.drain(names.events_queue, expect=1))
    assert events.keys() == {"lost-callback"}
    entry = await db["polls"].find_one({"_id": "tingwu:lost-callback"})
    assert entry is not None
    assert (entry["reason"], entry["stopped"]) == ("silent", "terminal")
    assert await poller.stop() == 0


async def test_two_replicas_poll_each_job_once_per_interval_and_a_killed_one_loses_nothing(
    names: Names, bus: Bus, db: AsyncDatabase[dict[str, Any]], fake: FakeVendors, consumer: ServiceProcess
) -> None:
    jobs: list[tuple[Provider, str]] = []
    for n in range(60):
        provider = PROVIDERS[n % 4]
        running, done = STATES[provider]
        fake.add_job(provider, f"r-{n:02d}", [(0, running), (8 + n % 10, done)])
        jobs.append((provider, f"r-{n:02d}"))
    await track(bus, jobs)
    env = poller_env(fake, SPEECHJOBS_POLL_MAX_INTERVAL_S="2")
    first, second = await start_poller(names, env), await start_poller(names, env)
    await asyncio.sleep(5)
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)  # mid-run: its leases expire, the other takes them
    await first.proc.wait()
    await until(lambda: _eq(terminal_count(db), 60), 60, "60 terminal jobs")
    events = events_by_task(await bus.drain(names.events_queue, expect=60, timeout=20))
    assert len(events) == 60
    assert all(len(ids) == 1 for ids in events.values())
    assert too_close(fake, jobs) == []
    polled_by_both = {
        line.get("task_id") for line in second.log_lines() if line.get("msg", "").startswith("poll ")
    }
    assert polled_by_both  # the survivor did poll
    assert await second.stop() == 0


async def test_the_rate_limit_holds_and_throttling_backs_off(
    names: Names, bus: Bus, db: AsyncDatabase[dict[str, Any]], fake: FakeVendors, consumer: ServiceProcess
) -> None:
    jobs: list[tuple[Provider, str]] = [("tingwu", f"t-{n:02d}") for n in range(30)]
    for _, task_id in jobs:
        fake.add_job("tingwu", task_id, [(0, "ONGOING"), (2, "COMPLETED")])
    fake.throttle("tingwu", count=3, retry_after_s=1.5)
    await track(bus, jobs)
    poller = await start_poller(names, poller_env(fake, SPEECHJOBS_POLL_RATE="tingwu=4"))
    await until(lambda: _eq(terminal_count(db), 30), 60, "30 terminal jobs")
    # 4 a second with a one-second burst: no one-second window sees more than 4 + the bucket's 4.
    assert fake.max_rate("tingwu", window_s=1.0) <= 8
    throttled = [r for r in fake.records if r.verdict == "throttled"]
    assert len(throttled) == 3
    last = throttled[-1].at
    after = [r.at for r in fake.records if r.at > last and r.verdict != "throttled"]
    # Requests already on their way when the throttled answer came back may still arrive (at most the
    # poller's concurrency, within moments); after them, nothing until the vendor's x-acs-retry-after.
    in_flight = [at for at in after if at - last < 0.25]
    later = [at for at in after if at - last >= 0.25]
    assert len(in_flight) < 16
    assert later
    assert min(later) - last >= 1.4  # the vendor's x-acs-retry-after was waited out
    pauses = [line for line in poller.log_lines() if "pausing its polls" in line.get("msg", "")]
    assert pauses
    assert await poller.stop() == 0


async def test_refused_credentials_are_logged_without_the_secret_and_other_vendors_go_on(
    names: Names, bus: Bus, db: AsyncDatabase[dict[str, Any]], fake: FakeVendors, consumer: ServiceProcess
) -> None:
    jobs: list[tuple[Provider, str]] = [(p, f"{p}-k") for p in PROVIDERS]
    for provider, task_id in jobs:
        running, done = STATES[provider]
        fake.add_job(provider, task_id, [(0, running), (1, done)])
    await track(bus, jobs)
    wrong = dataclasses.replace(CREDENTIALS, alibaba_access_key_secret="wrong-s3cr3t")
    poller = await start_poller(names, poller_env(fake, wrong))
    await until(lambda: _eq(terminal_count(db), 2), 30, "the Tencent and MetaStudio jobs")
    await asyncio.sleep(1)
    finished = {doc["provider"] async for doc in db["jobs"].find({"status": "completed"})}
    assert finished == {"tencent-ci", "huawei-metastudio"}
    assert fake.rejected["tingwu"] >= 1
    assert fake.rejected["aliyun-ice"] >= 1
    refused = [line for line in poller.log_lines() if "refused the credentials" in line.get("msg", "")]
    assert {line["provider"] for line in refused} == {"tingwu", "aliyun-ice"}
    _, metrics = await poller.http_get("/metrics")
    assert 'speechjobs_polls_total{provider="tingwu",verdict="auth"}' in metrics
    assert await poller.stop() == 0
    logs = poller.logs()
    assert not [secret for secret in SECRETS if secret in logs]
    assert not [secret for secret in SECRETS if secret in metrics]


async def _eq(count: Any, expected: int) -> bool:
    return bool(await count == expected)


async def speechjobs(names: Names, *args: str, **env: str) -> tuple[int, str]:
    """Run the command line with the test's names; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        *args,
        env={
            **os.environ,
            **names.env,
            "SPEECHJOBS_AMQP_URL": AMQP_URL,
            "SPEECHJOBS_MONGODB_URL": mongodb_url(),
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_track_and_jobs_stuck_on_the_command_line(
    names: Names, bus: Bus, db: AsyncDatabase[dict[str, Any]], consumer: ServiceProcess
) -> None:
    code, out = await speechjobs(names, "track", "tingwu", "cli-1", "cli-2")
    assert code == 0, out
    await until(lambda: _eq(db["jobs"].count_documents({"status": "queued"}), 2), 20, "two tracked jobs")
    assert await db["polls"].count_documents({"reason": "tracked", "due_at": {"$ne": None}}) == 2
    # No Alibaba credentials here: the jobs wait, and the listing says why.
    code, out = await speechjobs(names, "jobs", "--stuck", "--json")
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["task_id"], line["status"]) for line in lines] == [("cli-1", "queued"), ("cli-2", "queued")]
    assert all("no credentials" in line["why"] for line in lines)
    code, out = await speechjobs(
        names,
        "jobs",
        "--stuck",
        SPEECHJOBS_ALIBABA_ACCESS_KEY_ID="x",
        SPEECHJOBS_ALIBABA_ACCESS_KEY_SECRET="y",
    )
    assert code == 0, out
    assert out.splitlines()[0].split() == ["PROVIDER", "TASK", "STATUS", "AGE", "POLLING"]
    assert "polled (tracked, 0 polls)" in out
    code, out = await speechjobs(names, "track", "nobody", "x")
    assert code == 2
    assert "invalid choice" in out


async def test_polling_stops_for_a_job_the_vendor_does_not_know_and_past_the_maximum_age(
    names: Names, bus: Bus, db: AsyncDatabase[dict[str, Any]], fake: FakeVendors, consumer: ServiceProcess
) -> None:
    fake.add_job("huawei-metastudio", "forever", [(0, "PROCESSING")])
    await track(bus, [("tingwu", "never-submitted"), ("huawei-metastudio", "forever")])
    poller = await start_poller(names, poller_env(fake, SPEECHJOBS_POLL_MAX_AGE_S="7"))
    stopped = {"stopped": {"$ne": None}}
    await until(lambda: _eq(db["polls"].count_documents(stopped), 2), 30, "both jobs to stop being polled")
    unknown = await db["polls"].find_one({"_id": "tingwu:never-submitted"})
    old = await db["polls"].find_one({"_id": "huawei-metastudio:forever"})
    assert unknown is not None
    assert old is not None
    assert (unknown["stopped"], unknown["misses"]) == ("not-found", 3)
    assert [h["verdict"] for h in unknown["history"]] == ["not-found"] * 3
    assert old["stopped"] == "max-age"
    assert len(fake.polls("tingwu", "never-submitted")) == 3
    polls_then = len(fake.polls("huawei-metastudio", "forever"))
    await asyncio.sleep(2)
    assert len(fake.polls("huawei-metastudio", "forever")) == polls_then  # no longer polled
    assert await poller.stop() == 0
    _, out = await speechjobs(names, "jobs", "--stuck", "--json", **poller_env(fake))
    why = {line["task_id"]: line["why"] for line in map(json.loads, out.splitlines())}
    assert why["never-submitted"].startswith("no longer polled: the vendor says it does not exist")
    assert why["forever"].startswith("no longer polled: older than the polling age")


async def test_tencent_jobs_of_one_queue_are_asked_about_a_page_at_a_time(
    names: Names, bus: Bus, db: AsyncDatabase[dict[str, Any]], fake: FakeVendors, consumer: ServiceProcess
) -> None:
    jobs: list[tuple[Provider, str]] = [("tencent-ci", f"q-{n:03d}") for n in range(150)]
    for n, (_, task_id) in enumerate(jobs):
        fake.add_job("tencent-ci", task_id, [(0, "Running"), (3 + n % 5, "Success")])
    fake.add_job("tencent-ci", "not-tracked", [(0, "Running")])  # another job of the queue
    await track(bus, jobs)
    poller = await start_poller(names, poller_env(fake, SPEECHJOBS_TENCENT_CI_QUEUE_ID=TENCENT_QUEUE_ID))
    await until(lambda: _eq(terminal_count(db), 150), 60, "150 terminal jobs")
    events = events_by_task(await bus.drain(names.events_queue, expect=150, timeout=20))
    assert len(events) == 150
    assert all(len(ids) == 1 for ids in events.values())
    # Every job was seen, some several times, yet the vendor was asked a page at a time.
    seen = sum(len(fake.polls("tencent-ci", task_id)) for _, task_id in jobs)
    assert seen >= len(jobs)
    assert 0 < fake.listings * 10 <= seen, (fake.listings, seen)
    assert too_close(fake, jobs) == []
    assert await poller.stop() == 0
