"""Liveness and readiness state shared by the pipeline, the consumer loop and the HTTP endpoints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Health"]


@dataclass(slots=True)
class Health:
    consuming: bool = False
    broker_connected: bool = False
    last_beat: float = field(default_factory=time.monotonic)
    _degraded: dict[str, str] = field(default_factory=dict)

    def degrade(self, component: str, reason: str) -> bool:
        """Mark a component degraded; true the first time, so the caller logs once per outage."""
        first = component not in self._degraded
        self._degraded[component] = reason
        return first

    def recovered(self, component: str) -> None:
        self._degraded.pop(component, None)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def not_ready(self) -> list[str]:
        reasons = list(self._degraded.values())
        if not self.broker_connected:
            reasons.append("broker not connected")
        if not self.consuming:
            reasons.append("consumer not active")
        return reasons
