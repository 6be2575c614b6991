"""Failover driven by the node-side nginx watcher (healthCheck.method Watch, the default) on the lab.

The seed tutorial's pair with the operator's fast defaults (VRRPv3, 100 ms adverts, weight 0): the watcher
is installed on both nodes with the pair's files and started by the check script keepalived runs; node
status reports it; nginx SIGKILLed on the VIP holder moves the VIP to the peer, which serves through it,
and status shows the move; a change of the watcher's config (the listeners it connects to) is pushed and
the running watcher picks it up; deleting the pair removes it from both nodes and it stops.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lbpair.build.keepalived import NGINX_TRACK_FILE, WATCH_CONFIG_NAME, WATCH_PROGRAM_NAME
from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    deploy_documents,
    load_sample_on_lab,
    tear_down_on_shared_nodes,
    wait_for,
)
from testbed.traffic import RequestLoop

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-failover-e2e"
PAIR = "seed"
HOST = "www.example.com"
NODES = ("lb1", "lb2")
PROGRAM = f"/etc/keepalived/{WATCH_PROGRAM_NAME}"
CONFIG = f"/etc/keepalived/{WATCH_CONFIG_NAME}"
# The seed's VRRP, on the operator's defaults otherwise (VRRPv3 has no PASS authentication).
FAST_VRRP = {"virtualRouterId": 51, "peering": "Unicast"}


@dataclass
class Deployed:
    cluster: ControlPlane
    lab: Lab

    def kubectl(self, *args: str) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args).stdout

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "lbpair", PAIR, "-o", "json")).get("status", {}))

    def node_status(self) -> dict[str, dict[str, Any]]:
        return {node["name"]: node for node in self.status().get("nodes", [])}

    def ready(self) -> bool:
        conditions = {c["type"]: c["status"] for c in self.status().get("conditions", [])}
        return conditions.get("Ready") == "True" and conditions.get("Programmed") == "True"

    def on_node(self, node: str, *command: str) -> str:
        return self.lab.exec(node, *command, check=False).stdout

    def watcher_pid(self, node: str) -> str:
        """The pid of the watcher process running on the node ("" when none runs)."""
        return self.on_node(node, "pgrep", "-f", PROGRAM).strip()

    def files_hash(self, node: str) -> str:
        """sha256 over the watcher's program and config on the node, as the watcher reports it."""
        return self.on_node(node, "sh", "-c", f"cat {PROGRAM} {CONFIG} | sha256sum").split()[0]


@pytest.fixture(scope="module")
def deployed(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    documents = load_sample_on_lab(lab)
    (pair,) = [document for document in documents if document["kind"] == "LoadBalancerPair"]
    pair["spec"]["vrrp"] = FAST_VRRP
    pair["spec"]["healthCheck"] = {"restartNginx": False}  # a killed nginx stays down: the peer must serve
    operator_kubeconfig = deploy_documents(cluster, lab, NAMESPACE, documents)
    operator = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    try:
        deployment = Deployed(cluster, lab)
        wait_for(deployment.ready, timeout=120, what="pair Ready")
        yield deployment
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])


def test_the_watcher_runs_on_both_nodes_and_node_status_reports_it(deployed: Deployed) -> None:
    def reported() -> dict[str, Any]:
        nodes = deployed.node_status()
        watchers = {name: nodes.get(name, {}).get("nginxWatcher") for name in NODES}
        return watchers if all(w and w["running"] for w in watchers.values()) else {}

    watchers = wait_for(reported, timeout=30, what="nginxWatcher running on both nodes")

    for node in NODES:
        assert deployed.watcher_pid(node)
        assert watchers[node] == {"running": True, "hash": deployed.files_hash(node), "nginxServing": True}
        assert deployed.on_node(node, "cat", NGINX_TRACK_FILE).strip() == "0"
        assert NGINX_TRACK_FILE in deployed.on_node(node, "cat", "/etc/keepalived/keepalived.conf")


def test_nginx_killed_on_the_holder_moves_the_vip_to_the_peer_which_serves(deployed: Deployed) -> None:
    lab, vip = deployed.lab, str(deployed.lab.plan.vip_primary)
    wait_for(lambda: lab.vip_holders(vip) == ["lb1"], timeout=30, what="VIP on lb1")
    try:
        with RequestLoop(lab, host=HOST, interval=0.02, max_requests=500, max_seconds=20) as loop:
            wait_for(lambda: len(loop.responses) >= 5, timeout=5, interval=0.02, what="traffic flowing")
            lab.exec("lb1", "pkill", "-KILL", "nginx")  # master and workers at once
            wait_for(lambda: lab.vip_holders(vip) == ["lb2"], timeout=5, interval=0.02, what="VIP on lb2")
            served = wait_for(
                lambda: lab.http_get_via(vip, HOST, "/", timeout=1).succeeded, timeout=5, what="served"
            )
        wait_for(
            lambda: deployed.status().get("vipHolders") == f"{vip}=lb2", timeout=30, what="status shows lb2"
        )
        nodes = deployed.node_status()
    finally:
        lab.exec("lb1", "systemctl", "start", "nginx")

    assert served
    assert lab.vip_holders(vip) == ["lb2"]
    assert nodes["lb1"]["vrrpState"] == "Fault"
    assert nodes["lb1"]["nginxWatcher"]["nginxServing"] is False
    assert nodes["lb2"]["vrrpState"] == "Master"
    # Preempt (the default): once nginx accepts again lb1 takes the VIP back.
    wait_for(lambda: lab.vip_holders(vip) == ["lb1"], timeout=30, what="VIP back on lb1")
    wait_for(deployed.ready, timeout=60, what="Ready again")


def test_a_change_of_the_watcher_is_pushed_and_the_running_watcher_takes_it(deployed: Deployed) -> None:
    before = {node: deployed.watcher_pid(node) for node in NODES}
    old_hash = deployed.files_hash("lb1")
    deployed.kubectl(
        "patch", "lbpair", PAIR, "--type=merge", "-p",
        json.dumps({"spec": {"healthCheck": {"watchIntervalMilliseconds": 80}}}),
    )  # fmt: skip

    def updated() -> dict[str, Any]:
        nodes = deployed.node_status()
        watchers = {name: nodes.get(name, {}).get("nginxWatcher") or {} for name in NODES}
        # The swap replaces the program and its config one after the other: the watcher may report a hash
        # of the new program with the old config for a moment, then the new pair's.
        fresh = all(
            w.get("running")
            and w.get("hash") not in {old_hash, None}
            and w.get("hash") == deployed.files_hash(n)
            for n, w in watchers.items()
        )
        return watchers if fresh else {}

    wait_for(updated, timeout=60, what="nginxWatcher running the new config on both nodes")

    for node in NODES:
        assert '"intervalMilliseconds": 80' in deployed.on_node(node, "cat", CONFIG)
        # It re-executed itself in place (same process), rather than a second one starting beside it.
        assert deployed.watcher_pid(node) == before[node]


def test_deleting_the_pair_removes_the_watcher_from_the_nodes(deployed: Deployed) -> None:
    deployed.kubectl("delete", "lbpair", PAIR, "--timeout=90s")

    for node in NODES:
        wait_for(lambda node=node: not deployed.watcher_pid(node), timeout=10, what=f"watcher gone on {node}")
        assert deployed.lab.exec(node, "test", "-e", PROGRAM, check=False).returncode != 0
        assert deployed.lab.exec(node, "test", "-e", CONFIG, check=False).returncode != 0
