"""Deterministic benchmark workload from the vendor fixtures: unique ids, retries, progressive updates."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from consumer.core.contract import Inbound
from consumer.core.errors import Rejection
from consumer.core.state import job_key
from consumer.vendors import normalize

__all__ = [
    "FIXTURES",
    "WORKLOADS",
    "Message",
    "Template",
    "Workload",
    "flood",
    "generate",
    "make",
    "templates",
]

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

RETRY_SHARE = 0.20  # share of all messages that are exact re-sends of an earlier body
PROGRESSIVE_SHARE = 0.20  # share of jobs that arrive as several progressive updates

# MetaStudio poll answers name no job: the relay passes the id it polled in x-task-id.
_HEADER_ID = "job-from-header"
_POLL_NAMES = ("poll", "gettaskinfo", "getsmarthandlejob", "showasyncttsjob", "describe", "list", "get")


@dataclass(frozen=True, slots=True)
class Template:
    """One fixture body whose task ids are rewritten for every job it stands for."""

    name: str
    provider: str
    fmt: str
    body: bytes
    routing_key: str
    ids: tuple[str, ...]  # the task ids as they appear in the body (or x-task-id), in update order
    terminal: tuple[bool, ...]  # whether the update for ids[i] is terminal
    header_id: bool = False

    def render(self, new_ids: tuple[str, ...]) -> tuple[bytes, dict[str, str]]:
        body = self.body
        for old, new in zip(self.ids, new_ids, strict=True):
            body = body.replace(old.encode(), new.encode())
        headers = {"x-task-id": new_ids[0]} if self.header_id else {}
        return body, headers


@dataclass(frozen=True, slots=True)
class Message:
    """One inbound message as the relay would publish it."""

    body: bytes
    routing_key: str
    headers: dict[str, str]
    provider: str
    fmt: str
    keys: tuple[str, ...]  # job keys ("provider:task_id") this body updates
    terminal: tuple[str, ...]  # job keys this body moves to a terminal state
    retry: bool
    progressive: bool


@dataclass(frozen=True, slots=True)
class Workload:
    messages: tuple[Message, ...]
    seed: int
    prefix: str

    @property
    def terminal_jobs(self) -> frozenset[str]:
        """Jobs that reach a terminal state: one event each."""
        return frozenset(k for m in self.messages for k in m.terminal)

    def summary(self) -> dict[str, object]:
        mix = Counter(f"{m.provider}/{m.fmt}" for m in self.messages)
        return {
            "messages": len(self.messages),
            "seed": self.seed,
            "retries": sum(m.retry for m in self.messages),
            "progressive_updates": sum(m.progressive and not m.retry for m in self.messages),
            "jobs": len({k for m in self.messages for k in m.keys}),
            "terminal_jobs": len(self.terminal_jobs),
            "mix": dict(sorted(mix.items())),
            "mean_body_bytes": round(sum(len(m.body) for m in self.messages) / max(1, len(self.messages))),
        }


def _routing_key(name: str, provider: str, body: bytes) -> str:
    if b'"specversion"' in body:
        return f"mq.{provider}"
    lowered = name.lower()
    channel = "poll" if any(part in lowered for part in _POLL_NAMES) else "callback"
    return f"{channel}.{provider}"


def _template(name: str, body: bytes) -> Template | None:
    header_id = name.startswith("huawei")
    headers = {"x-task-id": _HEADER_ID} if header_id else {}
    try:
        result = normalize(Inbound(body, "", headers))
    except Rejection:
        return None  # dead letters are not part of the throughput workload
    if not result.updates:
        return None
    ids = tuple(dict.fromkeys(u.task_id for u in result.updates))
    terminal = tuple(any(u.status.terminal for u in result.updates if u.task_id == i) for i in ids)
    fmt = "xml" if body.lstrip().startswith(b"<") else "json"
    template = Template(
        name=name,
        provider=result.provider,
        fmt=fmt,
        body=body,
        routing_key=_routing_key(name, result.provider, body),
        ids=ids,
        terminal=terminal,
        header_id=header_id and _HEADER_ID in ids,
    )
    _check(template)
    return template


def _check(template: Template) -> None:
    """The rewritten body must name exactly the new ids, or the workload would not be what it claims."""
    new_ids = tuple(f"check{i:04d}" for i in range(len(template.ids)))
    body, headers = template.render(new_ids)
    result = normalize(Inbound(body, template.routing_key, headers))
    got = tuple(dict.fromkeys(u.task_id for u in result.updates))
    if got != new_ids:
        raise ValueError(f"{template.name}: task ids {got} after rewriting, expected {new_ids}")


def _tencent_running(success: Template) -> Template:
    """The same Tencent TaskFinish while the job still runs: State Running, no end time, no results."""
    body = success.body.replace(b"<State>Success</State>", b"<State>Running</State>")
    body = re.sub(rb"<EndTime>[^<]*</EndTime>\s*", b"", body)
    body = re.sub(rb"<MediaResult>.*?</MediaResult>\s*", b"", body, flags=re.S)
    running = Template(
        name=f"{success.name}#running",
        provider=success.provider,
        fmt=success.fmt,
        body=body,
        routing_key=success.routing_key,
        ids=success.ids,
        terminal=(False,),
    )
    _check(running)
    return running


@cache
def templates() -> tuple[tuple[Template, ...], tuple[tuple[Template, ...], ...]]:
    """(single bodies, progressive sequences); a sequence's bodies all describe one job."""
    singles: dict[str, Template] = {}
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix in (".json", ".xml"):
            template = _template(str(path.relative_to(FIXTURES)), path.read_bytes())
            if template is not None:
                singles[template.name] = template

    def seq(*names: str) -> tuple[Template, ...]:
        return tuple(singles[n] for n in names)

    tencent_success = singles["seeds/tencent_ci_tts_callback_case1.xml"]
    progressive = (
        seq("seeds/tingwu_callback_ongoing_partial.json", "seeds/tingwu_callback_completed.json"),
        seq(
            "seeds/tingwu_poll_ongoing.json",
            "seeds/tingwu_poll_ongoing_partial.json",
            "seeds/tingwu_poll_completed.json",
        ),
        seq(
            "samples/tingwu_v1_createmeetingtrans_created_1.json",
            "samples/tingwu_v1_getfiletrans_ongoing_1.json",
            "samples/tingwu_v1_stopmeetingtrans_pre_complete_1.json",
            "samples/tingwu_v1_getmeetingtrans_completed_1.json",
        ),
        (_tencent_running(tencent_success), tencent_success),
        seq(
            "samples/ice_submitaudioproducejob_created_1.json",
            "samples/ice_getsmarthandlejob_finished_1.json",
        ),
    )
    for sequence in progressive:
        if any(len(t.ids) != 1 or t.ids != sequence[0].ids for t in sequence):
            raise ValueError(f"progressive sequence {[t.name for t in sequence]} must share one task id")
    return tuple(singles.values()), progressive


