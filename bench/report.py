"""Ratios against the baselines, targets, the printed table, and the JSON and PNG result files."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "TARGETS",
    "clean",
    "fmt",
    "machine_info",
    "markdown",
    "package_versions",
    "ratios",
    "redact_url",
    "render_profiles",
    "render_table",
    "target_entry",
    "write_json",
    "write_png",
]


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Python's and each package's installed version, for the results file."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine_info() -> dict[str, Any]:
    """What the results were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# name: (description, comparison, threshold)
TARGETS: dict[str, tuple[str, str, float | None]] = {
    "cpu_vs_straightforward": ("speechjobs CPU/msg ÷ straightforward", "<=", 0.4),
    "cpu_vs_faststream": ("speechjobs CPU/msg ÷ FastStream", "<=", 0.5),
    "throughput_vs_faststream": ("speechjobs(SecantusDB) msg/s ÷ FastStream", ">=", 1.5),
    "throughput_vs_db_ceiling": ("speechjobs(SecantusDB) msg/s ÷ DB bulk ceiling", ">=", None),
    "memory_throughput_vs_bare": ("speechjobs(in-memory) msg/s ÷ bare ceiling", ">=", 0.6),
    "memory_p99_ms_at_half_rate": ("speechjobs(in-memory) p99 ms at half its max rate", "<=", 50.0),
    "p99_ms_at_half_rate": ("speechjobs(SecantusDB) p99 ms at half its max rate", "<=", None),
    "rss_growth": ("RSS growth over the RSS run", "<=", 0.10),
}


