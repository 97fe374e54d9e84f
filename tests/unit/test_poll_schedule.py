"""The poller's pure rules: intervals, backoff, stopping, vendor pauses, and the token bucket."""

from __future__ import annotations

import random

import pytest

from consumer.poller.ratelimit import TokenBucket
from consumer.poller.schedule import JITTER, next_poll, provider_pause
from consumer.settings import load_settings

SETTINGS = load_settings(poll_interval_s=60, poll_max_interval_s=300, poll_fast_interval_s=3).poller


def plan(**kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "provider": "tingwu",
        "verdict": "ok",
        "interval_s": None,
        "misses": 0,
        "last_status": None,
        "status": "ONGOING",
        "terminal": False,
        "rng": random.Random(7),
    }
    return next_poll(SETTINGS, **(args | kw))  # type: ignore[arg-type]


def test_a_changed_state_is_polled_again_after_the_base_interval() -> None:
    first = plan()
    assert first.interval_s == 60
    assert first.due_in_s is not None
    assert 60 * (1 - JITTER) <= first.due_in_s <= 60 * (1 + JITTER)


def test_no_change_doubles_the_interval_up_to_the_cap() -> None:
    intervals = []
    interval = None
    for _ in range(6):
        step = plan(interval_s=interval, last_status="ONGOING")
        interval = step.interval_s
        intervals.append(interval)
    assert intervals == [120, 240, 300, 300, 300, 300]


def test_a_terminal_answer_stops_polling() -> None:
    step = plan(status="COMPLETED", terminal=True, interval_s=240)
    assert (step.due_in_s, step.stopped) == (None, "terminal")


def test_metastudio_goes_faster_while_processing() -> None:
    step = plan(provider="huawei-metastudio", status="PROCESSING", last_status="PROCESSING", interval_s=120)
    assert step.interval_s == 3
    assert (
        plan(provider="tingwu", status="PROCESSING", last_status="PROCESSING", interval_s=120).interval_s
        == 240
    )


def test_not_found_stops_after_the_limit_in_a_row() -> None:
    limit = SETTINGS.poll_not_found_limit
    misses = 0
    for _ in range(limit - 1):
        step = plan(verdict="not-found", status=None, misses=misses)
        assert step.stopped is None
        misses = step.misses
    last = plan(verdict="not-found", status=None, misses=misses)
    assert (last.stopped, last.misses, last.due_in_s) == ("not-found", limit, None)
    assert plan(misses=misses).misses == 0  # an answer about the job resets the count


@pytest.mark.parametrize("verdict", ["error", "throttled", "auth"])
def test_failures_back_off_and_keep_polling(verdict: str) -> None:
    step = plan(verdict=verdict, status=None, interval_s=60)
    assert step.stopped is None
    assert step.interval_s == 120


def test_vendor_pauses() -> None:
    assert provider_pause("throttled", retry_after_s=None, pauses=0, cap_s=300) == 1
    assert provider_pause("throttled", retry_after_s=None, pauses=3, cap_s=300) == 8
    assert provider_pause("throttled", retry_after_s=20, pauses=0, cap_s=300) == 20
    assert provider_pause("throttled", retry_after_s=None, pauses=20, cap_s=300) == 300
    assert provider_pause("auth", retry_after_s=None, pauses=0, cap_s=300) == 300
    assert provider_pause("error", retry_after_s=None, pauses=0, cap_s=300) == 0
    assert provider_pause("ok", retry_after_s=5, pauses=0, cap_s=300) == 0


def test_the_bucket_spreads_takers_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(5, clock=lambda: now[0])
    waits = [bucket.reserve() for _ in range(10)]
    assert waits[:5] == [0.0] * 5  # a second's worth at once
    assert waits[5:] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    now[0] = 10.0  # a long quiet spell saves up no more than a second's worth
    assert [bucket.reserve() for _ in range(6)][-1] == pytest.approx(0.2)
