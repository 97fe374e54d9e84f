"""ICE callback authentication: X-ICE-SIGNATURE is MD5 of `<callback URL>|<timestamp>|<AuthKey>`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Literal

__all__ = ["SIGNATURE", "TIMESTAMP", "Verdict", "sign", "verify"]

SIGNATURE = "x-ice-signature"
TIMESTAMP = "x-ice-timestamp"

Verdict = Literal["ok", "missing", "stale", "bad-signature"]


def sign(callback_url: str, timestamp: str, key: str) -> str:
    """The lowercase hex signature ICE sends for this URL, timestamp and key."""
    # MD5 because the vendor chose it; it authenticates a shared secret, nothing here relies on collisions.
    return hashlib.md5(f"{callback_url}|{timestamp}|{key}".encode(), usedforsecurity=False).hexdigest()


def verify(
    signature: str | None,
    timestamp: str | None,
    *,
    callback_url: str,
    keys: Sequence[str],
    now: float,
    window_s: float,
) -> Verdict:
    """Whether a callback's headers prove it came from ICE: a fresh timestamp signed with one of the keys."""
    if not signature or not timestamp:
        return "missing"
    try:
        sent = int(timestamp)
    except ValueError:
        return "missing"
    if abs(now - sent) > window_s:
        return "stale"
    given = signature.strip().lower().encode()
    # Every key is compared, in constant time each, so the answer's timing says nothing about which matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, sign(callback_url, timestamp, key).encode())
    return "ok" if matched else "bad-signature"
