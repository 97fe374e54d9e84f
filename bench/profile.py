"""Optional py-spy profiles of the service processes (--profile): raw stacks in, top hotspots out."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["Profiler", "hotspots", "py_spy"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")
# Interpreter start-up (imports) is not part of the steady state being measured.
_STARTUP = ("_find_and_load", "_call_with_frames_removed")
_OWN = ("consumer/", "schemas/")  # inclusive shares are listed for the project's own functions...
_ENTRY = ("consumer/cli.py", "consumer/__main__.py")  # ...below the entry point, which is all of them


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy attached to a running process, sampling until that process exits: raw stacks for the top
    costs, and with `svg` a flame graph too (a second py-spy on the same process)."""

    def __init__(self, pid: int, output: Path, *, rate: int = 200, svg: Path | None = None) -> None:
        self.pid = pid
        self.output = output
        self.svg = svg
        self.rate = rate
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        binary = py_spy()
        if binary is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        outputs = [(self.output, "raw")] + ([(self.svg, "flamegraph")] if self.svg else [])
        for output, fmt in outputs:
            proc = await asyncio.create_subprocess_exec(
                binary,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                fmt,
                "--nonblocking",
                "--output",
                str(output),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            self.procs.append(proc)

    async def finish(self) -> dict[str, Any] | None:
        """Wait for py-spy to write its files (it stops when the target exits), then summarise them."""
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                await proc.wait()
        if not self.procs or not self.output.exists():
            return None
        svg = {"svg": str(self.svg)} if self.svg and self.svg.exists() else {}
        return {"raw": str(self.output), **svg, **hotspots(self.output)}


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text.strip())
    if match is None:
        return text.strip(), "?"
    return match["func"], match["file"]


def _package(file: str) -> str:
    """The package (or project module) a frame's file belongs to."""
    parts = file.replace("\\", "/").split("/")
    if parts[0] in ("consumer", "schemas", "bench"):
        return "/".join(parts[:2]).removesuffix(".py")
    return parts[0].removesuffix(".py")


def hotspots(raw: Path, top: int = 15) -> dict[str, Any]:
    """Shares of on-CPU samples (start-up excluded): self time by function and by package, and the
    inclusive time of the project's own functions."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        if any(func in _STARTUP for func, _ in frames):
            continue
        count = int(count_text)
        total += count
        leaf_func, leaf_file = frames[-1]
        own[f"{leaf_func} ({leaf_file})"] += count
        packages[_package(leaf_file)] += count
        own_frames = {
            f"{func} ({file})" for func, file in frames if file.startswith(_OWN) and file not in _ENTRY
        }
        for name in own_frames:
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return (
            [{"name": n, "share": round(c / total, 4)} for n, c in counter.most_common(top)] if total else []
        )

    return {
        "samples": total,
        "self": share(own),
        "inclusive": share(inclusive),
        "self_by_package": share(packages),
    }
