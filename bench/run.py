"""Benchmarks of the operator on the local control plane and lab: `make bench` (root, ~12 minutes).

1. apply -> live: a one-VirtualHost change applied with kubectl until both nodes serve it.
2. failover: nginx stopped on the VIP holder until the client is served through the VIP by the peer, and
   the requests that failed meanwhile (a new connection every 20 ms), for the seed's VRRP settings and
   for tuned ones (VRRPv3, 100 ms adverts, 1 s check, FAULT on failure).
   failover_faults (bench/failover.py): per fault on the holder (nginx stopped, nginx SIGKILLed,
   keepalived SIGKILLed, power off, front link down), the operator's defaults (the nginx watcher) over
   --failover-runs runs against the seed's settings over --baseline-runs runs in the same run; seconds to
   the peer serving, failed requests during the move and during the failback (results failover_<fault>).
3. config pushes under load: wrk (keep-alive) and a new-connection loop through the VIP while 20 changes
   are pushed; failed requests of each.
4. kill storm: the operator SIGKILLed 50 times while pushes to both nodes are in flight, restarted each
   time; interrupted pushes, partial or mixed file sets on the nodes, passes and seconds to converge
   (bench/crash.py).
5. hung node: edit -> live through the VIP of the seed pair while a node of a second pair on the same
   operator is healthy, and while it hangs mid-command (bench/crash.py).
6. refused objects: 100 objects nginx refuses, one after another, each in the same pass as another
   tenant's edit, with a client looping through the VIP: edit -> served seconds, failed requests
   (bench/isolation.py).
7. planned drain: spec.nodes[].maintenance Drain on the holder and back, a new connection every 20 ms:
   failed requests (bench/drain.py).
8. drill: status.lastDrill's takeover and failback, measured on the nodes, against a client probing
   every 10 ms (bench/drain.py).

Each figure is the median (and min/max) over repeated runs. Results go to stdout and are merged into
bench/results.json (`--scenarios` runs some of them). Every load is bounded in count and time and only
ever targets the lab's VIPs.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from bench.crash import hung_node, kill_storm
from bench.drain import drill, planned_drain
from bench.failover import FAULTS, failover_fault
from bench.isolation import refused_objects
from bench.stats import summary
from testbed.addressing import CLIENT, LB_NODES, Segment
from testbed.cluster import REPO_ROOT, ControlPlane, throwaway_run_dir, tools_bin_dir
from testbed.lab import Lab
from testbed.operator import OperatorProcess, attached_object, deploy_sample, wait_for
from testbed.traffic import RequestLoop

NAMESPACE = "lb-bench"
PAIR = "seed"
TUNED_VRRP = {
    "vrrp": {"version": 3, "advertIntervalMilliseconds": 100, "authentication": None},
    "healthCheck": {"intervalSeconds": 1, "fall": 1, "rise": 1, "weight": 0, "restartNginx": False},
}


class Bench:
    def __init__(self, cluster: ControlPlane, lab: Lab, operator: OperatorProcess) -> None:
        self.cluster, self.lab, self.operator = cluster, lab, operator
        self.namespace, self.pair = NAMESPACE, PAIR
        # Every address comes from the lab's address plan, chosen for this machine at lab start.
        hosts = lab.plan.hosts
        self.vip = str(lab.plan.vip_primary)
        self.node_front_addresses = {node: str(hosts[node].address(Segment.FRONT)) for node in LB_NODES}
        self.backends = {name: str(hosts[name].address(Segment.BACK)) for name in ("be1", "be2")}

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args, input=input).stdout

    def apply(self, *documents: dict[str, Any]) -> None:
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        )

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.kubectl("get", "lbpair", PAIR, "-o", "json")).get(
            "status", {}
        )
        return status

    def ready(self) -> bool:
        states = {c["type"]: c["status"] for c in self.status().get("conditions", [])}
        return states.get("Ready") == "True" and states.get("Programmed") == "True"

    def served_by_node(self, node: str, host: str, expected: str) -> bool:
        """A request straight to one node's front address (not the VIP) for `host` gets `expected` back."""
        completed = self.lab.exec(
            CLIENT, "curl", "-s", "-m", "1", "-H", f"Host: {host}", f"http://{self.node_front_addresses[node]}/",
            check=False,
        )  # fmt: skip
        return expected in completed.stdout

    # -- 1 --

    def apply_to_live(self, runs: int) -> dict[str, float]:
        seconds = []
        for run in range(runs):
            host = f"bench-{run}.example.com"
            # The backend echoes the path it was asked for: only the new config asks for this one.
            location = {"path": "/", "url": f"http://{self.backends['be2']}:8080/bench-{run}/"}
            spec = {"serverNames": [host], "locations": [location]}
            virtual_host = attached_object("VirtualHost", NAMESPACE, "bench", PAIR, spec)
            started = time.monotonic()
            self.apply(virtual_host)
            wait_for(
                lambda host=host, run=run: all(
                    self.served_by_node(node, host, f"path=/bench-{run}/")
                    for node in self.node_front_addresses
                ),
                timeout=60,
                interval=0.05,
                what=f"{host} live on both nodes",
            )
            seconds.append(time.monotonic() - started)
            wait_for(self.ready, timeout=60, what="Ready")
        return summary(seconds)

    # -- 2 --

    def failover(self, runs: int) -> dict[str, Any]:
        durations, failed = [], []
        for _ in range(runs):
            wait_for(lambda: self.lab.vip_holders(self.vip) == ["lb1"], timeout=60, what="VIP on lb1")
            wait_for(self.ready, timeout=60, what="Ready")
            loop = RequestLoop(
                self.lab, host="www.example.com", interval=0.02, max_requests=1500, max_seconds=30
            )
            with loop:
                time.sleep(0.5)
                self.lab.exec("lb1", "systemctl", "stop", "nginx")
                stopped = time.monotonic()
                wait_for(self._peer_serves, timeout=30, interval=0.02, what="peer serving through the VIP")
                durations.append(time.monotonic() - stopped)
                time.sleep(0.5)
            failed.append(len(loop.failed))
            self.lab.exec("lb1", "systemctl", "start", "nginx")
        return {"seconds": summary(durations), "failed_requests": summary([float(f) for f in failed])}

    def _peer_serves(self) -> bool:
        if self.lab.vip_holders(self.vip) != ["lb2"]:
            return False
        return self.lab.http_get_via(self.vip, "www.example.com", "/", timeout=1).succeeded

    # -- 3 --

    def pushes_under_load(self, pushes: int, runs: int) -> dict[str, Any]:
        wrk_errors, wrk_requests, loop_failed, loop_requests, push_seconds = [], [], [], [], []
        for _ in range(runs):
            duration = 40
            wrk = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.plan.hosts[CLIENT].namespace,
                 "wrk", "-t1", "-c10", f"-d{duration}s", "--timeout", "2s", "-H", "Host: oa.example.com",
                 f"http://{self.vip}/"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            started = time.monotonic()
            loop = RequestLoop(
                self.lab, host="www.example.com", interval=0.05, max_requests=2000, max_seconds=duration - 5
            )
            with loop:
                for push in range(pushes):
                    self.kubectl("patch", "upstream", "lb-oa", "--type=merge", "-p",
                                 json.dumps({"spec": {"servers": [
                                     {"address": self.backends["be1"], "port": 8080, "weight": 1 + push % 2},
                                     {"address": self.backends["be2"], "port": 8080}]}}))  # fmt: skip
                    wait_for(self._pushed_everywhere, timeout=30, interval=0.1, what="push live")
                push_seconds.append(time.monotonic() - started)
            output, _ = wrk.communicate(timeout=duration + 30)
            requests, errors = parse_wrk(output)
            wrk_requests.append(float(requests))
            wrk_errors.append(float(errors))
            loop_requests.append(float(len(loop.responses)))
            loop_failed.append(float(len(loop.failed)))
        return {
            "pushes_per_run": pushes,
            "seconds_for_all_pushes": summary(push_seconds),
            "wrk_keepalive_requests": summary(wrk_requests),
            "wrk_keepalive_errors": summary(wrk_errors),
            "new_connection_requests": summary(loop_requests),
            "new_connection_failed": summary(loop_failed),
        }

    def _pushed_everywhere(self) -> bool:
        upstream = json.loads(self.kubectl("get", "upstream", "lb-oa", "-o", "json"))
        generation = upstream["metadata"]["generation"]
        conditions = {c["type"]: c for c in upstream.get("status", {}).get("conditions", [])}
        programmed = conditions.get("Programmed", {})
        return bool(programmed.get("status") == "True" and programmed.get("observedGeneration") == generation)

    def tune(self, spec_patch: dict[str, Any]) -> None:
        self.kubectl("patch", "lbpair", PAIR, "--type=merge", "-p", json.dumps({"spec": spec_patch}))
        wait_for(self.ready, timeout=60, what="Ready after tuning")
        time.sleep(3)  # let keepalived settle with the new timers before measuring


