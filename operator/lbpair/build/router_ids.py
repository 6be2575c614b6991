"""Pure: VRRP virtual router ids that two pairs share on one network segment, a cross-object rule no CRD
validation can express (each object is validated alone).

keepalived tells the instances on a segment apart by virtual_router_id alone: two pairs using the same id
on the same network read each other's adverts (with multicast peering, or unicast through a shared node)
and log "wrong ip/vrid" at best, or hold one VIP on two nodes at worst. A segment is taken to be the
network of the pair's VIPs (both nodes' vrrpAddress lie in it, which the CRD enforces): interface names
are local to a machine and say nothing across pairs. The operator sees every pair it manages, so each one
is checked against the others' last builds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from lbpair.model.pair import LoadBalancerPair
from lbpair.model.status import Condition
from lbpair.render.model import DesiredState

CONDITION = "VirtualRouterIdConflict"


@dataclass(frozen=True)
class RouterIdClaim:
    """The virtual router ids a pair's keepalived runs and the networks it runs them on."""

    pair: str
    """namespace/name."""
    router_ids: frozenset[int]
    networks: frozenset[ipaddress.IPv4Network]

    @classmethod
    def of(cls, pair: LoadBalancerPair, state: DesiredState) -> RouterIdClaim:
        return cls(
            pair=f"{pair.metadata.namespace}/{pair.metadata.name}",
            router_ids=frozenset(
                instance.virtual_router_id for node in state.nodes for instance in node.keepalived.instances
            ),
            networks=frozenset(ipaddress.IPv4Interface(vip.address).network for vip in pair.spec.vips),
        )

    def shared_with(self, other: RouterIdClaim) -> list[str]:
        """What this pair shares with `other`, one phrase per router id; [] for nothing."""
        networks = sorted(
            str(mine) for mine in self.networks for theirs in other.networks if mine.overlaps(theirs)
        )
        if other.pair == self.pair or not networks:
            return []
        return [
            f"virtual_router_id {router_id} is also used by pair {other.pair} on {', '.join(networks)}"
            for router_id in sorted(self.router_ids & other.router_ids)
        ]


def router_id_condition(own: RouterIdClaim, others: Iterable[RouterIdClaim], *, at: str) -> Condition:
    """VirtualRouterIdConflict: True (reason VirtualRouterIdShared) naming every pair it shares an id with
    on an overlapping network, False (reason Unique) otherwise."""
    shared = [
        phrase for other in sorted(others, key=lambda claim: claim.pair) for phrase in own.shared_with(other)
    ]
    if not shared:
        return Condition.of(
            CONDITION, False, "Unique", "no other pair uses its virtual router ids here", at=at
        )
    message = "; ".join(shared) + " (keepalived tells pairs on a segment apart by virtual_router_id only)"
    return Condition.of(CONDITION, True, "VirtualRouterIdShared", message, at=at)
