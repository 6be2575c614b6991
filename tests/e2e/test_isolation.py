"""Pairs are isolated from each other: a node of one pair that hangs mid-command holds up no other pair.

Two pairs on one operator (running as the chart's ServiceAccount), on two pairs of LB nodes racked into
the session's lab for this module (lb3+lb4 for pair A, lb5+lb6 for pair B) and unracked afterwards, so
the samples' lb1 and lb2 are left as the other modules expect them. Both pairs retain their files on
deletion: the nodes are thrown away with the module.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from testbed.addressing import Segment
from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    blackhole_mid_probe,
    deploy_documents,
    lab_pair,
    wait_for,
    web_objects,
)

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-isolation"
PAIR_A, PAIR_B = "pair-a", "pair-b"
LAB_PAIRS = {PAIR_A: 2, PAIR_B: 3}  # which of the lab's pairs of LB nodes each runs on
HOSTS = {PAIR_A: "a.example.com", PAIR_B: "b.example.com"}
HUNG_NODE = "lb6"  # pair B's backup
# An edit is live through the VIP in ~1.5 s when nothing is wrong (bench: apply_to_live_seconds).
EDIT_LIVE_BOUND_SECONDS = 10.0
# Pair B's pass waits out the hung probe (5 s), then reports; the next pass's connect times out in 5 s.
UNREACHABLE_BOUND_SECONDS = 20.0


class Pairs:
    """Two pairs of one operator, and what users see of them."""

    def __init__(self, cluster: ControlPlane, lab: Lab, operator: OperatorProcess) -> None:
        self.cluster, self.lab, self.operator = cluster, lab, operator

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args, input=input).stdout

    def pair(self, name: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.kubectl("get", "lbpair", name, "-o", "json"))
        return document

    def conditions(self, name: str) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in self.pair(name).get("status", {}).get("conditions", [])}

    def node_status(self, pair: str, node: str) -> dict[str, Any]:
        nodes = self.pair(pair).get("status", {}).get("nodes", [])
        return next((dict(found) for found in nodes if found["name"] == node), {})

    def ready(self, name: str) -> bool:
        conditions = self.conditions(name)
        return all(conditions.get(kind, {}).get("status") == "True" for kind in ("Ready", "Programmed"))

    def events(self, name: str, reason: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name},reason={reason}"
        listed = json.loads(self.kubectl("get", "events", "--field-selector", selector, "-o", "json"))
        return list(listed["items"])

    def vip(self, name: str) -> str:
        return str(self.lab.plan.pair_vips(LAB_PAIRS[name])[0])

    def served_by(self, name: str) -> str:
        """The backend answering through the pair's VIP ('' if none)."""
        response = self.lab.http_get_via(self.vip(name), HOSTS[name], "/", timeout=1.0)
        words = dict(word.split("=", 1) for word in response.body.split() if "=" in word)
        return words.get("backend", "") if response.succeeded else ""


@pytest.fixture(scope="module")
def pairs(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pairs]:
    lab.resize(max(LAB_PAIRS.values()))
    operator: OperatorProcess | None = None
    try:
        documents = [
            document
            for name, lab_pair_number in LAB_PAIRS.items()
            for document in (
                lab_pair(lab, lab_pair_number, name, NAMESPACE, deletion_policy="Retain"),
                *web_objects(lab, NAMESPACE, name, HOSTS[name]),
            )
        ]
        kubeconfig = deploy_documents(cluster, lab, NAMESPACE, documents)
        operator = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
        deployed = Pairs(cluster, lab, operator)
        operator.start()
        for name in LAB_PAIRS:
            wait_for(lambda name=name: deployed.ready(name), timeout=60, what=f"{name} Ready and Programmed")
            wait_for(lambda name=name: deployed.served_by(name) == "be1", timeout=20, what=f"{name} serving")
        yield deployed
    finally:
        lab.heal_mgmt()
        if operator is not None:
            # Retain: the operator only takes its finalizer off; nothing is left in the API for later modules.
            cluster.kubectl("-n", NAMESPACE, "delete", "lbpair", *LAB_PAIRS, "--timeout=60s", check=False)
            operator.stop_and_show_log()
        lab.resize(1)


