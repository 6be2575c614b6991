"""Planned drain and failover drill benchmarks (bench/run.py scenarios `drain` and `drill`).

planned_drain: spec.nodes[0].maintenance Drain on the VIP holder with a client opening a new connection
every 20 ms through the VIP (curl, 3 s timeout: a real client's SYN retransmission is allowed), then
undrain; failed requests, and seconds from the patch until the peer holds the VIP and status says Drained.

drill: a new lb.lbpair.dev/drill token; status.lastDrill's takeover and failback (measured on the nodes)
against the client's view: a probe in the client namespace opens a connection every 10 ms (0.3 s
timeout, shorter than the 1 s SYN retransmission), so probes started while the VIP is on no node (or the
client still sends to the old node) fail; the unserved time is taken between the midpoints of the probe
intervals around each run of failures. The lab's hosts share one kernel clock, so the two are comparable.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.stats import summary
from testbed.addressing import CLIENT
from testbed.operator import wait_for
from testbed.traffic import RequestLoop

if TYPE_CHECKING:
    from bench.run import Bench

DRILL_ANNOTATION = "lb.lbpair.dev/drill"
PROBE_INTERVAL_SECONDS = 0.01
PROBE_TIMEOUT_SECONDS = 0.3
PROBE_SECONDS = 10.0  # bounded: at most 1,000 connections per run
MICROSECONDS = 1_000_000
# One process in the client namespace: asyncio connections, no fork per probe. Prints [[start_us, ok], ...].
PROBE_SCRIPT = """
import asyncio, json, sys, time
vip, host, seconds, interval, timeout = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:6])
results = []
async def probe():
    start = time.time_ns() // 1000
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(vip, 80), timeout)
        writer.write(f"GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.close()
        results.append((start, b" 200 " in line))
    except Exception:
        results.append((start, False))
async def main():
    tasks, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        tasks.append(asyncio.create_task(probe()))
        await asyncio.sleep(interval)
    await asyncio.gather(*tasks)
asyncio.run(main())
print(json.dumps(sorted(results)))
"""


def _set_maintenance(bench: Bench, value: str) -> None:
    patch = [{"op": "add", "path": "/spec/nodes/0/maintenance", "value": value}]
    bench.kubectl("patch", "lbpair", bench.pair, "--type=json", "-p", json.dumps(patch))


def _node_maintenance(bench: Bench, node: str) -> str:
    return next((n.get("maintenance", "") for n in bench.status().get("nodes", []) if n["name"] == node), "")


def _settled_on_lb1(bench: Bench) -> None:
    wait_for(lambda: bench.lab.vip_holders(bench.vip) == ["lb1"], timeout=60, what="VIP on lb1")
    wait_for(
        lambda: bench.ready() and bench.status().get("healthyNodes") == "2/2", timeout=60, what="Ready, 2/2"
    )


def planned_drain(bench: Bench, runs: int) -> dict[str, Any]:
    moved, drained, failed = [], [], []
    for _ in range(runs):
        _settled_on_lb1(bench)
        loop = RequestLoop(
            bench.lab, host="www.example.com", interval=0.02, max_requests=2500, max_seconds=60
        )
        with loop:
            time.sleep(0.5)
            started = time.monotonic()
            _set_maintenance(bench, "Drain")
            wait_for(
                lambda: bench.lab.vip_holders(bench.vip) == ["lb2"], timeout=30, interval=0.02, what="lb2"
            )
            moved.append(time.monotonic() - started)
            wait_for(lambda: _node_maintenance(bench, "lb1") == "Drained", timeout=30, what="lb1 Drained")
            drained.append(time.monotonic() - started)
            _set_maintenance(bench, "None")
            wait_for(
                lambda: bench.lab.vip_holders(bench.vip) == ["lb1"], timeout=30, interval=0.02, what="lb1"
            )
            time.sleep(0.5)
        failed.append(float(len(loop.failed)))
        wait_for(lambda: _node_maintenance(bench, "lb1") == "None", timeout=30, what="lb1 back in service")
    return {
        "peer_holds_vip_seconds": summary(moved),
        "status_drained_seconds": summary(drained),
        "failed_requests_drain_and_undrain": summary(failed),
    }


def unserved_windows(probes: list[tuple[int, bool]]) -> list[float]:
    """Seconds of each run of failed probes, between the midpoints of the intervals around it. Failures
    before the first served probe or after the last have no edge to measure from and are left out."""
    windows, first_failed = [], None
    served_before = False
    for index, (_, ok) in enumerate(probes):
        if not ok:
            if served_before and first_failed is None:
                first_failed = index
            continue
        if first_failed is not None:
            left = (probes[first_failed - 1][0] + probes[first_failed][0]) / 2
            right = (probes[index - 1][0] + probes[index][0]) / 2
            windows.append((right - left) / MICROSECONDS)
            first_failed = None
        served_before = True
    return windows


def drill(bench: Bench, runs: int) -> dict[str, Any]:
    takeover, failback, client_takeover, client_failback, differences, results = [], [], [], [], [], []
    for run in range(runs):
        _settled_on_lb1(bench)
        token = f"bench-{time.time_ns()}-{run}"
        annotate = ("annotate", "--overwrite", "lbpair", bench.pair, f"{DRILL_ANNOTATION}={token}")
        command = ["python3", "-c", PROBE_SCRIPT, bench.vip, "www.example.com"]
        command += [str(PROBE_SECONDS), str(PROBE_INTERVAL_SECONDS), str(PROBE_TIMEOUT_SECONDS)]
        probes = _probe_while(bench, command, functools.partial(bench.kubectl, *annotate))
        last = wait_for(
            lambda token=token: (
                (found := bench.status().get("lastDrill") or {}).get("token") == token and found
            ),
            timeout=60,
            what="lastDrill",
        )
        results.append(last["result"])
        if last["result"] != "Succeeded":
            continue
        windows = unserved_windows(probes)
        takeover.append(last["takeoverSeconds"])
        failback.append(last["failbackSeconds"])
        # The first run of failures is the takeover. A failback by preemption leaves none (the preempting
        # node holds the VIP before the old master lets go): then there is no second window, and 0 s.
        if windows:
            client_takeover.append(windows[0])
            client_failback.append(windows[1] if len(windows) > 1 else 0.0)
            differences.append(abs(windows[0] - last["takeoverSeconds"]))
    report: dict[str, Any] = {"results": {r: results.count(r) for r in sorted(set(results))}}
    for name, values in (
        ("status_takeover_seconds", takeover),
        ("status_failback_seconds", failback),
        ("client_takeover_seconds", client_takeover),
        ("client_failback_seconds", client_failback),
        ("takeover_status_vs_client_abs_difference_seconds", differences),
    ):
        if values:
            report[name] = summary(values)
    return report


def _probe_while(bench: Bench, command: list[str], act: Callable[[], object]) -> list[tuple[int, bool]]:
    """Run the client probe for PROBE_SECONDS with `act` done 0.5 s after it starts."""
    prefix = ["ip", "netns", "exec", bench.lab.plan.hosts[CLIENT].namespace]
    with subprocess.Popen([*prefix, *command], stdout=subprocess.PIPE, text=True) as process:
        time.sleep(0.5)
        act()
        output, _ = process.communicate(timeout=PROBE_SECONDS + 10)
    return [(int(start), bool(ok)) for start, ok in json.loads(output)]
