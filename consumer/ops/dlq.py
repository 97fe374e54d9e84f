"""Dead-letter operations on the broker: browse without removing, replay to their origin, purge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from consumer.ops.letters import Letter, Selection, describe, replay_headers
from consumer.settings import Settings

__all__ = ["DeadLetterQueueMissing", "ReplayReport", "browse", "purge", "replay", "replay_message"]

log = logging.getLogger("speechjobs.dlq")


class DeadLetterQueueMissing(Exception):
    """The configured dead-letter queue does not exist (the service never started with these settings)."""


def replay_message(letter: Letter) -> aio_pika.Message:
    return aio_pika.Message(
        letter.body,
        headers=replay_headers(letter.headers),
        content_type=letter.content_type,
        message_id=letter.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


# Broker I/O

_ReplayOutcome = Literal["replayed", "skipped", "failed"]


@dataclass(slots=True)
class ReplayReport:
    seen: int = 0
    selected: int = 0
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    stopped: str | None = None  # why the run ended early, if it did

    def add(self, outcome: _ReplayOutcome) -> None:
        if outcome == "replayed":
            self.replayed += 1
        elif outcome == "skipped":
            self.skipped += 1
        else:
            self.failed += 1


@asynccontextmanager
async def _dead_letters(settings: Settings) -> AsyncIterator[tuple[AbstractConnection, AbstractQueue]]:
    connection = await aio_pika.connect(
        settings.amqp.amqp_url.get_secret_value(), client_properties={"connection_name": "speechjobs-dlq"}
    )
    try:
        channel = await connection.channel(publisher_confirms=False)
        try:
            queue = await channel.declare_queue(settings.consumer.dead_letter_queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise DeadLetterQueueMissing(settings.consumer.dead_letter_queue) from None
        try:
            yield connection, queue
        finally:
            # Closing hands every dead letter still unacked back, each in its original position
            # (the dead-letter queue is a classic queue); a killed process has the same effect.
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()


async def _take(
    queue: AbstractQueue, selection: Selection
) -> tuple[list[tuple[AbstractIncomingMessage, Letter]], int]:
    """Get the dead letters present now and hold them unacked; return the selected ones and the count seen.

    Bounded by the depth at the start so that letters dead-lettered meanwhile (a replay failing
    again, say) are not taken a second time.
    """
    depth = queue.declaration_result.message_count or 0
    selected: list[tuple[AbstractIncomingMessage, Letter]] = []
    seen = 0
    while seen < depth and (selection.limit is None or len(selected) < selection.limit):
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        seen += 1
        letter = describe(
            message.body,
            message.headers,
            routing_key=message.routing_key or "",
            message_id=message.message_id,
            content_type=message.content_type,
        )
        if selection.matches(letter):
            selected.append((message, letter))
    return selected, seen


async def browse(settings: Settings, selection: Selection) -> list[Letter]:
    """The selected dead letters, in queue order; all of them stay in the queue."""
    async with _dead_letters(settings) as (_, queue):
        taken, _ = await _take(queue, selection)
        return [letter for _, letter in taken]


async def purge(settings: Settings, selection: Selection, *, confirmed: bool) -> int:
    """Delete the selected dead letters (only count them unless confirmed); the others stay."""
    async with _dead_letters(settings) as (_, queue):
        taken, _ = await _take(queue, selection)
        if confirmed:
            for message, letter in taken:
                await message.ack()
                log.info("purged dead letter %s (%s)", letter.id, letter.reason)
        return len(taken)


async def replay(
    settings: Settings,
    selection: Selection,
    *,
    rate: float | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> ReplayReport:
    """Republish each selected dead letter to where it first came from; ack it only once confirmed.

    A crash between the confirm and the ack leaves the letter both replayed and still dead-lettered:
    a duplicate the service deduplicates, never a loss.
    """
    async with _dead_letters(settings) as (connection, queue):
        taken, seen = await _take(queue, selection)
        report = ReplayReport(seen=seen, selected=len(taken))
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchanges: dict[str, AbstractExchange | None] = {}
        started = time.monotonic()
        try:
            for index, (message, letter) in enumerate(taken):
                if rate:
                    await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
                report.add(await _replay_one(connection, channel, exchanges, message, letter, settings))
                progress(index + 1, len(taken))
        except (
            aio_pika.exceptions.AMQPError,
            aio_pika.exceptions.ChannelInvalidStateError,
            ConnectionError,
        ) as exc:
            # A lost channel (or the broker's consumer_timeout on held letters) puts every unacked
            # letter back: the rest simply stay dead-lettered.
            report.stopped = f"{type(exc).__name__}: {exc}"
            log.error("replay stopped after %d of %d: %s", report.replayed, len(taken), report.stopped)
        return report


async def _replay_one(
    connection: AbstractConnection,
    channel: AbstractChannel,
    exchanges: dict[str, AbstractExchange | None],
    message: AbstractIncomingMessage,
    letter: Letter,
    settings: Settings,
) -> _ReplayOutcome:
    if letter.target is None:
        log.warning("dead letter %s has no known origin, left in the queue", letter.id)
        return "skipped"
    exchange_name, routing_key = letter.target
    if exchange_name not in exchanges:
        exchanges[exchange_name] = await _exchange(connection, channel, exchange_name)
    exchange = exchanges[exchange_name]
    if exchange is None:
        log.warning(
            "exchange %r of dead letter %s does not exist, left in the queue", exchange_name, letter.id
        )
        return "failed"
    try:
        await exchange.publish(
            replay_message(letter),
            routing_key=routing_key,
            mandatory=True,
            timeout=settings.amqp.publish_timeout_s,
        )
    except (aio_pika.exceptions.DeliveryError, TimeoutError) as exc:
        log.warning("dead letter %s not replayed (%s), left in the queue", letter.id, type(exc).__name__)
        return "failed"
    await message.ack()
    return "replayed"


async def _exchange(
    connection: AbstractConnection, channel: AbstractChannel, name: str
) -> AbstractExchange | None:
    """The exchange on the publishing channel, or None if it does not exist.

    Checked on a throwaway channel: a passive declare of a missing exchange closes its channel.
    """
    if name == "":
        return channel.default_exchange
    probe = await connection.channel(publisher_confirms=False)
    try:
        await probe.get_exchange(name, ensure=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        with contextlib.suppress(Exception):
            await probe.close()
    return await channel.get_exchange(name, ensure=False)
