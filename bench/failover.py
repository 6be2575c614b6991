"""Failover benchmarks per fault (`bench/run.py --scenarios failover_faults --faults ...`): the operator's
defaults (the nginx watcher, VRRPv3 at 100 ms, weight 0) against the seed's settings in the same run.

Each run, with lb1 holding the VIP and a client opening a new connection through the VIP every 20 ms: a
fault on lb1, then the seconds until lb2 holds the VIP and a fresh request through it is served, and the
requests that failed meanwhile; then lb1 recovers and takes the VIP back (Preempt), and the requests that
failed during that second move are counted apart ("failback"). Every load is bounded in count and time.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bench.stats import summary
from testbed.lab import Lab
from testbed.operator import wait_for
from testbed.traffic import RequestLoop


class Bench(Protocol):
    """What these benchmarks use of bench/run.py's Bench."""

    lab: Lab
    pair: str
    vip: str

    def kubectl(self, *args: str, input: str | None = None) -> str: ...

    def ready(self) -> bool: ...


HOLDER, PEER = "lb1", "lb2"
# What the operator does by default (the spec's defaults), with the check script's restart of nginx off:
# the bench restarts nginx itself, after the failover is measured.
FAST_SETTINGS = {"vrrp": {"virtualRouterId": 51}, "healthCheck": {"restartNginx": False}}
SEED_RESTART_OFF = {"restartNginx": False}  # as bench/run.py's failover: a restart would keep the VIP


@dataclass(frozen=True)
class Fault:
    """A failure of the VIP holder and how it recovers."""

    name: str
    inject: Callable[[Bench], None]
    recover: Callable[[Bench], None]


def _on_holder(*command: str) -> Callable[[Bench], None]:
    def run(bench: Bench) -> None:
        bench.lab.exec(HOLDER, *command, check=False)

    return run


START_NGINX = _on_holder("systemctl", "start", "nginx")
FAULTS = {
    fault.name: fault
    for fault in (
        Fault("nginx_stop", _on_holder("systemctl", "stop", "nginx"), START_NGINX),
        Fault("nginx_kill", _on_holder("pkill", "-KILL", "-x", "nginx"), START_NGINX),  # master and workers
        # The VIP stays on lb1's interface (nobody removes it): lb2 takes over after 3 adverts missed.
        Fault(
            "keepalived_kill",
            _on_holder("pkill", "-KILL", "-x", "keepalived"),
            _on_holder("systemctl", "start", "keepalived"),
        ),
        Fault(
            "power_off", lambda bench: bench.lab.power_off(HOLDER), lambda bench: bench.lab.power_on(HOLDER)
        ),
        Fault(
            "front_link_down",
            lambda bench: bench.lab.link_down(HOLDER),
            lambda bench: bench.lab.link_up(HOLDER),
        ),
    )
}


class FailoverBench:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.vip = ipaddress.IPv4Address(bench.vip)
        self.seed_spec = {
            key: value
            for key, value in json.loads(bench.kubectl("get", "lbpair", bench.pair, "-o", "json"))[
                "spec"
            ].items()
            if key in {"vrrp", "healthCheck"}
        }

    def settings(self, spec: dict[str, Any]) -> None:
        """Replace the pair's VRRP and health check wholesale (omitted fields take the spec's defaults)."""
        operations = [
            {"op": "replace", "path": f"/spec/{key}", "value": value} for key, value in spec.items()
        ]
        self.bench.kubectl("patch", "lbpair", self.bench.pair, "--type=json", "-p", json.dumps(operations))
        wait_for(self.bench.ready, timeout=60, what="Ready with the new settings")
        wait_for(lambda: self.bench.lab.vip_holders(self.vip) == [HOLDER], timeout=60, what="VIP on lb1")
        time.sleep(3)  # let keepalived (and the watcher) settle with the new settings before measuring

    def seed_settings(self) -> dict[str, Any]:
        seed = json.loads(json.dumps(self.seed_spec))
        seed["healthCheck"].update(SEED_RESTART_OFF)
        return dict(seed)

    def peer_serves(self) -> bool:
        if not any(held.ip == self.vip for held in self.bench.lab.held_addresses(PEER)):
            return False
        return self.bench.lab.http_get_via(self.vip, "www.example.com", "/", timeout=1).succeeded

    def holder_serves(self) -> bool:
        if self.bench.lab.vip_holders(self.vip) != [HOLDER]:
            return False
        return self.bench.lab.http_get_via(self.vip, "www.example.com", "/", timeout=1).succeeded

    def measure(self, fault: Fault, runs: int) -> dict[str, Any]:
        seconds, failed, failback_failed, requests = [], [], [], []
        for _ in range(runs):
            wait_for(self.holder_serves, timeout=90, what="lb1 holds and serves the VIP")
            wait_for(self.bench.ready, timeout=90, what="Ready")
            loop = RequestLoop(
                self.bench.lab, host="www.example.com", interval=0.02, max_requests=3000, max_seconds=60
            )
            with loop:
                time.sleep(0.5)
                fault.inject(self.bench)
                injected = time.monotonic()
                wait_for(self.peer_serves, timeout=30, interval=0.02, what="peer serving through the VIP")
                seconds.append(time.monotonic() - injected)
                time.sleep(0.5)
                failed_before_recovery = len(loop.failed)
                fault.recover(self.bench)
                wait_for(self.holder_serves, timeout=60, interval=0.05, what="lb1 serving the VIP again")
                time.sleep(0.5)
            failed.append(float(failed_before_recovery))
            failback_failed.append(float(len(loop.failed) - failed_before_recovery))
            requests.append(float(len(loop.responses)))
        return {
            "seconds": summary(seconds),
            "failed_requests": summary(failed),
            "failback_failed_requests": summary(failback_failed),
            "requests_per_run": summary(requests),
        }


def failover_fault(bench: Bench, fault: str, runs: int, baseline_runs: int) -> dict[str, Any]:
    """One fault: the defaults' figures, the seed's (when baseline_runs > 0) measured just before them, and
    the ratio of the medians. The pair is left on the seed's settings, as the other scenarios expect."""
    failover = FailoverBench(bench)
    result: dict[str, Any] = {}
    if baseline_runs > 0:
        failover.settings(failover.seed_settings())
        result["seed_settings"] = failover.measure(FAULTS[fault], baseline_runs)
    failover.settings(FAST_SETTINGS)
    result["defaults"] = failover.measure(FAULTS[fault], runs)
    if "seed_settings" in result:
        seed, defaults = (result[key]["seconds"]["median"] for key in ("seed_settings", "defaults"))
        result["seed_over_defaults_median"] = round(seed / max(defaults, 0.001), 1)
    failover.settings(failover.seed_spec)
    return result