def _get(results: dict[str, dict[str, Any]], key: str, *path: str) -> float:
    value: Any = results.get(key, {})
    for part in path:
        value = value.get(part, {}) if isinstance(value, dict) else {}
    return float(value) if isinstance(value, int | float) else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def ratios(results: dict[str, dict[str, Any]], rss: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each target's measured value and whether it is met (None when not measured)."""
    sj_cpu = _get(results, "speechjobs", "cpu_ms_per_msg")
    sj_rate = _get(results, "speechjobs", "throughput_msg_s")
    values = {
        "cpu_vs_straightforward": _ratio(sj_cpu, _get(results, "straightforward", "cpu_ms_per_msg")),
        "cpu_vs_faststream": _ratio(sj_cpu, _get(results, "faststream", "cpu_ms_per_msg")),
        "throughput_vs_faststream": _ratio(sj_rate, _get(results, "faststream", "throughput_msg_s")),
        "throughput_vs_db_ceiling": _ratio(sj_rate, _get(results, "db-ceiling", "throughput_msg_s")),
        "memory_throughput_vs_bare": _ratio(
            _get(results, "speechjobs-memory", "throughput_msg_s"), _get(results, "bare", "throughput_msg_s")
        ),
        "memory_p99_ms_at_half_rate": _get(results, "speechjobs-memory", "paced", "p99_ms"),
        "p99_ms_at_half_rate": _get(results, "speechjobs", "paced", "p99_ms"),
        "rss_growth": float(rss["rss_growth"]) if rss else math.nan,
    }
    return {name: target_entry(*spec, value=values[name]) for name, spec in TARGETS.items()}


def target_entry(description: str, op: str, threshold: float | None, *, value: float) -> dict[str, Any]:
    """One ratio of a report: its value, its target if it has one, and whether the value meets it."""
    met = None
    if threshold is not None and not math.isnan(value):
        met = value <= threshold if op == "<=" else value >= threshold
    return {
        "description": description,
        "value": None if math.isnan(value) else round(value, 4),
        "target": f"{op} {threshold:g}" if threshold is not None else None,
        "met": met,
    }


def redact_url(url: str) -> str:
    """A broker or database URL without its credentials, for a result file."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def clean(value: Any) -> Any:
    """NaN is not JSON: measured-nothing becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def render_table(results: dict[str, dict[str, Any]], targets: dict[str, dict[str, Any]]) -> str:
    header = (
        f"{'contender':<30} {'msg/s':>9} {'CPU ms/msg':>11} {'CPU util':>9} {'RSS MB':>8} "
        f"{'p50 ms':>8} {'p99 ms':>9} {'@ msg/s':>8} {'events':>13}"
    )
    lines = [header, "-" * len(header)]
    for result in results.values():
        paced = result.get("paced", {})
        events = result.get("events")
        ev = f"{events['jobs_with_event']}/{events['expected_jobs']}" if events else "-"
        if events and events["events_received"] != events["jobs_with_event"]:
            ev += f" (+{events['events_received'] - events['jobs_with_event']})"
        lines.append(
            f"{result['label']:<30} {fmt(result['throughput_msg_s'], 0):>9} "
            f"{fmt(result['cpu_ms_per_msg'], 3):>11} {fmt(result['cpu_utilization'], 2):>9} "
            f"{fmt(result['rss_mb_max'], 0):>8} {fmt(paced.get('p50_ms'), 1):>8} "
            f"{fmt(paced.get('p99_ms'), 1):>9} {fmt(paced.get('rate_target'), 0):>8} {ev:>13}"
        )
    for result in results.values():
        for phase, batches in (
            ("drain", result.get("batches")),
            ("paced", result.get("paced", {}).get("batches")),
        ):
            if batches:
                b = batches
                lines.append(
                    f"{result['label']}, {phase}: {b['batches']} batches of {b['mean_size']:g} msgs, "
                    f"{b['mean_ms']:.1f} ms each (store.apply {fmt(b['store_apply_ms'], 1)}, "
                    f"publish+confirm {fmt(b['publish_confirm_ms'], 1)})"
                )
    lines += ["", f"{'ratio':<52} {'value':>10} {'target':>9}  met"]
    for target in targets.values():
        met = {True: "yes", False: "NO", None: "-" if target["target"] is None else "not measured"}[
            target["met"]
        ]
        lines.append(
            f"{target['description']:<52} {fmt(target['value'], 3):>10} {target['target'] or '-':>9}  {met}"
        )
    return "\n".join(lines)


def render_profiles(results: dict[str, dict[str, Any]], top: int = 12) -> str:
    """The py-spy hotspots of profiled contenders: self time by package and by function."""
    blocks: list[str] = []
    for result in results.values():
        profile = result.get("profile")
        if not profile:
            continue
        lines = [f"{result['label']}: {profile['samples']} on-CPU samples ({profile['raw']})"]
        for title, key in (
            ("self by package", "self_by_package"),
            ("self by function", "self"),
            ("inclusive, project code", "inclusive"),
        ):
            lines.append(f"  {title}:")
            lines += [f"    {row['share']:6.1%}  {row['name']}" for row in profile[key][:top]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n")


def write_png(
    path: Path, results: dict[str, dict[str, Any]], title: str, rss: dict[str, Any] | None = None
) -> None:
    """Throughput bars and the latency CDF at the common paced rate; RSS over time when it was run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if rss else 2, figsize=(20 if rss else 14, 5.5))
    bars, cdf = axes[0], axes[1]
    labels = [r["label"] for r in results.values()]
    rates = [r["throughput_msg_s"] for r in results.values()]
    colors = ["tab:red" if r["key"].startswith("speechjobs") else "tab:gray" for r in results.values()]
    bars.barh(labels, rates, color=colors)
    for y, rate in enumerate(rates):
        bars.text(rate, y, f" {rate:,.0f}", va="center", fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("messages/s (backlog drain)")
    bars.set_title("Throughput")
    for result in results.values():
        points = result.get("paced", {}).get("cdf_ms", [])
        if points:
            ys = [i / (len(points) - 1) for i in range(len(points))]
            paced = result["paced"]
            label = f"{result['label']} @ {paced['rate_target']:,.0f}/s"
            cdf.plot(points, ys, label=label + (" (above its max rate)" if paced["saturated"] else ""))
    cdf.set_xscale("log")
    cdf.set_xlabel("publish → event latency, ms (log)")
    cdf.set_ylabel("fraction of jobs")
    cdf.axvline(50, color="black", linestyle=":", linewidth=1)
    cdf.set_title("Latency CDF at half of speechjobs' max rate (in-memory: half its own)")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8, loc="lower right")
    if rss:
        memory = axes[2]
        series = rss["series"]
        memory.plot([p["messages"] for p in series], [p["rss_mb"] for p in series], color="tab:red")
        memory.set_ylim(bottom=0)
        memory.set_xlabel("messages processed")
        memory.set_ylabel("RSS, MB")
        memory.set_title(f"speechjobs RSS over {rss['messages']:,} messages ({rss['rss_growth']:+.1%})")
        memory.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(document: dict[str, Any], name: str) -> str:
    """The README's tables, from one result file (`name` is its file name, for the link)."""
    lines = [
        f"From [`results/{name}`](results/{name}) ({document['settings']['messages']:,} messages per "
        f"contender and workload, {document['machine']['cores']} cores, commit "
        f"`{(document['code'].get('commit') or '?')[:7]}`).",
        "",
        "| contender | workload | msg/s | CPU ms/msg | RabbitMQ · database · subscriber CPU ms/msg "
        "| p50 / p99 ms, paced |",
        "|---|---|---|---|---|---|",
    ]
    for workload, results in document["contenders"].items():
        for result in results.values():
            paced = result.get("paced") or {}
            latency = "-"
            if paced:
                p50, p99 = fmt(paced.get("p50_ms"), 0), fmt(paced.get("p99_ms"), 0)
                latency = f"{p50} / {p99} @ {fmt(paced['rate_target'], 0)}/s"
                if paced.get("saturated"):
                    latency += " (over its max)"
            cpu = fmt(result["cpu_ms_per_msg"], 3) if result["key"] != "db-ceiling" else "-"
            rate = fmt(result["throughput_msg_s"], 0)
            servers = result.get("server_cpu_ms_per_msg", {})
            others = " · ".join(fmt(servers.get(n), 3) for n in ("rabbitmq", "database", "subscriber"))
            lines.append(f"| {result['label']} | {workload} | {rate} | {cpu} | {others} | {latency} |")
    for workload, results in document["contenders"].items():
        for result in results.values():
            split = (result.get("paced") or {}).get("split")
            if split:
                wait, batch = split["until_batch_start"], split["batch"]
                lines += [
                    "",
                    f"{result['label']}, {workload}, paced: from the publish to its batch's start (the "
                    f"broker's delivery, the wait for a batch) p50 {fmt(wait['p50_ms'], 1)} / p99 "
                    f"{fmt(wait['p99_ms'], 1)} ms; the batch itself p50 {fmt(batch['p50_ms'], 1)} / p99 "
                    f"{fmt(batch['p99_ms'], 1)} ms.",
                ]
    floor = document.get("io_floor_us")
    if floor:
        lines += [
            "",
            f"The client's own CPU per operation in the same run (`bench/iofloor.py`): a pymongo upsert "
            f"{floor['upsert_us_x1']:,.0f} µs one at a time ({floor['upsert_us_x50']:,.0f} µs 50 at once), "
            f"an aio-pika publish with its confirm {floor['publish_us_x1']:,.0f} µs "
            f"({floor['publish_us_x50']:,.0f} µs 50 at once).",
        ]
    lines += ["", "| target | workload | value | target | met |", "|---|---|---|---|---|"]
    for workload, targets in document["targets"].items():
        for target in targets.values():
            if target["value"] is None:
                continue
            met = {True: "yes", False: "**no**", None: ""}[target["met"]]
            lines.append(
                f"| {target['description']} | {workload} | {fmt(target['value'], 3)} | "
                f"{target['target'] or ''} | {met} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        path = Path(arg)
        print(markdown(json.loads(path.read_text()), path.name), end="")
