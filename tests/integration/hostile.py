"""A hostile-input corpus made from a seed: one class per finding of the stress run, plus random damage."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.faults import tingwu_body

SECRET = "s3cr3tMARKER"  # every secret the corpus carries contains it; none may come out anywhere

FIXTURES = Path(__file__).parents[1] / "fixtures"


@dataclass(frozen=True, slots=True)
class Hostile:
    kind: str  # the finding's class, for the report
    body: bytes
    routing_key: str = "callback.tingwu"
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None


def _tingwu(task_id: Any, status: str = "COMPLETED", **data: Any) -> bytes:
    return json.dumps(
        {"Code": "0", "Data": {"TaskId": task_id, "TaskStatus": status, **data}, "RequestId": "r"}
    ).encode()


def targeted() -> Iterator[Hostile]:
    """Exactly the inputs the stress run found, one or a few of each."""
    # 1. Headers the client cannot re-encode, and byte arrays.
    yield Hostile("bytes-header", b"not json", headers={"x-nested": {"raw": b"\xff\xfe\xfa"}})
    yield Hostile("bytes-header", b"not json", headers={"x-bytes": b"\x80abc", "x-list": [b"\xc3\x28"]})
    # 2. Near the frame limit: headers of 131,000 bytes; a valid body with a 130,963-byte traceparent.
    yield Hostile("frame-size", b"not json", headers={"x-big": "h" * 131_000})
    yield Hostile("frame-size-event", tingwu_body(9001, "COMPLETED"), headers={"traceparent": "0" * 130_963})
    # 3. Bodies just under the 1 MiB size limit, each with 85,000 result keys: 37 of them in one batch
    # pushed RSS over a gigabyte.
    results = {f"{i:x}": "" for i in range(85_000)}
    for i in range(37):
        yield Hostile("huge-members", _tingwu(f"members-{i}", Result=results))
    # 4. Unknown statuses piling up on one job (its COMPLETED comes among the valid messages).
    for i in range(71):
        yield Hostile("unknown-state", _tingwu("locked-job", f"WEIRD_{i}_" + "X" * 1000))
    # 5. Failures no reason was mapped to.
    yield Hostile("long-task-id", _tingwu("t" * 300))
    for charset in ("punycode", "idna", "x-unknown", "zlib", "rot13"):
        yield Hostile(
            "charset", _tingwu(f"cs-{charset}"), content_type=f"application/json; charset={charset}"
        )
    for year in ("0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00"):
        job = {"JobId": f"y-{year[:4]}", "State": "Finished", "JobType": "ASR", "CreateTime": year}
        yield Hostile("overflow-time", json.dumps(job).encode(), routing_key="callback.aliyun-ice")
    yield Hostile("nul-key", _tingwu("nul-key", Result={"bad\u0000key": "http://x"}))
    # 6. Secrets in routing keys and nested headers, and the headers gateways use.
    yield Hostile("secret", b"garbage", routing_key=f"callback.tingwu?Signature={SECRET}")
    yield Hostile(
        "secret",
        b"garbage",
        headers={
            "x-oss-signature": SECRET,
            "x-api-key": SECRET,
            "x-nested": {"deeper": [{"authorization": f"Bearer {SECRET}"}, f"http://u/?token={SECRET}"]},
        },
    )
    # 7. DTDs in UTF-16, a billion laughs in UTF-16 over 32 KB, a lone surrogate.
    dtd = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><x>1</x>'
    yield Hostile("utf16-dtd", dtd.encode("utf-16"), routing_key="callback.tencent-ci")
    public = '<!DOCTYPE x PUBLIC "-//X//EN" "http://127.0.0.1:9/y.dtd"><Response><JobsDetail/></Response>'
    yield Hostile("utf16-dtd", public.encode("utf-16"), routing_key="callback.tencent-ci")
    laughs = '<!DOCTYPE l [<!ENTITY a "' + "a" * 20_000 + '"><!ENTITY b "&a;&a;&a;&a;&a;">]><l>&b;</l>'
    yield Hostile("utf16-laughs", laughs.encode("utf-16"), routing_key="callback.tencent-ci")
    yield Hostile("surrogate", b"<Response>\xed\xa0\x80</Response>", routing_key="callback.tencent-ci")
    # 8. Data integrity: big integer ids, an id that is a float, JSON nested in strings, fan-out.
    for i in range(20):
        yield Hostile("big-int-id", _tingwu(2**53 + i))
    yield Hostile("float-id", b'{"Code":"0","Data":{"TaskId":1e-999,"TaskStatus":"COMPLETED"}}')
    nested = json.dumps(_nest(100))
    ice = {"JobId": "deep-user-data", "State": "Finished", "JobType": "ASR", "UserData": nested}
    yield Hostile("nested-json", json.dumps(ice).encode(), routing_key="callback.aliyun-ice")
    listing = {"SmartJobList": [{"JobId": f"fan-{i}", "JobState": "Finished"} for i in range(1000)]}
    yield Hostile("fan-out", json.dumps(listing).encode(), routing_key="poll.aliyun-ice")


def _nest(depth: int) -> Any:
    node: Any = "leaf"
    for _ in range(depth):
        node = {"n": node}
    return node


def random_damage(rng: random.Random, count: int) -> Iterator[Hostile]:
    """Random bytes, truncations and bit flips of real vendor bodies, on random routing keys."""
    samples = [p.read_bytes() for p in sorted((FIXTURES / "samples").glob("*")) if p.is_file()]
    keys = ["", "callback.tingwu", "callback.tencent-ci", "mq.aliyun-ice", "poll.huawei-metastudio", "x.y.z"]
    for _ in range(count):
        choice = rng.random()
        if choice < 0.2:
            body, kind = rng.randbytes(rng.randint(0, 2_000)), "random-bytes"
        else:
            damaged = bytearray(rng.choice(samples))
            if choice < 0.5:
                damaged, kind = damaged[: rng.randrange(max(len(damaged), 1))], "truncated"
            else:
                for _ in range(rng.randint(1, 6)):
                    damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
                kind = "bit-flip"
            body = bytes(damaged)
        yield Hostile(kind, body, rng.choice(keys))


def corpus(seed: int, random_count: int) -> list[Hostile]:
    rng = random.Random(seed)
    return [*targeted(), *random_damage(rng, random_count)]
