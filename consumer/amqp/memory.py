"""In-memory EventPublisher test double: records events and dead letters, and fails publishes on demand."""

from __future__ import annotations

from collections.abc import Sequence

from consumer.amqp.publisher import DeadLetter, EventPublisher, OutboundEvent

__all__ = ["RecordingPublisher"]


class RecordingPublisher(EventPublisher):
    """Implements consumer.amqp.publisher.EventPublisher with lists; no broker.

    `events` and `dead_letters` hold what was published, in order; a failed call records nothing.
    `fail_next(n, exc)` makes the next n calls (events or dead letters) raise exc, as a broker outage
    would: ConnectionError or aiormq.exceptions.DeliveryError are the faults the pipeline retries.
    """

    def __init__(self) -> None:
        self.events: list[OutboundEvent] = []
        self.dead_letters: list[DeadLetter] = []
        self.calls = 0  # publish_events and dead_letter calls, failed ones included
        self._failures: list[BaseException] = []

    def fail_next(self, times: int, exc: BaseException) -> None:
        """Raise `exc` from each of the next `times` calls."""
        self._failures.extend([exc] * times)

    async def publish_events(self, events: Sequence[OutboundEvent]) -> None:
        self._attempt()
        self.events.extend(events)

    async def dead_letter(self, letter: DeadLetter) -> None:
        self._attempt()
        self.dead_letters.append(letter)

    def _attempt(self) -> None:
        self.calls += 1
        if self._failures:
            raise self._failures.pop(0)
