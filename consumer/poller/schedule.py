"""When a job is polled next, or why no more: pure rules over one answer, no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass

from consumer.settings import PollerSettings
from consumer.store.polls import Stopped
from consumer.vendors._client import Verdict
from schemas.job import Provider

__all__ = ["JITTER", "Next", "jittered", "next_poll", "provider_pause"]

JITTER = 0.1  # ±10 %: replicas and jobs tracked together drift apart instead of polling in step


@dataclass(frozen=True, slots=True)
class Next:
    """The schedule after one answer: due again in `due_in_s` (None: stopped, and why)."""

    due_in_s: float | None
    interval_s: float | None
    misses: int
    stopped: Stopped | None = None


def jittered(seconds: float, rng: random.Random | None = None) -> float:
    return seconds * (1 + (rng or random).uniform(-JITTER, JITTER))


def next_poll(
    settings: PollerSettings,
    *,
    provider: Provider,
    verdict: Verdict,
    interval_s: float | None,
    misses: int,
    last_status: str | None,
    status: str | None,
    terminal: bool,
    rng: random.Random | None = None,
) -> Next:
    """The next poll of one job after the vendor's answer (`status`: its state in that answer, if read)."""
    base, cap = settings.poll_interval_s, settings.poll_max_interval_s
    backed_off = min((interval_s or base) * 2, cap)
    if verdict == "ok":
        if terminal:
            return Next(None, interval_s, 0, "terminal")
        interval = base if status != last_status else backed_off
        if provider == "huawei-metastudio" and status == "PROCESSING":
            interval = min(interval, settings.poll_fast_interval_s)
        return Next(jittered(interval, rng), interval, 0)
    if verdict == "not-found":
        # Vendors may answer "no such job" for a moment after accepting it: a few tries, then stop.
        if misses + 1 >= settings.poll_not_found_limit:
            return Next(None, interval_s, misses + 1, "not-found")
        return Next(jittered(base, rng), interval_s, misses + 1)
    # throttled, auth, error: the job waits at least its backed-off interval; the vendor's pause, if
    # longer, is the poller's to apply (provider_pause).
    return Next(jittered(backed_off, rng), backed_off, misses)


def provider_pause(verdict: Verdict, *, retry_after_s: float | None, pauses: int, cap_s: float) -> float:
    """How long to stop asking a vendor after a throttling or refused-credentials answer (0: no pause).

    `pauses` counts this vendor's pauses in a row: each one doubles, from 1 s, up to `cap_s`.
    """
    if verdict == "throttled":
        doubled = min(2.0**pauses, cap_s)
        return max(retry_after_s or 0.0, doubled)
    if verdict == "auth":
        # Credentials do not fix themselves within seconds; a rotated secret is picked up on restart.
        return cap_s
    return 0.0
