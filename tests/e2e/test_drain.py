"""Planned drain and failover drills end to end: the seed sample on the lab's lb1 and lb2, the operator
running as the chart's ServiceAccount.

What is asserted is what a user sees: traffic through the VIP (a new connection every 20 ms, none may
fail), who holds the VIP on the nodes, status.nodes[].maintenance, the Maintenance condition,
status.lastDrill and events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import OperatorProcess, deploy_sample, tear_down_on_shared_nodes, wait_for
from testbed.traffic import RequestLoop

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-drain-e2e"
PAIR = "seed"
HOST = "www.example.com"
DRILL_ANNOTATION = "lb.lbpair.dev/drill"


class Pair:
    """The seed pair in NAMESPACE and what a user reads of it."""

    def __init__(self, cluster: ControlPlane, lab: Lab, operator: OperatorProcess) -> None:
        self.cluster, self.lab, self.operator = cluster, lab, operator
        self.vip = str(lab.plan.vip_primary)

    def passes(self) -> int:
        """The operator's passes so far (one log line each)."""
        return self.operator.log_path.read_text(errors="replace").count("pass pair=")

    def kubectl(self, *args: str) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args).stdout

    def status(self) -> dict[str, Any]:
        document = json.loads(self.kubectl("get", "lbpair", PAIR, "-o", "json"))
        return dict(document.get("status", {}))

    def condition(self, condition_type: str) -> dict[str, Any]:
        found = [c for c in self.status().get("conditions", []) if c["type"] == condition_type]
        return dict(found[0]) if found else {}

    def maintenance(self) -> dict[str, str]:
        return {node["name"]: node.get("maintenance", "") for node in self.status().get("nodes", [])}

    def set_maintenance(self, index: int, value: str) -> None:
        patch = [{"op": "add", "path": f"/spec/nodes/{index}/maintenance", "value": value}]
        self.kubectl("patch", "lbpair", PAIR, "--type=json", "-p", json.dumps(patch))

    def events(self, reason: str) -> list[dict[str, Any]]:
        listed = json.loads(
            self.kubectl("get", "events", "--field-selector", f"reason={reason}", "-o", "json")
        )
        return list(listed["items"])

    def wait_holder(self, node: str, timeout: float = 30) -> None:
        wait_for(
            lambda: self.status().get("vipHolders") == f"{self.vip}={node}",
            timeout=timeout,
            what=f"{self.vip} held by {node} in status",
        )

    def wait_ready(self, timeout: float = 90) -> None:
        wait_for(
            lambda: (
                self.condition("Ready").get("status") == "True"
                and self.condition("Programmed").get("status") == "True"
                and self.status().get("healthyNodes") == "2/2"
            ),
            timeout=timeout,
            what="pair Ready, Programmed, 2/2 healthy",
        )


@pytest.fixture(scope="module")
def pair(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    operator_kubeconfig = deploy_sample(cluster, lab, NAMESPACE)
    operator = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    try:
        deployed = Pair(cluster, lab, operator)
        deployed.wait_ready()
        yield deployed
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])


def test_drain_moves_the_vip_to_the_peer_without_a_failed_request_and_undrain_brings_it_back(
    pair: Pair,
) -> None:
    pair.wait_holder("lb1")
    with RequestLoop(pair.lab, host=HOST, interval=0.02, max_requests=3000, max_seconds=90) as traffic:
        pair.set_maintenance(0, "Drain")
        wait_for(lambda: pair.maintenance().get("lb1") == "Drained", timeout=30, what="lb1 Drained")
        drained_condition = pair.condition("Maintenance")
        holders_when_drained = pair.lab.vip_holders(pair.vip)
        served_when_drained = pair.lab.http_get_via(pair.vip, HOST, "/").succeeded
        pair.set_maintenance(0, "None")
        pair.wait_holder("lb1")  # the seed preempts: lb1 has the higher priority
        wait_for(lambda: pair.maintenance().get("lb1") == "None", timeout=30, what="lb1 back in service")

    assert holders_when_drained == ["lb2"]
    assert served_when_drained
    assert (drained_condition["status"], drained_condition["reason"]) == ("True", "Drained")
    assert "safe to stop nginx or reboot lb1" in drained_condition["message"]
    assert pair.lab.vip_holders(pair.vip) == ["lb1"]
    assert len(traffic.responses) > 50
    assert traffic.failed == []
    assert pair.events("NodeDrained")
    assert pair.events("NodeUndrained")
    assert pair.lab.exec("lb1", "cat", "/var/lib/lbpair/track/maintenance").stdout == "0\n"


def test_draining_the_only_healthy_node_is_refused(pair: Pair) -> None:
    pair.wait_ready()
    pair.lab.power_off("lb2")
    try:
        wait_for(
            lambda: pair.condition("Degraded").get("reason") == "NodeUnreachable",
            timeout=30,
            what="lb2 unreachable in status",
        )
        pair.set_maintenance(0, "Drain")
        refused = wait_for(
            lambda: (found := pair.condition("Maintenance")).get("reason") == "DrainRefused" and found,
            timeout=30,
            what="drain refused",
        )
        still_served = pair.lab.http_get_via(pair.vip, HOST, "/").succeeded
        maintenance = pair.maintenance()
    finally:
        pair.set_maintenance(0, "None")
        pair.lab.power_on("lb2")
    pair.wait_ready()

    assert refused["status"] == "False"
    assert "lb1 not drained: its peer lb2 is unreachable" in refused["message"]
    assert maintenance["lb1"] == "Refused"
    assert still_served
    assert pair.lab.vip_holders(pair.vip) == ["lb1"]
    assert pair.events("DrainRefused")


def test_a_drill_token_moves_the_vip_there_and_back_records_it_and_runs_once(pair: Pair) -> None:
    pair.wait_ready()
    pair.wait_holder("lb1")
    asked = "e2e-drill-1"
    with RequestLoop(pair.lab, host=HOST, interval=0.02, max_requests=3000, max_seconds=90) as traffic:
        pair.kubectl("annotate", "--overwrite", "lbpair", PAIR, f"{DRILL_ANNOTATION}={asked}")
        drill = wait_for(
            lambda: (found := pair.status().get("lastDrill") or {}).get("token") == asked and found,
            timeout=60,
            what="lastDrill for the token",
        )
    passes_after_drill = pair.passes()
    wait_for(lambda: pair.passes() >= passes_after_drill + 3, timeout=30, what="three more passes")

    assert (drill["result"], drill["fromNode"], drill["toNode"], drill["vip"]) == (
        "Succeeded",
        "lb1",
        "lb2",
        pair.vip,
    )
    assert drill["takeoverSeconds"] > 0  # FAULT: the old holder lets go first, lb2 takes over after its skew
    assert drill["failbackSeconds"] >= 0  # preempting: lb1 may take it before lb2 lets go
    assert pair.lab.vip_holders(pair.vip) == ["lb1"]
    assert traffic.failed == []
    assert len(pair.events("DrillSucceeded")) == 1
    assert pair.status()["lastDrill"] == drill  # the same token again: nothing ran
    assert [pair.lab.exec(n, "cat", "/var/lib/lbpair/track/maintenance").stdout for n in ("lb1", "lb2")] == [
        "0\n",
        "0\n",
    ]
