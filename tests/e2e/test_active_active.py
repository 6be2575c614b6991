"""An ActiveActive pair end to end: the active-active sample on the lab's lb1 and lb2, the operator running as
the chart's ServiceAccount. Each node serves its own VIP; when nginx stops on one, the other takes that VIP
too and serves both, and status shows it per VRRP instance; the recovered node takes its VIP back.

Which node served a request is read where a user would look: the node's access log of the VirtualHost
(each request carries a token of its own in its query string).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from testbed.cluster import REPO_ROOT, ControlPlane
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

SAMPLE = REPO_ROOT / "config" / "samples" / "active-active.yaml"
NAMESPACE = "lb-aa-e2e"
PAIR = "edge"
HOST = "api.example.com"
ACCESS_LOG = f"/var/log/nginx/{NAMESPACE}_api.access.log"
# The sample's namespace selector (spec.allowedNamespaces): the namespace must carry it to attach.
NAMESPACE_LABEL = "lb.lbpair.dev/edge=allowed"
# The sample's health check (the nginx watcher, weight 0: FAULT at the first failure), except that the
# check script does not restart a stopped nginx, so each failover the test causes stays visible.
LAB_HEALTH_CHECK = {
    "method": "Watch",
    "intervalSeconds": 1,
    "fall": 1,
    "rise": 1,
    "weight": 0,
    "restartNginx": False,
}
NODES = ("lb1", "lb2")
# The README's one-line-per-node view of vrrpState and vrrpInstances.
README_VRRP_JSONPATH = (
    "{range .status.nodes[*]}{.name} {.vrrpState}: "
    '{range .vrrpInstances[*]}{.name}={.state}{.vips} {end}{"\\n"}{end}'
)


@dataclass
class ActiveActive:
    cluster: ControlPlane
    lab: Lab
    vips: dict[str, str]  # node -> the VIP it prefers (the sample's vips[].preferredNode)

    def pair(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(
            self.cluster.kubectl("-n", NAMESPACE, "get", "lbpair", PAIR, "-o", "json").stdout
        )
        return document

    def status(self) -> dict[str, Any]:
        return dict(self.pair().get("status", {}))

    def holders(self, holder_of: dict[str, str]) -> str:
        """vipHolders as status spells it when node holder_of[vip] holds each VIP."""
        return ",".join(f"{vip}={holder_of[vip]}" for vip in self.vips.values())

    def vrrp(self) -> dict[str, tuple[str, list[tuple[str, str, list[str]]]]]:
        """Per node: vrrpState, and each of vrrpInstances as (name, state, vips)."""
        return {
            node["name"]: (
                node.get("vrrpState", ""),
                [(i["name"], i["state"], i.get("vips", [])) for i in node.get("vrrpInstances", [])],
            )
            for node in self.status().get("nodes", [])
        }

    def shared_vrrp(self) -> dict[str, tuple[str, list[tuple[str, str, list[str]]]]]:
        """vrrp() while both nodes are healthy: each is Master of the instance carrying the VIP it prefers."""
        vip1, vip2 = self.vips["lb1"], self.vips["lb2"]
        return {
            "lb1": ("Mixed", [("lbpair_1", "Master", [vip1]), ("lbpair_2", "Backup", [vip2])]),
            "lb2": ("Mixed", [("lbpair_1", "Backup", [vip1]), ("lbpair_2", "Master", [vip2])]),
        }

    def wait_holders(self, holder_of: dict[str, str], timeout: float = 30.0) -> None:
        expected = self.holders(holder_of)
        wait_for(
            lambda: self.status().get("vipHolders") == expected,
            timeout=timeout,
            what=f"vipHolders {expected}",
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            conditions = {c["type"]: c["status"] for c in self.status().get("conditions", [])}
            return conditions.get("Ready") == "True" and conditions.get("Programmed") == "True"

        wait_for(ready, timeout=timeout, what="pair Ready and Programmed")

    def request(self, vip: str) -> tuple[bool, list[str]]:
        """One request through `vip`: whether it succeeded, and the nodes whose nginx logged it."""
        token = uuid.uuid4().hex
        response = self.lab.http_get_via(vip, HOST, f"/?request={token}")
        logged = [
            node
            for node in NODES
            if self.lab.exec(node, "grep", "-q", token, ACCESS_LOG, check=False).returncode == 0
        ]
        return response.succeeded, logged


@pytest.fixture(scope="module")
def active_active(
    cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ActiveActive]:
    documents = load_sample_on_lab(lab, SAMPLE)
    (pair,) = [document for document in documents if document["kind"] == "LoadBalancerPair"]
    pair["spec"]["healthCheck"] = LAB_HEALTH_CHECK
    vips = {vip["preferredNode"]: vip["address"].split("/")[0] for vip in pair["spec"]["vips"]}
    # The sample's VIPs are the lab's two VIPs of its first pair of nodes (lb1, lb2).
    assert sorted(vips.values()) == sorted(str(vip) for vip in lab.plan.pair_vips(1))
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.kubectl("label", "namespace", NAMESPACE, NAMESPACE_LABEL, "--overwrite")
    operator_kubeconfig = deploy_documents(cluster, lab, NAMESPACE, documents)
    operator = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    try:
        deployed = ActiveActive(cluster, lab, vips)
        deployed.wait_ready()
        yield deployed
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])


def test_each_vip_is_served_by_its_own_node_and_status_shows_both_instances(
    active_active: ActiveActive,
) -> None:
    vip1, vip2 = active_active.vips["lb1"], active_active.vips["lb2"]
    active_active.wait_holders({vip1: "lb1", vip2: "lb2"})

    through_vip1, through_vip2 = active_active.request(vip1), active_active.request(vip2)
    listed = active_active.cluster.kubectl("-n", NAMESPACE, "get", "lbpairs").stdout
    per_instance = active_active.cluster.kubectl(
        "-n", NAMESPACE, "get", "lbpair", PAIR, "-o", f"jsonpath={README_VRRP_JSONPATH}"
    ).stdout

    assert through_vip1 == (True, ["lb1"])
    assert through_vip2 == (True, ["lb2"])
    assert active_active.lab.vip_holders(vip1) == ["lb1"]
    assert active_active.lab.vip_holders(vip2) == ["lb2"]
    assert active_active.vrrp() == active_active.shared_vrrp()
    assert [line.rstrip() for line in per_instance.splitlines()] == [  # as the README shows it
        f'lb1 Mixed: lbpair_1=Master["{vip1}"] lbpair_2=Backup["{vip2}"]',
        f'lb2 Mixed: lbpair_1=Backup["{vip1}"] lbpair_2=Master["{vip2}"]',
    ]
    row = listed.splitlines()[1].split()
    assert row[:6] == [PAIR, f"{vip1},{vip2}", f"{vip1}=lb1,{vip2}=lb2", "ActiveActive", "2/2", "True"]


@pytest.mark.parametrize(("failing", "peer"), [("lb1", "lb2"), ("lb2", "lb1")])
def test_nginx_stopped_on_one_node_moves_its_vip_to_the_peer_and_back(
    active_active: ActiveActive, failing: str, peer: str
) -> None:
    lost, kept = active_active.vips[failing], active_active.vips[peer]
    active_active.wait_holders({lost: failing, kept: peer})
    try:
        # The peer's own VIP must not notice; the moved one is retried through the move, as a client would.
        with RequestLoop(
            active_active.lab, host=HOST, vip=kept, interval=0.1, max_requests=300, max_seconds=60
        ) as undisturbed:
            active_active.lab.exec(failing, "systemctl", "stop", "nginx")
            active_active.wait_holders({lost: peer, kept: peer})
            moved = wait_for(
                lambda: (served := active_active.request(lost))[0] and served,
                timeout=10,
                what=f"{lost} served after the move",
            )
            vrrp = active_active.vrrp()
    finally:
        active_active.lab.exec(failing, "systemctl", "start", "nginx")

    assert moved == (True, [peer])
    assert active_active.lab.vip_holders(lost) == [peer]
    assert vrrp[peer] == (
        "Master",
        [
            ("lbpair_1", "Master", [active_active.vips["lb1"]]),
            ("lbpair_2", "Master", [active_active.vips["lb2"]]),
        ],
    )
    assert vrrp[failing][0] == "Fault"  # weight 0: both of its instances go to FAULT
    assert {state for _, state, _ in vrrp[failing][1]} == {"Fault"}
    assert undisturbed.responses
    assert undisturbed.failed == []
    # Preempt (after the sample's 5 s delay): the recovered node takes its own VIP back and serves it.
    active_active.wait_holders({lost: failing, kept: peer})
    assert wait_for(
        lambda: active_active.request(lost) == (True, [failing]),
        timeout=10,
        what=f"{lost} served by {failing}",
    )
    assert active_active.vrrp() == active_active.shared_vrrp()  # same probe as vipHolders
    active_active.wait_ready()
