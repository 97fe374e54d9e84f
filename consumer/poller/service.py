"""The poller process: claim due jobs, ask their vendors, publish the answers, schedule the next poll."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pymongo.errors import ConnectionFailure, PyMongoError

from consumer.amqp.connection import TRANSIENT, Producer, TopologyError, connect_producer
from consumer.amqp.publisher import publish_inbound
from consumer.core.contract import Inbound, inbound
from consumer.core.errors import Rejection, error_name
from consumer.core.normalize import Limits
from consumer.poller.ratelimit import TokenBucket
from consumer.poller.schedule import next_poll, provider_pause
from consumer.runtime import logs, metrics, tracing
from consumer.runtime.health import Health
from consumer.runtime.lifecycle import freeze_startup_heap, stop_on_signals, until_up
from consumer.runtime.probes import serve
from consumer.settings import Settings
from consumer.store.mongo import mongo_client
from consumer.store.polls import Claim, PollStore, Stopped
from consumer.vendors import normalize
from consumer.vendors._client import Answer, StatusClient
from consumer.vendors.clients import status_clients
from consumer.vendors.tencent_ci.client import LISTING_PAGE, TencentCiStatusClient, listing_next_token
from schemas.job import PROVIDERS, JobStatus, JobUpdate, Provider

__all__ = ["EXIT_CONFIG", "PollerService"]

log = logging.getLogger("speechjobs.poller")

EXIT_CONFIG = 2
T = TypeVar("T")
_IDLE_S = 1.0  # longest wait for new due jobs (tracked ones appear at any time)
_RECONCILE_LIMIT = 1_000  # silent jobs put on the schedule per provider per round
# Tencent's listing starts this long before the oldest due job was put on the schedule (it was created
# at the vendor a little earlier: the submitter tracks it after submitting it).
_LISTING_MARGIN = timedelta(minutes=10)


class PollerService:
    """`speechjobs poll`. Clients can be given (tests); otherwise built from the vendor settings."""

    def __init__(self, settings: Settings, *, clients: dict[Provider, StatusClient] | None = None) -> None:
        self.settings = settings
        self.health = Health()
        self._clients = clients
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        self._stopping = asyncio.Event()
        self._paused: dict[Provider, float] = {}  # provider -> monotonic time its pause ends
        self._pauses: dict[Provider, int] = {}  # pauses in a row, for the doubling
        self._limits = Limits.of(settings.limits)

    async def run(self) -> int:
        settings = self.settings
        stop = stop_on_signals()
        client = mongo_client(settings.mongodb)
        store = PollStore(client.get_database(settings.mongodb.mongodb_database))
        port = settings.runtime.http_port
        server = await serve("0.0.0.0", port, live=self._live, ready=self._ready) if port else None
        producer: Producer | None = None
        clients = self._clients
        try:
            if (
                await until_up(
                    "mongodb", _ok(store.setup), transient=_mongo_down, stop=stop, health=self.health
                )
                is None
            ):
                return 0
            try:
                producer = await until_up(
                    "broker",
                    lambda: connect_producer(settings.amqp, name="speechjobs-poller"),
                    transient=lambda e: isinstance(e, TRANSIENT),
                    stop=stop,
                    health=self.health,
                )
            except TopologyError as exc:
                log.error("cannot start: %s", exc, extra={"component": "broker"})
                return EXIT_CONFIG
            if producer is None:
                return 0
            if clients is None:
                clients, unpolled = status_clients(settings.vendors)
                for provider, why in unpolled.items():
                    log.warning("not polling %s: %s", provider, why, extra={"provider": provider})
            for provider in PROVIDERS:
                metrics.POLLER_PROVIDERS.labels(provider).set(1 if provider in clients else 0)
            return await self._poll(store, producer, clients, stop)
        finally:
            self._stopping.set()
            if clients is not None:
                for vendor in {id(c): c for c in clients.values()}.values():
                    with contextlib.suppress(Exception):
                        await vendor.aclose()
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.close()
            await client.close()
            if server is not None:
                server.close()
            log.info("stopped")

    async def _poll(
        self, store: PollStore, producer: Producer, clients: dict[Provider, StatusClient], stop: asyncio.Event
    ) -> int:
        freeze_startup_heap()
        loops = [
            asyncio.create_task(self._provider_loop(p, c, store, producer), name=f"poll-{p}")
            for p, c in clients.items()
        ]
        loops.append(asyncio.create_task(self._reconcile_loop(store, list(clients)), name="reconcile"))
        self.health.working = True
        log.info("polling", extra={"providers": list(clients), "owner": self._owner})
        await stop.wait()
        self.health.working = False
        # No new claims; polls in flight finish (their answers published, their schedule written).
        self._stopping.set()
        log.info("shutting down", extra={"grace_s": self.settings.runtime.shutdown_grace_s})
        done, pending = await asyncio.wait(loops, timeout=self.settings.runtime.shutdown_grace_s)
        for task in pending:
            task.cancel()  # a lease not written back expires: another replica polls that job
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("a polling loop failed", exc_info=task.exception())
        return 0

    async def _provider_loop(
        self, provider: Provider, client: StatusClient, store: PollStore, producer: Producer
    ) -> None:
        poller = self.settings.poller
        bucket = TokenBucket(poller.poll_rate[provider])
        slots = asyncio.Semaphore(poller.poll_concurrency)
        running: set[asyncio.Task[None]] = set()
        queue_id = self.settings.vendors.tencent_ci_queue_id
        listing = client if isinstance(client, TencentCiStatusClient) and queue_id else None
        while not self._stopping.is_set():
            pause = self._paused.get(provider, 0.0) - time.monotonic()
            if pause > 0:
                await self._sleep(min(pause, _IDLE_S))
                continue
            if listing is not None and queue_id:
                swept = await self._guarded(lambda: self._sweep(listing, queue_id, store, producer, bucket))
                if not swept:
                    await self._sleep(_IDLE_S)
                continue
            await slots.acquire()
            claim = await self._guarded(
                lambda: store.claim(provider, owner=self._owner, now=_now(), lease_s=poller.poll_lease_s)
            )
            if claim is None:
                slots.release()
                await self._sleep(_IDLE_S)
                continue
            task = asyncio.create_task(self._poll_one(claim, client, store, producer, bucket))
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(lambda _: slots.release())
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _poll_one(
        self, claim: Claim, client: StatusClient, store: PollStore, producer: Producer, bucket: TokenBucket
    ) -> None:
        try:
            if await self._settled(claim, store):
                return
            await bucket.take()
            paused = self._paused.get(claim.provider, 0.0) - time.monotonic()
            if paused > 0:  # another poll of this vendor was throttled while this one waited
                await store.release(claim, owner=self._owner, due_at=_now() + timedelta(seconds=paused))
                return
            await self._ask(claim, client, store, producer)
        except PyMongoError as exc:
            # The lease expires and the job is polled again: a duplicate answer, which the consumer drops.
            self.health.degrade("mongodb", error_name(exc))
            log.warning("poll of %s not recorded: %s", claim.key, error_name(exc))
        except Exception:  # a bug: this job waits for its lease to expire, the others go on
            log.exception("poll of %s failed", claim.key)

    async def _settled(self, claim: Claim, store: PollStore) -> bool:
        """Stop polling, without asking the vendor, a job already terminal or past the maximum age."""
        job = await store.job(claim.key)
        now = _now()
        stopped: Stopped | None = None
        if job is not None and JobStatus(job["status"]).terminal:
            stopped = "terminal"  # a callback or another poll got there first
        elif now - (job["created_at"] if job else claim.since) > timedelta(
            seconds=self.settings.poller.poll_max_age_s
        ):
            stopped = "max-age"
        if stopped is None:
            return False
        await store.finish(
            claim,
            owner=self._owner,
            now=now,
            due_at=None,
            interval_s=claim.interval_s,
            verdict="skipped",
            detail=stopped,
            misses=claim.misses,
            stopped=stopped,
            polled=False,
        )
        metrics.POLLS_STOPPED.labels(claim.provider, stopped).inc()
        return True

    async def _sweep(
        self,
        client: TencentCiStatusClient,
        queue_id: str,
        store: PollStore,
        producer: Producer,
        bucket: TokenBucket,
    ) -> int:
        """Tencent CI: the due jobs of its queue asked about with its listing, a page for up to 100 jobs
        instead of a request each; those the listing does not show are asked about one by one. Returns
        how many jobs were claimed (0: none due)."""
        lease_s = self.settings.poller.poll_lease_s
        claims: list[Claim] = []
        while len(claims) < LISTING_PAGE:
            claim = await store.claim("tencent-ci", owner=self._owner, now=_now(), lease_s=lease_s)
            if claim is None:
                break
            if not await self._settled(claim, store):
                claims.append(claim)
        if len(claims) < 2:  # one request either way
            for claim in claims:
                await self._poll_one(claim, client, store, producer, bucket)
            return len(claims)
        wanted = {claim.task_id: claim for claim in claims}
        seen: dict[str, tuple[str | None, bool]] = {}
        since = min(claim.since for claim in claims) - _LISTING_MARGIN
        token: str | None = None
        for _ in range(len(claims) // LISTING_PAGE + 3):  # the queue holds other jobs too: a few pages more
            await bucket.take()
            span = tracing.client_span("tencent-ci", "listing") if tracing.enabled else None
            started = time.perf_counter()
            answer = await client.listing(queue_id=queue_id, since=since, next_token=token)
            if span is not None:  # the client never raises for the vendor's failures: no try needed
                tracing.end_client_span(span, answer.verdict, answer.http_status)
            metrics.POLLS.labels("tencent-ci", answer.verdict).inc()
            metrics.POLL_SECONDS.labels("tencent-ci").observe(time.perf_counter() - started)
            self._pause_if_asked("tencent-ci", answer)
            if answer.verdict != "ok":
                break
            message = inbound(
                answer.body,
                channel="poll",
                provider="tencent-ci",
                traceparent=tracing.traceparent_of(span) if span is not None else None,
                content_type=answer.content_type,
                polled_at=_now(),
            )
            if not await self._published(producer, message, claims, store):
                return len(claims)
            for update in self._updates(message):
                if update.task_id in wanted:
                    seen[update.task_id] = (update.provider_status, update.status.terminal)
            token = listing_next_token(answer.body)
            if not token or seen.keys() == wanted.keys():
                break
        listed = Answer("ok", 200, detail="listing")
        for task_id, claim in wanted.items():
            if task_id in seen:
                status, terminal = seen[task_id]
                await self._schedule(claim, listed, status, terminal, _now(), 0.0, store)
            else:
                await self._poll_one(claim, client, store, producer, bucket)
        return len(claims)

    async def _ask(self, claim: Claim, client: StatusClient, store: PollStore, producer: Producer) -> None:
        provider = claim.provider
        # The vendor call's CLIENT span starts the trace; its context travels in the answer's traceparent.
        span = tracing.client_span(provider, "status", claim.task_id) if tracing.enabled else None
        started = time.perf_counter()
        answer = await client.status(claim.task_id)
        elapsed = time.perf_counter() - started
        if span is not None:  # the client never raises for the vendor's failures: no try needed
            tracing.end_client_span(span, answer.verdict, answer.http_status)
        now = _now()
        metrics.POLLS.labels(provider, answer.verdict).inc()
        metrics.POLL_SECONDS.labels(provider).observe(elapsed)
        status, terminal = None, False
        if answer.verdict == "ok":
            message = inbound(
                answer.body,
                channel="poll",
                provider=provider,
                task_id=claim.task_id,
                traceparent=tracing.traceparent_of(span) if span is not None else None,
                content_type=answer.content_type,
                polled_at=now,
            )
            if not await self._published(producer, message, [claim], store):
                return
            status, terminal = self._read(claim.task_id, message)
        self._pause_if_asked(provider, answer)
        await self._schedule(claim, answer, status, terminal, now, elapsed, store)

    async def _published(
        self, producer: Producer, message: Inbound, claims: list[Claim], store: PollStore
    ) -> bool:
        """Publish an answer with a confirm; on failure give the jobs back, due again in a few seconds."""
        try:
            await publish_inbound(producer, message, timeout=self.settings.amqp.publish_timeout_s)
        except Exception as exc:  # the broker is down or refused: poll again soon, nothing recorded
            self.health.degrade("broker", error_name(exc))
            log.warning("an answer was not published: %s", error_name(exc), extra={"jobs": len(claims)})
            for claim in claims:
                await store.release(claim, owner=self._owner, due_at=_now() + timedelta(seconds=5))
            return False
        self.health.recovered("broker")
        return True

    async def _schedule(
        self,
        claim: Claim,
        answer: Answer,
        status: str | None,
        terminal: bool,
        now: datetime,
        elapsed: float,
        store: PollStore,
    ) -> None:
        provider = claim.provider
        plan = next_poll(
            self.settings.poller,
            provider=provider,
            verdict=answer.verdict,
            interval_s=claim.interval_s,
            misses=claim.misses,
            last_status=claim.last_status,
            status=status,
            terminal=terminal,
        )
        due_at = None
        if plan.due_in_s is not None:
            resume = self._paused.get(provider, 0.0) - time.monotonic()
            due_at = now + timedelta(seconds=max(plan.due_in_s, resume))
        await store.finish(
            claim,
            owner=self._owner,
            now=now,
            due_at=due_at,
            interval_s=plan.interval_s,
            verdict=answer.verdict,
            detail=answer.detail,
            status=status,
            misses=plan.misses,
            stopped=plan.stopped,
        )
        self.health.recovered("mongodb")
        if plan.stopped is not None:
            metrics.POLLS_STOPPED.labels(provider, plan.stopped).inc()
        logs.outcome(
            log,
            f"poll {answer.verdict}",
            {
                "provider": provider,
                "task_id": claim.task_id,
                "verdict": answer.verdict,
                "http_status": answer.http_status,
                "detail": answer.detail,
                "vendor_status": status,
                "next_in_s": round(plan.due_in_s, 1) if plan.due_in_s is not None else None,
                "stopped": plan.stopped,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )

    def _updates(self, message: Inbound) -> tuple[JobUpdate, ...]:
        """The updates the consumer will read from an answer (none when it will dead-letter it)."""
        try:
            return normalize(message, enabled=PROVIDERS, limits=self._limits).updates
        except Rejection:
            return ()

    def _read(self, task_id: str, message: Inbound) -> tuple[str | None, bool]:
        """The vendor's state for this job in its answer, as the consumer will read it (None if unread)."""
        updates = self._updates(message)
        mine = [u for u in updates if u.task_id == task_id] or list(updates[:1])
        if not mine:
            return None, False  # the consumer dead-letters it with the reason; polling backs off
        return mine[0].provider_status, mine[0].status.terminal

    def _pause_if_asked(self, provider: Provider, answer: Answer) -> None:
        cap = self.settings.poller.poll_max_interval_s
        pauses = self._pauses.get(provider, 0)
        pause = provider_pause(answer.verdict, retry_after_s=answer.retry_after_s, pauses=pauses, cap_s=cap)
        if pause <= 0:
            if answer.verdict == "ok":
                self._pauses[provider] = 0
                for verdict in ("throttled", "auth"):
                    metrics.POLLER_PAUSED.labels(provider, verdict).set(0)
            return
        until = time.monotonic() + pause
        if until <= self._paused.get(provider, 0.0):
            return  # concurrent answers of one episode extend nothing
        self._paused[provider] = until
        self._pauses[provider] = pauses + 1
        metrics.POLLER_PAUSED.labels(provider, answer.verdict).set(1)
        log.warning(
            "%s %s: pausing its polls for %.1f s",
            provider,
            "throttles" if answer.verdict == "throttled" else "refused the credentials",
            pause,
            extra={
                "provider": provider,
                "verdict": answer.verdict,
                "detail": answer.detail,
                "pause_s": pause,
            },
        )

    async def _reconcile_loop(self, store: PollStore, providers: list[Provider]) -> None:
        poller = self.settings.poller
        while not self._stopping.is_set():
            for provider in providers:
                found = await self._guarded(functools.partial(self._reconcile, store, provider))
                if found:
                    log.info(
                        "%d silent %s job(s) put on the schedule",
                        found,
                        provider,
                        extra={"provider": provider, "jobs": found},
                    )
            await self._sleep(poller.poll_reconcile_every_s)

    async def _reconcile(self, store: PollStore, provider: Provider) -> int:
        now = _now()
        silent_before = now - timedelta(seconds=self.settings.poller.poll_silence[provider])
        return await store.reconcile(provider, silent_before=silent_before, now=now, limit=_RECONCILE_LIMIT)

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """A database call of the loops: on an outage, degrade readiness, wait a little, return None."""
        try:
            result = await call()
        except PyMongoError as exc:
            self.health.degrade("mongodb", error_name(exc))
            await self._sleep(_IDLE_S)
            return None
        self.health.recovered("mongodb")
        return result

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _live(self) -> list[str]:
        return []

    async def _ready(self) -> list[str]:
        return self.health.not_ready()


def _ok(call: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        await call()
        return True

    return run


def _mongo_down(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionFailure)


def _now() -> datetime:
    return datetime.now(UTC)