def generate(n: int, *, seed: int = 1, prefix: str = "b") -> Workload:
    """n messages, the same for the same (n, seed, prefix); task ids are f"{prefix}{seed}-{serial}"."""
    rng = random.Random(f"{seed}:{prefix}")
    singles, progressive = templates()
    retry_probability = RETRY_SHARE / (1 - RETRY_SHARE)  # retries per original message
    placed: list[tuple[float, int, Message]] = []
    serial = 0
    originals = 0
    scenario = 0
    # Progressive jobs send more bodies each, so pick them less often to hit PROGRESSIVE_SHARE of jobs.
    while originals < n:
        scenario += 1
        is_progressive = rng.random() < PROGRESSIVE_SHARE
        sequence = rng.choice(progressive) if is_progressive else (rng.choice(singles),)
        # The bodies of one sequence describe the same job(s): one set of fresh ids for all of them.
        new_ids = tuple(f"{prefix}{seed}-{serial + i:08d}" for i in range(len(sequence[0].ids)))
        serial += len(new_ids)
        position = float(scenario)
        for template in sequence:
            body, headers = template.render(new_ids)
            keys = tuple(job_key(template.provider, i) for i in new_ids)
            terminal = tuple(k for k, t in zip(keys, template.terminal, strict=True) if t)
            message = Message(
                body,
                template.routing_key,
                headers,
                template.provider,
                template.fmt,
                keys,
                terminal,
                retry=False,
                progressive=is_progressive,
            )
            placed.append((position, len(placed), message))
            originals += 1
            if rng.random() < retry_probability:
                retry = replace(message, retry=True)
                placed.append((position + rng.uniform(0.5, 40), len(placed), retry))
            position += rng.uniform(1, 30)
    placed.sort(key=lambda p: (p[0], p[1]))
    return Workload(tuple(m for _, _, m in placed[:n]), seed, prefix)


FLOOD_TEMPLATE = "seeds/tingwu_callback_completed.json"


def flood(n: int, *, seed: int = 1, prefix: str = "b") -> Workload:
    """n Tingwu COMPLETED callbacks, each a new job: one event per message, the worst case for publishing."""
    singles, _ = templates()
    template = next(t for t in singles if t.name == FLOOD_TEMPLATE)
    messages = []
    for serial in range(n):
        new_ids = (f"{prefix}{seed}-{serial:08d}",)
        body, headers = template.render(new_ids)
        key = job_key(template.provider, new_ids[0])
        messages.append(
            Message(
                body,
                template.routing_key,
                headers,
                template.provider,
                template.fmt,
                keys=(key,),
                terminal=(key,),
                retry=False,
                progressive=False,
            )
        )
    return Workload(tuple(messages), seed, prefix)


# The workloads by name: the realistic mix, and the flood of terminal callbacks.
WORKLOADS = {"mix": generate, "flood": flood}


def make(kind: str, n: int, *, seed: int = 1, prefix: str = "b") -> Workload:
    """The named workload (WORKLOADS)."""
    return WORKLOADS[kind](n, seed=seed, prefix=prefix)
