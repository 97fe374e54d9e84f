"""Readiness shared by a process's parts and its probes; each outage logged once when it starts and ends."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

__all__ = ["Health"]

log = logging.getLogger("speechjobs.health")


@dataclass(slots=True)
class Health:
    """What keeps the process from being ready: components in an outage, or not working yet."""

    working: bool = False  # consuming, serving or polling: the process's own job has started
    _outages: dict[str, tuple[str, float]] = field(default_factory=dict)  # component -> (reason, since)

    def degrade(self, component: str, reason: str) -> None:
        """Mark a component unavailable; the first call of an outage logs one warning."""
        if component in self._outages:
            self._outages[component] = (reason, self._outages[component][1])
            return
        self._outages[component] = (reason, time.monotonic())
        log.warning("%s unavailable: %s", component, reason, extra={"component": component, "reason": reason})

    def recovered(self, component: str) -> None:
        """End a component's outage, if it had one, with one info line saying how long it lasted."""
        outage = self._outages.pop(component, None)
        if outage is not None:
            seconds = round(time.monotonic() - outage[1], 1)
            log.info(
                "%s available again after %.1f s",
                component,
                seconds,
                extra={"component": component, "outage_s": seconds},
            )

    def unavailable(self, component: str) -> bool:
        return component in self._outages

    def not_ready(self) -> list[str]:
        reasons = [f"{component} unavailable: {reason}" for component, (reason, _) in self._outages.items()]
        if not self.working:
            reasons.append("not working yet")
        return reasons
