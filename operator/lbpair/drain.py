"""Pure: planned drain (spec.nodes[].maintenance: Drain) -> which nodes demote themselves, and how that
reads in status and events.

A drained node's keepalived tracks a file the operator writes (lbpair.render.model.MaintenanceFile): 1
puts every instance in FAULT, which sends a priority-0 advert, so the peer takes over after its skew time
whatever the preempt policy. A drain is carried out only while the peer is healthy, as last observed, and
not drained itself: a drain that would leave no node serving is refused, and one in effect is lifted when
its peer stops being healthy (its nginx may be stopped by then; serving from it cannot be worse than no
node at all).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from lbpair.build import PairBuild
from lbpair.events import Event
from lbpair.health import PairHealth
from lbpair.model.pair import PairSpec
from lbpair.model.status import Condition, NodeMaintenance, NodeStatus, PairStatus, find_condition
from lbpair.status import with_transitions

CONDITION = "Maintenance"
DRAINED_STATES: tuple[NodeMaintenance, ...] = ("Draining", "Drained")


@dataclass(frozen=True)
class DrainPlan:
    """The nodes to drain now, and the drains refused with why."""

    drained: frozenset[str] = frozenset()
    refused: Mapping[str, str] = field(default_factory=dict)


def plan_drains(spec: PairSpec, previous: PairStatus | None) -> DrainPlan:
    """What spec.nodes[].maintenance asks for, within what the nodes last reported: at most one node
    drained (the one already drained, else the first asked for), and only while its peer is healthy."""
    asked = [node.name for node in spec.nodes if node.maintenance == "Drain"]
    seen = {node.name: node for node in previous.nodes} if previous else {}
    already = [name for name in asked if name in seen and seen[name].maintenance in DRAINED_STATES]
    drained: set[str] = set()
    refused: dict[str, str] = {}
    for name in sorted(asked, key=lambda n: (n not in already, asked.index(n))):
        peer = next(node.name for node in spec.nodes if node.name != name)
        if peer in drained:
            refused[name] = f"its peer {peer} is drained; one node must keep serving"
            continue
        problem = _unhealthy(seen.get(peer))
        if problem:
            refused[name] = f"its peer {peer} {problem}; draining {name} would leave no node serving"
        else:
            drained.add(name)
    return DrainPlan(frozenset(drained), refused)


def _unhealthy(peer: NodeStatus | None) -> str:
    """Why `peer` could not take the VIPs, as last reported ('' when it can)."""
    if peer is None:
        return "has not been observed yet"
    down = [
        service
        for service, running in (("nginx", peer.nginx_running), ("keepalived", peer.keepalived_running))
        if not running
    ]
    if not peer.reachable:
        return "is unreachable"
    if down:
        return f"is not healthy ({' and '.join(down)} not running)"
    if peer.vrrp_state in ("Fault", "Unknown"):
        return f"is not healthy (VRRP {peer.vrrp_state})"
    if peer.maintenance in DRAINED_STATES:
        return "is drained"
    return ""


def with_drains(build: PairBuild, plan: DrainPlan) -> PairBuild:
    """The build with each node's maintenance file saying whether the plan drains it."""
    nodes = []
    for node in build.state.nodes:
        maintenance = node.keepalived.maintenance
        if maintenance is not None:
            maintenance = dataclasses.replace(maintenance, drained=node.name in plan.drained)
        keepalived = dataclasses.replace(node.keepalived, maintenance=maintenance)
        nodes.append(dataclasses.replace(node, keepalived=keepalived))
    return dataclasses.replace(build, state=dataclasses.replace(build.state, nodes=nodes))


def report_drains(
    status: PairStatus, previous: PairStatus | None, plan: DrainPlan, health: PairHealth, at: str
) -> PairStatus:
    """status.nodes[].maintenance and the Maintenance condition. A drained node is Drained once its peer
    holds every VIP: from then on stopping its nginx or rebooting it takes nothing from anyone. The
    condition keeps its lastTransitionTime from the `previous` status (the one last written) while it
    stays the same, so a pass that changes nothing writes nothing."""
    names = [node.name for node in health.nodes]
    states: dict[str, NodeMaintenance] = dict.fromkeys(plan.refused, "Refused")
    for name in plan.drained:
        peer = next((other for other in names if other != name), "")
        served_by_peer = all(holders == [peer] for holders in health.holders.values())
        states[name] = "Drained" if served_by_peer else "Draining"
    nodes = [node.model_copy(update={"maintenance": states.get(node.name, "None")}) for node in status.nodes]
    details = [
        f"{name} drained: every VIP is on its peer; safe to stop nginx or reboot {name}"
        if states[name] == "Drained"
        else f"{name} draining: its peer does not hold every VIP yet"
        for name in sorted(plan.drained)
    ]
    details += [f"{name} not drained: {why}" for name, why in sorted(plan.refused.items())]
    if plan.refused:
        reason = "DrainRefused"
    elif plan.drained:
        reason = "Drained" if all(states[name] == "Drained" for name in plan.drained) else "Draining"
    else:
        reason = "InService"
    condition = Condition.of(
        CONDITION, bool(plan.drained), reason, "; ".join(details) or "no node is drained", at=at
    )
    before = [c for c in previous.conditions if c.type == CONDITION] if previous else []
    others = [c for c in status.conditions if c.type != CONDITION]
    generation = status.observed_generation or 0
    return status.model_copy(
        update={"nodes": nodes, "conditions": [*others, *with_transitions([condition], before, generation)]}
    )


def drain_events(previous: PairStatus | None, current: PairStatus) -> list[Event]:
    """DrainRefused when a refusal appears or changes, NodeDrained when a node becomes Drained,
    NodeUndrained when a drained node is back in service."""
    before = {node.name: node.maintenance for node in previous.nodes} if previous else {}
    events = []
    condition = find_condition(current.conditions, CONDITION)
    old = find_condition(previous.conditions, CONDITION) if previous else None
    if (
        condition is not None
        and condition.reason == "DrainRefused"
        and (old is None or (old.reason, old.message) != (condition.reason, condition.message))
    ):
        events.append(Event.warning("DrainRefused", condition.message))
    for node in current.nodes:
        was = before.get(node.name, "None")
        if node.maintenance == "Drained" and was != "Drained":
            events.append(Event.normal("NodeDrained", f"{node.name} is drained: its peer holds every VIP"))
        if node.maintenance == "None" and was in DRAINED_STATES:
            events.append(Event.normal("NodeUndrained", f"{node.name} is back in service"))
    return events