def parse_wrk(output: str) -> tuple[int, int]:
    """(requests, errors): errors are socket errors (connect/read/write/timeout) plus non-2xx/3xx."""
    requests, errors = 0, 0
    for line in output.splitlines():
        words = line.replace(",", "").split()
        if "requests in" in line:
            requests = int(words[0])
        elif line.strip().startswith("Socket errors:"):
            kinds = ("connect", "read", "write", "timeout")
            errors += sum(int(words[i + 1]) for i, word in enumerate(words) if word in kinds)
        elif "Non-2xx or 3xx responses:" in line:
            errors += int(words[-1])
    return requests, errors


@contextmanager
def deployed() -> Iterator[Bench]:
    cluster = ControlPlane(run_dir=throwaway_run_dir(), bin_dir=tools_bin_dir())
    lab: Lab | None = None
    operator: OperatorProcess | None = None
    try:
        cluster.start()
        lab = Lab.up(reuse=False, pairs=1)
        kubeconfig = deploy_sample(cluster, lab, NAMESPACE)
        operator = OperatorProcess(
            kubeconfig, Path(tempfile.mkdtemp(prefix="lbpair-bench-")) / "operator.log"
        )
        bench = Bench(cluster, lab, operator)
        operator.start()
        wait_for(bench.ready, timeout=120, what="seed Ready")
        yield bench
    finally:
        if operator is not None:
            operator.stop()
        if lab is not None:
            lab.down()
        cluster.stop()


