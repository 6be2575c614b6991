"""The pair's health as users see it, from node observations (pure)."""

from __future__ import annotations

import ipaddress

from lbpair.health import NodeReport, PairHealth, assess_pair
from lbpair.nodes.observe import NodeObservation, VrrpInstanceState

VIP = "198.51.100.10"
AT = "2026-11-30T00:00:00Z"


def observed(
    name: str, *, holds_vip: bool, nginx: bool = True, keepalived: bool = True, state: str = "BACKUP"
) -> NodeReport:
    addresses = {ipaddress.IPv4Interface("198.51.100.11/24")}
    if holds_vip:
        addresses.add(ipaddress.IPv4Interface(f"{VIP}/24"))
    observation = NodeObservation(
        hostname=name,
        services={"nginx": nginx, "keepalived": keepalived},
        addresses=frozenset(addresses),
        managed_files={},
        vrrp=(VrrpInstanceState("VI_1", state, 100),),
    )
    return NodeReport(name=name, observation=observation, programmed=True)


def conditions(health: PairHealth) -> dict[str, tuple[bool, str]]:
    return {c.type: (c.status == "True", c.reason) for c in health.conditions}


def test_one_holder_both_healthy_is_ready() -> None:
    health = assess_pair(
        [VIP], [observed("lb1", holds_vip=True, state="MASTER"), observed("lb2", holds_vip=False)], at=AT
    )

    assert health.holder_summary == f"{VIP}=lb1"
    assert health.healthy_nodes == "2/2"
    assert conditions(health) == {
        "Ready": (True, "Serving"),
        "Programmed": (True, "Applied"),
        "Degraded": (False, "AllNodesHealthy"),
        "SplitBrain": (False, "SingleHolder"),
    }


def test_vip_on_both_nodes_is_split_brain_and_not_ready() -> None:
    health = assess_pair([VIP], [observed("lb1", holds_vip=True), observed("lb2", holds_vip=True)], at=AT)

    assert health.holder_summary == f"{VIP}=lb1+lb2"
    assert conditions(health)["SplitBrain"] == (True, "VIPOnSeveralNodes")
    assert conditions(health)["Ready"] == (False, "SplitBrain")


def test_unreachable_node_degrades_but_the_other_still_serves() -> None:
    unreachable = NodeReport(name="lb1", observation=None, error="203.0.113.11:22: timed out")

    health = assess_pair([VIP], [unreachable, observed("lb2", holds_vip=True)], at=AT)
    degraded = next(c for c in health.conditions if c.type == "Degraded")

    assert health.healthy_nodes == "1/2"
    assert conditions(health)["Ready"] == (True, "Serving")
    assert (degraded.status, degraded.reason) == ("True", "NodeUnreachable")
    assert "lb1 unreachable: 203.0.113.11:22: timed out" in degraded.message
    assert conditions(health)["Programmed"] == (False, "NotApplied")


def test_holder_without_nginx_is_not_ready_and_no_holder_is_an_outage() -> None:
    nginx_down = assess_pair(
        [VIP], [observed("lb1", holds_vip=True, nginx=False), observed("lb2", holds_vip=False)], at=AT
    )
    nobody = assess_pair([VIP], [observed("lb1", holds_vip=False), observed("lb2", holds_vip=False)], at=AT)

    assert conditions(nginx_down)["Ready"] == (False, "NginxDown")
    assert conditions(nginx_down)["Degraded"] == (True, "NodeUnhealthy")
    assert nobody.holder_summary == f"{VIP}=none"
    assert conditions(nobody)["Ready"] == (False, "VIPNotHeld")


def test_no_reachable_holder_with_a_node_unreachable_says_the_holder_is_unknown() -> None:
    unreachable = NodeReport(name="lb1", observation=None, error="timed out")

    health = assess_pair([VIP], [unreachable, observed("lb2", holds_vip=False)], at=AT)
    ready = next(c for c in health.conditions if c.type == "Ready")

    assert (ready.status, ready.reason) == ("False", "HolderUnknown")
    assert "unreachable: lb1" in ready.message
