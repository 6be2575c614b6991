"""Address plan of the network-namespace lab.

Every range is a documentation or benchmarking range (RFC 5737, RFC 2544), so lab traffic can never be
mistaken for, or routed to, a real network. The plan is pure data plus the pure overlap check that
`Lab.up()` runs against the root namespace's routing table before it creates anything.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Segment(StrEnum):
    """One of the three lab networks; each is a bridge in the switch namespace."""

    FRONT = "front"  # clients and VIPs; VRRP adverts travel here
    BACK = "back"  # LB nodes to backends
    MGMT = "mgmt"  # root namespace (where the operator runs) to the LB nodes' sshd


class Role(StrEnum):
    LB = "lb"
    BACKEND = "backend"
    CLIENT = "client"


NETWORKS: dict[Segment, ipaddress.IPv4Network] = {
    Segment.FRONT: ipaddress.IPv4Network("198.51.100.0/24"),
    Segment.BACK: ipaddress.IPv4Network("198.18.0.0/24"),
    Segment.MGMT: ipaddress.IPv4Network("203.0.113.0/24"),
}

# Reserved on the front network for keepalived-managed virtual addresses; nothing is configured with
# them statically.
VIP_PRIMARY = ipaddress.IPv4Address("198.51.100.10")
VIP_SECONDARY = ipaddress.IPv4Address("198.51.100.20")
VIPS = (VIP_PRIMARY, VIP_SECONDARY)

# Every kernel object and path the lab creates carries this prefix, so cleanup can find leftovers of a
# crashed run without any state file.
NAME_PREFIX = "lbp-"
SWITCH_NAMESPACE = "lbp-sw"
# The only lab object in the root namespace: its management-network leg.
ROOT_MGMT_LINK = "lbp-mgmt"
ROOT_MGMT_PEER = "root-mgmt"  # the other end, a port of the mgmt bridge inside the switch namespace
ROOT_MGMT_ADDRESS = ipaddress.IPv4Interface("203.0.113.1/24")
SSH_PORT = 22


@dataclass(frozen=True)
class Interface:
    """A host's interface: its name inside the host namespace and its static address."""

    name: str
    segment: Segment
    address: ipaddress.IPv4Interface


@dataclass(frozen=True)
class Host:
    name: str
    role: Role
    interfaces: tuple[Interface, ...]

    @property
    def namespace(self) -> str:
        return f"{NAME_PREFIX}{self.name}"

    def interface(self, segment: Segment) -> Interface:
        for candidate in self.interfaces:
            if candidate.segment is segment:
                return candidate
        raise KeyError(f"{self.name} has no interface on the {segment} network")

    def has_segment(self, segment: Segment) -> bool:
        return any(candidate.segment is segment for candidate in self.interfaces)

    def switch_port(self, segment: Segment) -> str:
        """Name of the bridge port (inside the switch namespace) that is this host's cable."""
        return f"{self.name}-{segment}"

    @property
    def mgmt_address(self) -> ipaddress.IPv4Address:
        return self.interface(Segment.MGMT).address.ip


def _interface(name: str, segment: Segment, host_number: int) -> Interface:
    network = NETWORKS[segment]
    return Interface(
        name=name,
        segment=segment,
        address=ipaddress.IPv4Interface(f"{network.network_address + host_number}/{network.prefixlen}"),
    )


def _lb_node(name: str, front: int, back: int, mgmt: int) -> Host:
    return Host(
        name=name,
        role=Role.LB,
        interfaces=(
            _interface("eth0", Segment.FRONT, front),
            _interface("eth1", Segment.BACK, back),
            _interface("mgmt0", Segment.MGMT, mgmt),
        ),
    )


HOSTS: dict[str, Host] = {
    host.name: host
    for host in (
        _lb_node("lb1", front=11, back=1, mgmt=11),
        _lb_node("lb2", front=12, back=2, mgmt=12),
        Host("be1", Role.BACKEND, (_interface("eth0", Segment.BACK, 11),)),
        Host("be2", Role.BACKEND, (_interface("eth0", Segment.BACK, 12),)),
        Host("client", Role.CLIENT, (_interface("eth0", Segment.FRONT, 100),)),
    )
}
LB_NODES = tuple(name for name, host in HOSTS.items() if host.role is Role.LB)
CLIENT = "client"
# Ports every backend serves HTTP on (the seed setup has backends on both).
BACKEND_PORTS = (80, 8080)


def describe_route(route: dict[str, Any]) -> str:
    """Render one entry of `ip -j route` roughly as `ip route` prints it, for error messages."""
    # ip omits "type" for plain unicast routes, as `ip route` does.
    words = [str(route["type"])] if "type" in route else []
    words.append(str(route.get("dst", "?")))
    for key in ("gateway", "dev", "table"):
        if key in route:
            words += ["via" if key == "gateway" else key, str(route[key])]
    return " ".join(words)


def find_overlapping_routes(routes: list[dict[str, Any]]) -> list[tuple[ipaddress.IPv4Network, str]]:
    """Return (lab network, route) for every non-default IPv4 route that overlaps a lab range.

    `routes` is the parsed output of `ip -4 -j route show table all`. A default route overlaps
    everything by definition and only matters if traffic is not delivered locally, which the lab's
    connected routes guarantee; any more specific route would steal or shadow lab traffic.
    """
    overlaps: list[tuple[ipaddress.IPv4Network, str]] = []
    for route in routes:
        destination = route.get("dst")
        if not isinstance(destination, str) or destination == "default":
            continue
        route_network = ipaddress.IPv4Network(destination, strict=False)
        overlaps.extend(
            (lab_network, describe_route(route))
            for lab_network in NETWORKS.values()
            if lab_network.overlaps(route_network)
        )
    return overlaps
