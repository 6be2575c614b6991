"""Pure: node observations -> the pair's health as users see it (VIP holders, conditions).

Nothing here is assumed from what was pushed: the VIP holder is whoever has the address on an
interface right now (`ip -o -4 addr`), the only source that also shows a VIP left behind by a crash.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lbpair.model.status import Condition
from lbpair.nodes.observe import NodeObservation


@dataclass(frozen=True)
class NodeReport:
    """One node after a pass: what was observed (None if unreachable) and what the pass did to it."""

    name: str
    observation: NodeObservation | None
    error: str = ""
    applied_hash: str = ""
    programmed: bool = False

    @property
    def reachable(self) -> bool:
        return self.observation is not None

    @property
    def healthy(self) -> bool:
        observation = self.observation
        return (
            observation is not None
            and observation.running("nginx")
            and observation.running("keepalived")
            and not any(instance.state == "FAULT" for instance in observation.vrrp)
        )


@dataclass(frozen=True)
class RolloutProblem:
    """Why the desired config is not live: `reason` says whether a node refused it (Rejected, RolledBack,
    RestoreFailed: it will not go live as it is) or the rollout did not get that far (NotApplied)."""

    reason: str
    message: str


@dataclass(frozen=True)
class PairHealth:
    holders: dict[str, list[str]]  # VIP -> nodes holding it, sorted
    nodes: tuple[NodeReport, ...]
    conditions: tuple[Condition, ...] = field(default=())

    @property
    def healthy_nodes(self) -> str:
        return f"{sum(node.healthy for node in self.nodes)}/{len(self.nodes)}"

    @property
    def holder_summary(self) -> str:
        """Printer-column form: `198.51.100.10=lb1`, `...=lb1+lb2` in split brain, `...=none` in an outage."""
        return ",".join(f"{vip}={'+'.join(nodes) or 'none'}" for vip, nodes in self.holders.items())


def observe_holders(vips: Sequence[str], nodes: Sequence[NodeReport]) -> dict[str, list[str]]:
    holders: dict[str, list[str]] = {}
    for vip in vips:
        address = ipaddress.IPv4Address(vip)
        holders[vip] = sorted(
            node.name for node in nodes if node.observation is not None and node.observation.holds(address)
        )
    return holders


def assess_pair(
    vips: Sequence[str],
    nodes: Sequence[NodeReport],
    problem: RolloutProblem | None = None,
    *,
    at: str,
    leaving: Mapping[str, str] | None = None,
) -> PairHealth:
    """Conditions in Kubernetes style, as of `at`: Ready (traffic is served), Programmed, Degraded,
    SplitBrain. `leaving` are nodes that left the spec and could not be cleaned up yet, with why."""
    leaving = leaving or {}
    holders = observe_holders(vips, nodes)
    by_name = {node.name: node for node in nodes}
    split = {vip: names for vip, names in holders.items() if len(names) > 1}
    orphaned = [vip for vip, names in holders.items() if not names]
    serving_without_nginx = [
        vip
        for vip, names in holders.items()
        for name in names
        if (observation := by_name[name].observation) is not None and not observation.running("nginx")
    ]
    unreachable = [node.name for node in nodes if not node.reachable]
    unhealthy = [node.name for node in nodes if node.reachable and not node.healthy]
    unprogrammed = [node for node in nodes if not node.programmed]

    conditions = [
        _ready(
            split=split,
            orphaned=orphaned,
            serving_without_nginx=serving_without_nginx,
            holders=holders,
            unreachable=unreachable,
            at=at,
        ),
        Condition.of(
            "Programmed",
            not unprogrammed and problem is None,
            problem.reason if problem else ("NotApplied" if unprogrammed else "Applied"),
            problem.message
            if problem
            else "; ".join(f"{node.name}: {node.error or 'config not applied'}" for node in unprogrammed)
            or "desired config is live on every node",
            at=at,
        ),
        Condition.of(
            "Degraded",
            bool(unreachable or unhealthy or leaving),
            "NodeUnreachable"
            if unreachable
            else (
                "NodeUnhealthy" if unhealthy else ("FormerNodeNotCleaned" if leaving else "AllNodesHealthy")
            ),
            _degraded_message(nodes, unreachable, unhealthy, leaving),
            at=at,
        ),
        Condition.of(
            "SplitBrain",
            bool(split),
            "VIPOnSeveralNodes" if split else "SingleHolder",
            "; ".join(f"{vip} held by {' and '.join(names)}" for vip, names in split.items())
            or "every VIP is held by at most one node",
            at=at,
        ),
    ]
    return PairHealth(holders=holders, nodes=tuple(nodes), conditions=tuple(conditions))


def _ready(
    *,
    split: Mapping[str, list[str]],
    orphaned: list[str],
    serving_without_nginx: list[str],
    holders: Mapping[str, list[str]],
    unreachable: list[str],
    at: str,
) -> Condition:
    if split:
        return Condition.of(
            "Ready", False, "SplitBrain", f"VIP on more than one node: {', '.join(split)}", at=at
        )
    if orphaned and unreachable:
        # An unreachable node may hold it: what is known is only that no reachable node does.
        detail = f"no reachable node holds {', '.join(orphaned)}; unreachable: {', '.join(unreachable)}"
        return Condition.of("Ready", False, "HolderUnknown", detail, at=at)
    if orphaned:
        return Condition.of("Ready", False, "VIPNotHeld", f"no node holds {', '.join(orphaned)}", at=at)
    if serving_without_nginx:
        detail = f"nginx is down where {serving_without_nginx[0]} is held"
        return Condition.of("Ready", False, "NginxDown", detail, at=at)
    summary = ", ".join(f"{vip} on {names[0]}" for vip, names in holders.items())
    return Condition.of("Ready", True, "Serving", summary, at=at)


def _degraded_message(
    nodes: Sequence[NodeReport], unreachable: list[str], unhealthy: list[str], leaving: Mapping[str, str]
) -> str:
    parts = [f"{node.name} unreachable: {node.error}" for node in nodes if node.name in unreachable]
    for node in nodes:
        if node.name in unhealthy and node.observation is not None:
            down = [service for service in ("nginx", "keepalived") if not node.observation.running(service)]
            faults = [i.name for i in node.observation.vrrp if i.state == "FAULT"]
            detail = ", ".join(
                [f"{service} not running" for service in down] + [f"{i} FAULT" for i in faults]
            )
            parts.append(f"{node.name}: {detail}")
    parts += [f"{node} left the spec and is not cleaned up yet: {why}" for node, why in leaving.items()]
    return "; ".join(parts) or "both nodes reachable, nginx and keepalived running"