def measure(name: str, action: Callable[[], Any], results: dict[str, Any]) -> None:
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    results[name] = action()
    print(f"[bench] {name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)


SCENARIOS = (
    "apply_to_live",
    "failover",
    "failover_faults",
    "pushes_under_load",
    "kill_storm",
    "hung_node",
    "refused_objects",
    "drain",
    "drill",
)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each measurement")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--kill-rounds", type=int, default=50, help="operator kills in the kill storm")
    parser.add_argument("--seed", type=int, default=11, help="seed of the kill storm's kill moments")
    parser.add_argument(
        "--refused-objects", type=int, default=100, help="objects nginx refuses, fed one after another"
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"failover_faults: comma-separated, from {', '.join(FAULTS)} (default: all)",
    )
    parser.add_argument(
        "--failover-runs", type=int, default=20, help="failover_faults: runs per fault with the defaults"
    )
    parser.add_argument(
        "--baseline-runs",
        type=int,
        default=10,
        help="failover_faults: runs per fault with the seed's settings, the baseline (0: none)",
    )
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results.json")
    args = parser.parse_args()
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    unknown_faults = sorted({name.strip() for name in args.faults.split(",") if name.strip()} - set(FAULTS))
    if unknown_faults:
        parser.error(f"unknown faults {', '.join(unknown_faults)}; choose from {', '.join(FAULTS)}")
    return args


def main() -> int:
    args = _arguments()
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    # A SIGTERM (e.g. from a CI timeout) must still run the teardown in deployed().
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {"runs": args.runs}
    with deployed() as bench:
        if "apply_to_live" in scenarios:
            measure("apply_to_live_seconds", lambda: bench.apply_to_live(args.runs), results)
        if "failover" in scenarios:
            # The seed's check script restarts a dead nginx, which (rightly) keeps the VIP where it is.
            bench.tune({"healthCheck": {"restartNginx": False}})
            measure("failover_seed_settings", lambda: bench.failover(args.runs), results)
        if "failover_faults" in scenarios:
            faults = [name.strip() for name in args.faults.split(",") if name.strip()]
            for fault in faults:
                one_fault = partial(failover_fault, bench, fault, args.failover_runs, args.baseline_runs)
                measure(f"failover_{fault}", one_fault, results)
        if "pushes_under_load" in scenarios:
            measure("pushes_under_load", lambda: bench.pushes_under_load(20, max(1, args.runs // 2)), results)
        if "failover" in scenarios:
            bench.tune(TUNED_VRRP)
            measure("failover_tuned_vrrp3_100ms", lambda: bench.failover(args.runs), results)
        if "kill_storm" in scenarios:
            measure("kill_storm", lambda: kill_storm(bench, args.kill_rounds, args.seed), results)
        if "hung_node" in scenarios:
            measure("hung_node_other_pair", lambda: hung_node(bench, args.runs), results)
        if "refused_objects" in scenarios:
            measure(
                "refused_objects_shared_pair",
                lambda: refused_objects(bench, args.refused_objects, args.runs),
                results,
            )
        # With whatever VRRP settings the scenarios above left (the seed's, or the tuned ones after failover).
        if "drain" in scenarios:
            measure("planned_drain", lambda: planned_drain(bench, args.runs), results)
        if "drill" in scenarios:
            measure("drill", lambda: drill(bench, args.runs), results)
    merged = json.loads(args.output.read_text()) if args.output.exists() else {}
    merged.update(results)
    args.output.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
