"""Prometheus metrics, all prefixed speechjobs_."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_SIZE",
    "DB_SECONDS",
    "DEAD_LETTERS",
    "DUPLICATES",
    "EVENTS",
    "EVENTS_UNROUTED",
    "INBOUND_READY",
    "IN_FLIGHT",
    "IN_FLIGHT_BYTES",
    "MESSAGES",
    "POLLER_PAUSED",
    "POLLER_PROVIDERS",
    "POLLS",
    "POLLS_STOPPED",
    "POLL_SECONDS",
    "PROCESSING_SECONDS",
    "PUBLISH_FAILURES",
    "PUBLISH_SECONDS",
    "RECEIVER_AUTH_FAILURES",
    "RECEIVER_CONFIRM_SECONDS",
    "RECEIVER_IN_FLIGHT",
    "RECEIVER_REFUSED",
    "RECEIVER_REQUESTS",
    "TRANSITIONS",
]

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

MESSAGES = Counter("speechjobs_messages", "Inbound messages by provider and outcome", ["provider", "outcome"])
DUPLICATES = Counter(
    "speechjobs_duplicates", "Updates that changed nothing (vendor retries, redeliveries)", ["provider"]
)
DEAD_LETTERS = Counter("speechjobs_dead_letters", "Messages dead-lettered, by reason", ["reason"])
TRANSITIONS = Counter("speechjobs_job_transitions", "Job state transitions", ["provider", "status"])
EVENTS = Counter("speechjobs_events_published", "Events confirmed by the broker", ["provider", "type"])
PROCESSING_SECONDS = Histogram(
    "speechjobs_processing_seconds", "Batch processing time per message", buckets=_FAST
)
DB_SECONDS = Histogram("speechjobs_db_seconds", "MongoDB write time per batch", buckets=_FAST)
PUBLISH_SECONDS = Histogram(
    "speechjobs_publish_seconds", "Event publish-to-confirm time per batch", buckets=_FAST
)
# Unlabelled, so exported as 0 from the start: increase() sees the first failure (a labelled series
# would appear at 1 and hide it).
PUBLISH_FAILURES = Counter(
    "speechjobs_publish_failures",
    "Failed attempts to publish events or dead letters to the broker (not confirmed in time, returned, "
    "nacked, connection lost); each is retried",
)
BATCH_SIZE = Histogram(
    "speechjobs_batch_size", "Messages per batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
)
IN_FLIGHT = Gauge("speechjobs_in_flight_messages", "Messages received and not yet settled")
IN_FLIGHT_BYTES = Gauge("speechjobs_in_flight_bytes", "Bodies received and not yet settled, in bytes")
# RabbitMQ's own metrics may not be scraped: the consumer's view of its queue, for "messages wait but
# none are processed". Ready messages only; those delivered and unacked are IN_FLIGHT.
INBOUND_READY = Gauge(
    "speechjobs_inbound_ready_messages",
    "Messages ready in the inbound queue, not yet delivered to a consumer (sampled every 30 s)",
)
EVENTS_UNROUTED = Gauge(
    "speechjobs_events_unrouted",
    "Events waiting in the unrouted-events queue: published, but no subscriber's binding matched them",
)

RECEIVER_REQUESTS = Counter(
    "speechjobs_receiver_requests",
    "Callback requests answered, by provider and HTTP status",
    ["provider", "status"],
)
RECEIVER_CONFIRM_SECONDS = Histogram(
    "speechjobs_receiver_confirm_seconds", "From the body read to the broker's confirm", buckets=_FAST
)
RECEIVER_AUTH_FAILURES = Counter(
    "speechjobs_receiver_auth_failures", "Callbacks refused before publishing, by reason", ["reason"]
)
RECEIVER_IN_FLIGHT = Gauge("speechjobs_receiver_in_flight", "Callback requests being handled")
RECEIVER_REFUSED = Counter(
    "speechjobs_receiver_refused",
    "Connections cut before a request reached the app: malformed, head too large or too slow, idle",
    ["reason"],
)

POLLS = Counter(
    "speechjobs_polls",
    "Vendor status requests, by provider and verdict (ok, not-found, throttled, auth, error)",
    ["provider", "verdict"],
)
POLL_SECONDS = Histogram("speechjobs_poll_seconds", "Vendor status request time", ["provider"], buckets=_FAST)
POLLS_STOPPED = Counter(
    "speechjobs_polls_stopped",
    "Jobs no longer polled, by reason (terminal, not-found, max-age)",
    ["provider", "reason"],
)
POLLER_PROVIDERS = Gauge(
    "speechjobs_poller_provider_enabled",
    "1 when the provider is polled, 0 when it lacks credentials",
    ["provider"],
)
POLLER_PAUSED = Gauge(
    "speechjobs_poller_paused",
    "1 while the poller waits out a vendor's throttling or credential refusal",
    ["provider", "verdict"],
)
