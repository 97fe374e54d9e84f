"""A token bucket per vendor: requests spread at the configured rate, bursts no larger than one second's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """`rate` tokens a second, at most `rate` (and at least one) saved up; a taker without a token
    reserves the next one and waits for it, so concurrent takers queue in order instead of racing."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    def reserve(self) -> float:
        """Take a token, and return how long to wait before using it (0.0: at once)."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate) - 1
        self._at = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
