"""What the scale bench reads besides traffic: API writes (watches), the operator's process figures
(/proc), the lab's memory, and the operator's own timings of passes and node rollouts (its log)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.stats import summary
from testbed.cluster import ControlPlane
from testbed.lab import lab_namespaces

# Every kind the operator writes in the bench's namespace (events too: each is an API write).
WATCHED_KINDS = ("loadbalancerpairs", "upstreams", "virtualhosts", "events")
WATCH_SETTLE_SECONDS = 2.0


class ApiWriteWatch:
    """Watches (kubectl --watch-only) on every kind in the namespace while in the `with` block; each event
    is one write (a new resourceVersion) of one object."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self._command = [
            str(cluster.bin_dir / "kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            "-n",
            namespace,
        ]
        self._watches: dict[str, subprocess.Popen[str]] = {}
        self._writes: list[tuple[str, str, str]] = []  # (kind, name, event type)

    def __enter__(self) -> ApiWriteWatch:
        for kind in WATCHED_KINDS:
            self._watches[kind] = subprocess.Popen(
                [*self._command, "get", kind, "--watch-only", "--output-watch-events", "-o", "json"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        time.sleep(WATCH_SETTLE_SECONDS)  # the watches are established before anything is changed
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for watched, process in self._watches.items():
            process.terminate()
            output, _ = process.communicate(timeout=30)
            self._writes += [(watched, name, event) for name, event in watch_events(output)]

    def report(self, *, user_writes: int) -> dict[str, Any]:
        by_object = Counter(f"{kind}/{name}" for kind, name, _ in self._writes)
        return {
            "writes_total": len(self._writes),
            "user_writes": user_writes,
            "writes_by_operator": len(self._writes) - user_writes,
            "writes_by_object": dict(sorted(by_object.items())),
        }


def watch_events(output: str) -> list[tuple[str, str]]:
    """(object name, event type) of each watch event in kubectl's stream of JSON documents."""
    decoder, events, position = json.JSONDecoder(), [], 0
    while (position := _skip_space(output, position)) < len(output):
        document, position = decoder.raw_decode(output, position)
        if document.get("type") in {"ADDED", "MODIFIED", "DELETED"}:
            events.append((document["object"]["metadata"]["name"], document["type"]))
    return events


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


class ProcessStats:
    """Memory and CPU time of one process (all its threads), from /proc."""

    def __init__(self, pid: int) -> None:
        self._proc = Path(f"/proc/{pid}")

    def rss_mib(self) -> float:
        return round(_vm_rss_kib(self._proc) / 1024, 1)

    def cpu_percent(self, seconds: float) -> float:
        """Percent of one core used over the next `seconds`."""
        before, started = self._cpu_ticks(), time.monotonic()
        time.sleep(seconds)
        ticks, elapsed = self._cpu_ticks() - before, time.monotonic() - started
        return round(100 * ticks / os.sysconf("SC_CLK_TCK") / elapsed, 2)

    def _cpu_ticks(self) -> int:
        # Fields after the command name (which may hold spaces, inside parentheses): utime is 14, stime 15.
        fields = (self._proc / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])


def _vm_rss_kib(proc: Path) -> int:
    try:
        status = (proc / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    match = re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def lab_rss_mib() -> float:
    """VmRSS summed over every process in the lab's namespaces (shared pages counted once per process)."""
    pids = [
        pid
        for namespace in lab_namespaces()
        for pid in subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
        ).stdout.split()
    ]
    return round(sum(_vm_rss_kib(Path(f"/proc/{pid}")) for pid in pids) / 1024, 1)


_PASS = re.compile(r"pass pair=(?P<pair>\S+) outcome=(?P<outcome>\S+) seconds=(?P<seconds>[\d.]+)")
_ROLLOUT = re.compile(
    r"node rollout pair=(?P<pair>\S+) node=(?P<node>\S+) outcome=applied .*seconds=(?P<seconds>[\d.]+)"
)


def log_timings(log: str, pair: str) -> dict[str, Any]:
    """The operator's own seconds for the applied passes of `pair` in `log` and for each node's rollout
    within them (what the rest of edit -> served is: coalescing, watch delivery, the probe of traffic)."""
    passes = [
        float(m["seconds"]) for m in _PASS.finditer(log) if (m["pair"], m["outcome"]) == (pair, "applied")
    ]
    rollouts: dict[str, list[float]] = {}
    for match in _ROLLOUT.finditer(log):
        if match["pair"] == pair:
            rollouts.setdefault(match["node"], []).append(float(match["seconds"]))
    timings: dict[str, Any] = {"applied_pass": summary(passes)} if passes else {}
    timings.update({f"rollout_{node}": summary(seconds) for node, seconds in sorted(rollouts.items())})
    return timings


_STEPS = re.compile(
    r"node rollout steps node=(?P<node>\S+) stage_ms=(?P<stage>\d+) round_trip_ms=(?P<round_trip>\d+)"
    r" on_node_ms=(?P<on_node>\S*)"
)


def edit_breakdown(log: str, pair: str, nodes: tuple[str, ...]) -> dict[str, Any]:
    """Where the applied passes of `pair` in `log` spend their time, in ms (medians, min-max): for each of
    `nodes`, staging (one SSH round trip shipping the changed files), each step the agent timed on the node
    (`validate` includes its start, lock and recovery; `verify` is the wait until nginx serves the new
    config hash), and the rest of the roll-out round trip (SSH, the agent's upload); then the rest of the
    pass (building and rendering, the probe of both nodes, status writes)."""
    steps: dict[str, list[float]] = {}
    rest: list[float] = []
    rollouts_ms = 0.0  # the node rollouts logged since the last pass of `pair`
    for line in log.splitlines():
        if (match := _STEPS.search(line)) and match["node"] in nodes:
            laps = (item.split(":") for item in match["on_node"].split(",") if item)
            on_node = {step: float(ms) for step, ms in laps}
            timed = {"stage": float(match["stage"]), **on_node}
            timed["round_trip_rest"] = float(match["round_trip"]) - sum(on_node.values())
            for step, ms in timed.items():
                steps.setdefault(f"{match['node']}_{step}", []).append(ms)
        elif (match := _ROLLOUT.search(line)) and match["pair"] == pair:
            rollouts_ms += 1000 * float(match["seconds"])
        elif (match := _PASS.search(line)) and match["pair"] == pair:
            if match["outcome"] == "applied":
                rest.append(1000 * float(match["seconds"]) - rollouts_ms)
            rollouts_ms = 0.0
    breakdown = {step: summary(ms) for step, ms in steps.items()}
    return {**breakdown, "pass_rest": summary(rest)} if rest else breakdown


def pass_outcomes(log: str, pair: str) -> dict[str, Any]:
    """The passes of `pair` in `log` by outcome, with their seconds (where an idle operator spends CPU)."""
    seconds: dict[str, list[float]] = {}
    for match in _PASS.finditer(log):
        if match["pair"] == pair:
            seconds.setdefault(match["outcome"], []).append(float(match["seconds"]))
    return {outcome: summary(values) for outcome, values in sorted(seconds.items())}
