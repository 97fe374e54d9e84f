"""`jobs show`, `jobs list` and `jobs stuck` on jobs the real MongoStore wrote from real updates."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from consumer.core.state import event_id
from consumer.store.mongo import MongoStore
from schemas.job import JobStatus, Provider
from tests.conftest import make_update
from tests.integration.harness import Cli, Names, mongo

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUNNING, COMPLETED, FAILED, QUEUED = (
    JobStatus.RUNNING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.QUEUED,
)
SIGNED = "https://bucket.oss.example.com/t.json?Expires=1&OSSAccessKeyId=AKID&Signature=s3cr3tSig"


@pytest.fixture
async def store(names: Names) -> AsyncIterator[MongoStore]:
    store = MongoStore(mongo(), names.mongodb_database)
    await store.setup()
    yield store
    await store.client.drop_database(names.mongodb_database)
    await store.close()


async def test_show_prints_the_job_its_history_and_its_event_ids(store: MongoStore, cli: Cli) -> None:
    await store.apply([(make_update(RUNNING, "ONGOING", task_id="a", task_key="K-1"), T0, "d1")])
    await store.apply(
        [
            (
                make_update(
                    COMPLETED,
                    task_id="a",
                    results={"Transcription": SIGNED, "Chapters": {"n": 2}},
                    user_data={"order": 42},
                    body=b"done",
                ),
                T0 + timedelta(seconds=5),
                "d2",
            )
        ]
    )
    # A conflicting terminal state that came later: recorded in history, never an event.
    await store.apply([(make_update(FAILED, task_id="a"), T0 + timedelta(seconds=9), "d3")])
    completed_id = event_id("tingwu", "a", COMPLETED)
    await store.confirm([("tingwu:a", completed_id)], T0 + timedelta(seconds=6))

    run = await cli("jobs", "show", "tingwu", "a")
    assert run.code == 0, run.err
    out = run.out
    assert "status     completed (provider status COMPLETED)" in out
    assert "task key   K-1" in out
    assert "updated    2026-01-01T00:00:09.000Z" in out
    assert 'user data  {"order": 42}' in out
    history = out[out.index("history:") : out.index("events:")].splitlines()[2:]
    assert [line.split()[1:5] for line in history] == [
        ["running", "ONGOING", "callback", "yes"],
        ["completed", "COMPLETED", "callback", "yes"],
        ["failed", "FAILED", "callback", "no"],
    ]
    events = out[out.index("events:") :].splitlines()[2:]
    assert [line.split() for line in events] == [
        [completed_id, "job.completed", "2026-01-01T00:00:05.000Z", "2026-01-01T00:00:06.000Z"]
    ]
    # Signed result URLs are masked, the rest of the result is shown.
    assert "s3cr3tSig" not in out
    assert "AKID" not in out
    assert "Signature=***" in out
    assert '  Chapters: {"n": 2}' in out

    run = await cli("jobs", "show", "tingwu", "a", "--json")
    assert run.code == 0, run.err
    shown = json.loads(run.out)
    assert (shown["key"], shown["status"], shown["version"]) == ("tingwu:a", "completed", 3)
    assert shown["user_data"] == {"order": 42}
    assert "s3cr3tSig" not in run.out
    assert [(h["status"], h["applied"]) for h in shown["history"]] == [
        ("running", True),
        ("completed", True),
        ("failed", False),
    ]
    assert shown["events"] == [
        {
            "event_id": completed_id,
            "type": "job.completed",
            "status": "completed",
            "at": "2026-01-01T00:00:05Z",
            "stored": True,
            "confirmed": True,
            "confirmed_at": "2026-01-01T00:00:06Z",
        }
    ]
    assert "event" not in shown  # the stored body is the event's, not shown twice


async def test_show_an_unconfirmed_event_a_running_job_and_a_missing_one(store: MongoStore, cli: Cli) -> None:
    await store.apply(
        [
            (
                make_update(
                    FAILED, task_id="f", provider="tencent-ci", error={"code": "E1", "message": "no"}
                ),
                T0,
                "d",
            ),
            (make_update(RUNNING, task_id="r"), T0, "d"),
        ]
    )
    run = await cli("jobs", "show", "tencent-ci", "f")
    assert run.code == 0, run.err
    assert "error      E1: no" in run.out
    event_line = run.out.splitlines()[-1].split()
    assert event_line[:2] == [event_id("tencent-ci", "f", FAILED), "job.failed"]
    assert event_line[-1] == "no"  # its confirm is not logged

    run = await cli("jobs", "show", "tingwu", "r")
    assert run.code == 0, run.err
    assert run.out.splitlines()[-1] == "events: none (not terminal)"
    assert json.loads((await cli("jobs", "show", "tingwu", "r", "--json")).out)["events"] == []

    run = await cli("jobs", "show", "tingwu", "nope")
    assert run.code == 1
    assert run.out == ""
    assert "no stored tingwu job with task id 'nope'" in run.err
    run = await cli("jobs", "show", "nobody", "x")
    assert run.code == 2
    assert "invalid choice: 'nobody'" in run.err


def _jobs(count: int, when: Callable[[int], datetime]) -> list[tuple[Provider, str, JobStatus, datetime]]:
    """(provider, task id, status, updated at) of numbered jobs; four share each updated_at (ties)."""
    providers: list[Provider] = ["tingwu", "aliyun-ice"]
    statuses = [COMPLETED, RUNNING, FAILED, QUEUED, COMPLETED]
    return [(providers[n % 2], f"job-{n:02d}", statuses[n % 5], when(n)) for n in range(count)]


async def _store_jobs(store: MongoStore, jobs: list[tuple[Provider, str, JobStatus, datetime]]) -> None:
    # Inserted in reverse order: the listing's order must come from updated_at and the key, not insertion.
    for provider, task_id, status, at in reversed(jobs):
        await store.apply([(make_update(status, task_id=task_id, provider=provider), at, "d")])


def _expected(jobs: list[tuple[Provider, str, JobStatus, datetime]]) -> list[str]:
    return [f"{p}:{t}" for p, t, _, _ in sorted(jobs, key=lambda job: (job[3], f"{job[0]}:{job[1]}"))]


async def _all_pages(cli: Cli, *args: str) -> tuple[list[list[str]], list[str]]:
    """Every page of `jobs list --json ARGS`, following the cursor; the keys per page and the hints."""
    pages: list[list[str]] = []
    hints: list[str] = []
    after: list[str] = []
    while True:
        run = await cli("jobs", "list", "--json", *args, *after)
        assert run.code == 0, run.err
        lines = run.json_lines()
        pages.append([line["key"] for line in lines])
        if not run.err:
            return pages, hints
        hints.append(run.err)
        cursor = re.fullmatch(r"more: repeat with --after (\S+)\n", run.err)
        assert cursor is not None, run.err
        assert cursor.group(1) == lines[-1]["cursor"]  # the hint and the last line agree
        after = ["--after", cursor.group(1)]
        assert len(pages) < 50, "paging does not end"


async def test_list_pages_through_every_job_once_in_a_stable_order(store: MongoStore, cli: Cli) -> None:
    jobs = _jobs(23, lambda n: T0 + timedelta(seconds=n // 4))
    await _store_jobs(store, jobs)

    pages, hints = await _all_pages(cli, "--limit", "5")
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert len(hints) == 4
    flat = [key for page in pages for key in page]
    assert flat == _expected(jobs)  # no duplicate, no gap, ties broken by key

    # A page size that divides the count: the last full page says nothing more is to come.
    pages, _ = await _all_pages(cli, "--limit", "23")
    assert pages == [_expected(jobs)]

    # The table: the same order, the cursor printed after it.
    run = await cli("jobs", "list", "--limit", "3")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["UPDATED", "PROVIDER", "TASK", "STATUS", "PROVIDER", "STATUS", "KIND"]
    assert [f"{line.split()[1]}:{line.split()[2]}" for line in lines[1:4]] == _expected(jobs)[:3]
    assert lines[4].startswith("more: repeat with --after ")
    run = await cli("jobs", "list", "--limit", "3", "--after", lines[4].split()[-1])
    assert [f"{line.split()[1]}:{line.split()[2]}" for line in run.out.splitlines()[1:4]] == _expected(jobs)[
        3:6
    ]


async def test_list_filters_by_provider_status_and_since(store: MongoStore, cli: Cli) -> None:
    jobs = _jobs(30, lambda n: T0 + timedelta(seconds=n // 3))
    await _store_jobs(store, jobs)
    since = T0 + timedelta(seconds=2)
    wanted = [job for job in jobs if job[0] == "tingwu" and job[2] in (COMPLETED, QUEUED) and job[3] >= since]
    assert len(wanted) >= 5

    pages, _ = await _all_pages(
        cli,
        "--provider",
        "tingwu",
        "--status",
        "completed",
        "--status",
        "queued",
        "--since",
        since.isoformat(),
        "--limit",
        "2",
    )
    assert len(pages) >= 3
    assert [key for page in pages for key in page] == _expected(wanted)

    run = await cli("jobs", "list", "--json", "--status", "failed", "--limit", "100")
    assert {line["key"] for line in run.json_lines()} == {f"{p}:{t}" for p, t, s, _ in jobs if s is FAILED}
    assert all(
        line["event_id"] == event_id(line["provider"], line["task_id"], FAILED) for line in run.json_lines()
    )

    run = await cli("jobs", "list", "--provider", "tencent-ci")
    assert (run.code, run.out.strip()) == (0, "no jobs")


async def test_list_since_a_relative_duration(store: MongoStore, cli: Cli) -> None:
    now = datetime.now(UTC)
    await store.apply([(make_update(RUNNING, task_id="old"), now - timedelta(hours=3), "d")])
    await store.apply([(make_update(RUNNING, task_id="new"), now - timedelta(minutes=10), "d")])
    run = await cli("jobs", "list", "--json", "--since", "1h")
    assert [line["task_id"] for line in run.json_lines()] == ["new"]
    run = await cli("jobs", "list", "--json", "--since", "4h")
    assert [line["task_id"] for line in run.json_lines()] == ["old", "new"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since", "yesterday"],
            "argument --since: not an ISO time or a duration like 30m, 2h, 1d: 'yesterday'",
        ),
        (["--after", "not-a-cursor"], "argument --after: not a cursor printed by `jobs list`"),
        (["--limit", "0"], "argument --limit: not a positive whole number: '0'"),
        (["--status", "done"], "argument --status: invalid choice: 'done'"),
    ],
)
async def test_list_refuses_bad_arguments_clearly(cli: Cli, args: list[str], message: str) -> None:
    run = await cli("jobs", "list", *args)
    assert run.code == 2
    assert message in run.err
    assert "Traceback" not in run.err


async def test_stuck_as_an_action_and_as_the_old_flag(store: MongoStore, cli: Cli) -> None:
    await store.apply(
        [
            (make_update(QUEUED, task_id="q1"), T0, "d"),
            (make_update(RUNNING, task_id="r1"), T0 + timedelta(seconds=1), "d"),
            (make_update(COMPLETED, task_id="c1"), T0, "d"),
        ]
    )
    new = await cli("jobs", "stuck", "--json")
    old = await cli("jobs", "--stuck", "--json")
    assert new.code == old.code == 0, new.err + old.err
    assert [line["task_id"] for line in new.json_lines()] == ["q1", "r1"]
    assert [line["task_id"] for line in old.json_lines()] == ["q1", "r1"]
    limited = await cli("jobs", "--stuck", "--json", "--limit", "1")
    assert [line["task_id"] for line in limited.json_lines()] == ["q1"]
    table = await cli("jobs", "stuck")
    assert table.out.splitlines()[0].split() == ["PROVIDER", "TASK", "STATUS", "AGE", "POLLING"]
    bare = await cli("jobs")
    assert bare.code == 2
    assert "choose an action: show, list or stuck" in bare.err


async def test_an_unreachable_database_is_one_clear_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SPEECHJOBS_MONGODB_URL", "mongodb://reader:pa55word@127.0.0.1:1/?directConnection=true"
    )
    monkeypatch.setenv("SPEECHJOBS_MONGODB_TIMEOUT_MS", "300")
    for args in (["show", "tingwu", "x"], ["list"]):
        run = await cli("jobs", *args)
        assert run.code == 1
        assert run.err.startswith("speechjobs: MongoDB: 127.0.0.1:1")
        assert "pa55word" not in run.err
        assert "Traceback" not in run.err