def test_a_node_hung_mid_command_in_one_pair_delays_no_edit_of_another(
    pairs: Pairs, record_property: Callable[[str, object], None]
) -> None:
    unreachable_before = len(pairs.events(PAIR_B, "NodeUnreachable"))
    be2 = str(pairs.lab.plan.hosts["be2"].address(Segment.BACK))
    patch = {"spec": {"servers": [{"address": be2, "port": 80}]}}
    try:
        hung_at = blackhole_mid_probe(pairs.lab, HUNG_NODE)

        # Pair A's edit while pair B's pass is stuck on the hung node.
        edited_at = time.monotonic()
        pairs.kubectl("patch", "upstream", f"{PAIR_A}-web", "--type=merge", "-p", json.dumps(patch))
        wait_for(
            lambda: pairs.served_by(PAIR_A) == "be2",
            timeout=EDIT_LIVE_BOUND_SECONDS,
            interval=0.05,
            what=f"{PAIR_A}'s edit served through its VIP",
        )
        edit_live_seconds = time.monotonic() - edited_at

        hung_node = wait_for(
            lambda: (found := pairs.node_status(PAIR_B, HUNG_NODE)).get("reachable") is False and found,
            timeout=UNREACHABLE_BOUND_SECONDS - (time.monotonic() - hung_at),
            interval=0.1,
            what=f"{HUNG_NODE} unreachable in {PAIR_B}'s status",
        )
        reported_seconds = time.monotonic() - hung_at
        degraded = pairs.conditions(PAIR_B)["Degraded"]
        unreachable_events = wait_for(
            lambda: pairs.events(PAIR_B, "NodeUnreachable")[unreachable_before:],
            timeout=10,
            what="a NodeUnreachable event",
        )
        served_by_b = pairs.served_by(PAIR_B)
    finally:
        pairs.lab.heal_mgmt(HUNG_NODE)
    print(
        f"{PAIR_A}'s edit live through its VIP after {edit_live_seconds:.2f} s with {HUNG_NODE} hung; "
        f"{PAIR_B} reported {HUNG_NODE} unreachable {reported_seconds:.2f} s after it hung",
        file=sys.stderr,
    )
    record_property("pair_a_edit_live_seconds", round(edit_live_seconds, 3))
    record_property("pair_b_unreachable_reported_seconds", round(reported_seconds, 3))

    a_conditions = pairs.conditions(PAIR_A)
    assert a_conditions["Programmed"]["status"] == "True"
    assert a_conditions["Programmed"]["observedGeneration"] == pairs.pair(PAIR_A)["metadata"]["generation"]
    assert a_conditions["Degraded"]["status"] == "False"
    # The probe ran on the node; its answer never came back: the operator gave up at its deadline.
    assert "no answer within" in hung_node["message"], hung_node
    assert (degraded["status"], degraded["reason"]) == ("True", "NodeUnreachable")
    assert f"{HUNG_NODE} unreachable" in degraded["message"]
    assert [event["message"].split(":")[0] for event in unreachable_events] == [HUNG_NODE]
    assert served_by_b == "be1"  # the hung node is pair B's backup: its VIP keeps serving from lb5
    # Healed, the node is back in status.
    wait_for(lambda: pairs.events(PAIR_B, "NodeRecovered"), timeout=30, what="a NodeRecovered event")
    wait_for(lambda: pairs.ready(PAIR_B), timeout=30, what=f"{PAIR_B} Ready again")
    assert pairs.node_status(PAIR_B, HUNG_NODE)["reachable"] is True


def test_a_pair_aimed_at_another_pairs_node_never_touches_it_and_its_replaced_node_is_cleaned(
    pairs: Pairs,
) -> None:
    """Pair A's backup lb4 is replaced by lb5, which pair B has: lb5 is refused to pair A and left exactly as
    pair B runs it; lb4, out of pair A's spec, is cleaned up like a deleted pair's node."""
    intruded, replaced = "lb5", "lb4"
    config_before = pairs.lab.exec(intruded, "cat", "/etc/nginx/nginx.conf").stdout
    nodes = pairs.pair(PAIR_A)["spec"]["nodes"]
    b_node = next(node for node in pairs.pair(PAIR_B)["spec"]["nodes"] if node["name"] == intruded)
    patch = [{"op": "replace", "path": "/spec/nodes/1", "value": {**b_node, "priority": 100}}]
    try:
        pairs.kubectl("patch", "lbpair", PAIR_A, "--type=json", "-p", json.dumps(patch))
        refused = wait_for(
            lambda: (
                "belongs to LoadBalancerPair"
                in (found := pairs.node_status(PAIR_A, intruded)).get("message", "")
                and found
            ),
            timeout=30,
            what=f"{intruded} refused to {PAIR_A}",
        )
        released = wait_for(
            lambda: pairs.events(PAIR_A, "NodeReleased"), timeout=30, what=f"{replaced} released"
        )
        keepalived = pairs.lab.exec(replaced, "systemctl", "is-active", "keepalived", check=False).stdout
        state_left = pairs.lab.exec(replaced, "ls", "/var/lib/lbpair", check=False).returncode == 0
        config_after = pairs.lab.exec(intruded, "cat", "/etc/nginx/nginx.conf").stdout
        served_by_b, served_by_a = pairs.served_by(PAIR_B), pairs.served_by(PAIR_A)
        b_ready = pairs.ready(PAIR_B)
    finally:
        restore = [{"op": "replace", "path": "/spec/nodes/1", "value": nodes[1]}]
        pairs.kubectl("patch", "lbpair", PAIR_A, "--type=json", "-p", json.dumps(restore))
    assert f"LoadBalancerPair {NAMESPACE}/{PAIR_B}" in refused["message"]
    assert config_after == config_before  # never touched
    assert (served_by_b, b_ready) == ("be1", True)
    assert served_by_a  # from lb3, its VIP holder all along
    assert [event["message"] for event in released] == [
        f"{replaced} {pairs.lab.mgmt_address(replaced)}:22 left the spec: cleaned up"
    ]
    assert (keepalived.strip(), state_left) == ("inactive", False)
    # Back in the spec, lb4 is programmed again; pair A lets go of lb5 without touching it.
    wait_for(lambda: pairs.ready(PAIR_A), timeout=60, what=f"{PAIR_A} Ready with {replaced} back")
    assert pairs.lab.exec(intruded, "cat", "/etc/nginx/nginx.conf").stdout == config_before
