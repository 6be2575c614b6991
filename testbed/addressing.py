"""Address plan of the network-namespace lab, and how the lab chooses it on the machine at hand.

The lab has three networks (front, back, mgmt). The samples, the docs and the golden tests are written
for one fixed, readable plan, DOCUMENTATION_PLAN (RFC 5737 and RFC 2544 ranges). A running lab cannot
simply use those ranges: on some machines the uplink, a resolver or the package registries sit inside
them, and the lab's management leg in the root namespace would then cut the machine off from them. So at
every start the lab chooses its ranges with `choose_plan()`, a pure function of what the machine routes,
which addresses its interfaces have, and which addresses it must keep reaching (gathered by
testbed/machine.py). Environment variables can pin each range (`pins_from_environment()`).

Hosts keep their host numbers in every plan (lb1 is .11 on the front network whatever that network is),
so `AddressPlan.translate_documents()` can move a sample written for DOCUMENTATION_PLAN onto the lab's
actual plan. A plan has one pair of LB nodes (lb1, lb2) unless it asks for more (`AddressPlan.pairs`, up
to MAX_PAIRS): pair P is lb(2P-1) and lb(2P) on the same three networks, with host numbers and VIPs of its
own (see `lb_interfaces()` and `pair_vip_host_numbers()`). Everything here is pure.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, cast


class Segment(StrEnum):
    """One of the three lab networks; each is a bridge in the switch namespace."""

    FRONT = "front"  # clients and VIPs; VRRP adverts travel here
    BACK = "back"  # LB nodes to backends
    MGMT = "mgmt"  # root namespace (where the operator runs) to the LB nodes' sshd


class Role(StrEnum):
    LB = "lb"
    BACKEND = "backend"
    CLIENT = "client"


# Every kernel object and path the lab creates carries this prefix, so cleanup can find leftovers of a
# crashed run without any state file.
NAME_PREFIX = "lbp-"
SWITCH_NAMESPACE = "lbp-sw"
# The only lab object in the root namespace: its management-network leg.
ROOT_MGMT_LINK = "lbp-mgmt"
ROOT_MGMT_PEER = "root-mgmt"  # the other end, a port of the mgmt bridge inside the switch namespace
SSH_PORT = 22
# Ports every backend serves HTTP on (the seed setup has backends on both).
BACKEND_PORTS = (80, 8080)

# Host numbers, the same in every plan. VIPs are reserved on the front network for keepalived; nothing
# is configured with them statically.
ROOT_MGMT_HOST_NUMBER = 1
# Pairs of LB nodes a lab can have: pair P's nodes are lb(2P-1) and lb(2P). The first four pairs keep the
# numbers the samples, docs and older tests were written with: LB node N (1-8) is .10+N on the front and
# mgmt networks and .N on the back network, and pair P's VIPs are front .20P-10 and .20P (.10-.80). Nodes
# from lb9 on are .100+N on all three networks (.109-.124) and pairs from 5 on have VIPs .200+2P-1 and
# .200+2P (.209-.224), which keeps them clear of the backends (back .11/.12), the client (front .100) and
# the root namespace (mgmt .1). Twelve pairs (24 LB nodes) leave room above the ten the scale bench runs.
MAX_PAIRS = 12
PAIRS_VARIABLE = "LBPAIR_LAB_PAIRS"
_FIRST_HIGH_NODE = 9  # LB nodes numbered from here on sit in the .100+N block
_FIRST_HIGH_PAIR = 5  # pairs numbered from here on have their VIPs in the .200+2P block

InterfaceLayout = tuple[tuple[str, Segment, int], ...]  # (name inside the host, segment, host number)


def lb_interfaces(number: int) -> InterfaceLayout:
    """LB node `number` (lb1 is 1): front (VRRP, VIPs) on eth0, backends on eth1, sshd on mgmt0."""
    if number >= _FIRST_HIGH_NODE:
        return (
            ("eth0", Segment.FRONT, 100 + number),
            ("eth1", Segment.BACK, 100 + number),
            ("mgmt0", Segment.MGMT, 100 + number),
        )
    return (
        ("eth0", Segment.FRONT, 10 + number),
        ("eth1", Segment.BACK, number),
        ("mgmt0", Segment.MGMT, 10 + number),
    )


def _check_pair(pair: int) -> None:
    if not 1 <= pair <= MAX_PAIRS:
        raise ValueError(f"pair {pair} does not exist: a lab has pairs 1 to {MAX_PAIRS}")


def pair_nodes(pair: int) -> tuple[str, str]:
    """The two LB nodes of pair `pair` (1-based): pair 1 is lb1 and lb2, pair 2 lb3 and lb4, ..."""
    _check_pair(pair)
    return (f"lb{2 * pair - 1}", f"lb{2 * pair}")


def pair_vip_host_numbers(pair: int) -> tuple[int, int]:
    """Front-network host numbers reserved for pair `pair`'s VIPs: .10 and .20 for pair 1, .30 and .40
    for pair 2, ..., .209 and .210 for pair 5, ..."""
    _check_pair(pair)
    if pair >= _FIRST_HIGH_PAIR:
        return (200 + 2 * pair - 1, 200 + 2 * pair)
    return (20 * pair - 10, 20 * pair)


def layout(pairs: int = 1) -> dict[str, tuple[Role, InterfaceLayout]]:
    """Every host of a lab with `pairs` pairs of LB nodes: name -> role and interfaces."""
    _check_pair(pairs)
    hosts: dict[str, tuple[Role, InterfaceLayout]] = {
        f"lb{number}": (Role.LB, lb_interfaces(number)) for number in range(1, 2 * pairs + 1)
    }
    hosts["be1"] = (Role.BACKEND, (("eth0", Segment.BACK, 11),))
    hosts["be2"] = (Role.BACKEND, (("eth0", Segment.BACK, 12),))
    hosts["client"] = (Role.CLIENT, (("eth0", Segment.FRONT, 100),))
    return hosts


# The default lab: one pair.
VIP_HOST_NUMBERS = pair_vip_host_numbers(1)
LAYOUT = layout(1)
HOST_NAMES = tuple(LAYOUT)
LB_NODES = pair_nodes(1)
CLIENT = "client"

# A lab network must hold every host number above; a /24 is what the plan is written for.
MAX_PREFIX_LENGTH = 24
MIN_PREFIX_LENGTH = 8

# The local control plane's service ClusterIP range (testbed/cluster.py): only allocated, never routed,
# but kept out of the lab's candidates so the two never look alike.
SERVICE_CLUSTER_NETWORK = ipaddress.IPv4Network("198.19.0.0/24")


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

    def address(self, segment: Segment) -> ipaddress.IPv4Address:
        return self.interface(segment).address.ip

    def has_segment(self, segment: Segment) -> bool:
        return any(candidate.segment is segment for candidate in self.interfaces)

    def switch_port(self, segment: Segment) -> str:
        """Name of the bridge port (inside the switch namespace) that is this host's cable."""
        return f"{self.name}-{segment}"

    @property
    def mgmt_address(self) -> ipaddress.IPv4Address:
        return self.address(Segment.MGMT)


# A dotted quad not glued to other digits, dots or name characters (so 1.2.3.4.5 and a1.2.3.4 are left
# alone); what follows it (":8080", "/svn/") is kept as it is.
_IPV4_IN_TEXT = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])")


@dataclass(frozen=True)
class AddressPlan:
    """One network per segment and the number of LB node pairs; every host address follows from its host
    number (layout())."""

    front: ipaddress.IPv4Network
    back: ipaddress.IPv4Network
    mgmt: ipaddress.IPv4Network
    pairs: int = 1

    def __post_init__(self) -> None:
        _check_pair(self.pairs)

    def network(self, segment: Segment) -> ipaddress.IPv4Network:
        return self.networks[segment]

    @property
    def networks(self) -> dict[Segment, ipaddress.IPv4Network]:
        return {Segment.FRONT: self.front, Segment.BACK: self.back, Segment.MGMT: self.mgmt}

    def address(self, segment: Segment, host_number: int) -> ipaddress.IPv4Interface:
        network = self.network(segment)
        return ipaddress.IPv4Interface(f"{network.network_address + host_number}/{network.prefixlen}")

    @property
    def vips(self) -> tuple[ipaddress.IPv4Address, ...]:
        """The first pair's VIPs (the samples' pair)."""
        return self.pair_vips(1)

    def pair_vips(self, pair: int) -> tuple[ipaddress.IPv4Address, ...]:
        self._check_has_pair(pair)
        return tuple(self.address(Segment.FRONT, number).ip for number in pair_vip_host_numbers(pair))

    def pair_nodes(self, pair: int) -> tuple[str, str]:
        self._check_has_pair(pair)
        return pair_nodes(pair)

    @property
    def lb_nodes(self) -> tuple[str, ...]:
        """Every LB node of every pair, pair by pair."""
        return tuple(node for pair in range(1, self.pairs + 1) for node in pair_nodes(pair))

    def _check_has_pair(self, pair: int) -> None:
        if not 1 <= pair <= self.pairs:
            raise ValueError(f"pair {pair} does not exist: this plan has {self.pairs} pair(s)")

    @property
    def vip_primary(self) -> ipaddress.IPv4Address:
        return self.vips[0]

    @property
    def root_mgmt_address(self) -> ipaddress.IPv4Interface:
        """The root namespace's address on the management network (on ROOT_MGMT_LINK)."""
        return self.address(Segment.MGMT, ROOT_MGMT_HOST_NUMBER)

    @cached_property
    def hosts(self) -> dict[str, Host]:
        return {
            name: Host(
                name,
                role,
                tuple(
                    Interface(ifname, segment, self.address(segment, number))
                    for ifname, segment, number in ifs
                ),
            )
            for name, (role, ifs) in layout(self.pairs).items()
        }

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def as_dict(self) -> dict[str, str | int]:
        recorded: dict[str, str | int] = {
            str(segment): str(network) for segment, network in self.networks.items()
        }
        recorded["pairs"] = self.pairs
        return recorded

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> AddressPlan:
        networks = {str(segment): ipaddress.IPv4Network(recorded[segment]) for segment in Segment}
        return cls(**networks, pairs=int(recorded.get("pairs", 1)))

    # -- moving samples onto this plan --

    def translate_address(self, address: ipaddress.IPv4Address | str) -> ipaddress.IPv4Address:
        """An address of a DOCUMENTATION_PLAN network -> the same host number in this plan's network of
        that segment; any other address is returned unchanged."""
        address = ipaddress.IPv4Address(address)
        for segment, documented in DOCUMENTATION_PLAN.networks.items():
            if address in documented:
                return self.network(segment).network_address + (
                    int(address) - int(documented.network_address)
                )
        return address

    def translate_text(self, text: str) -> str:
        """Every IPv4 address in `text` translated. A string that is exactly an address with the prefix
        length of its documentation network ("198.51.100.10/24") gets this plan's prefix length."""
        whole = _documented_interface(text)
        if whole is not None:
            segment, interface = whole
            return f"{self.translate_address(interface.ip)}/{self.network(segment).prefixlen}"
        return _IPV4_IN_TEXT.sub(lambda match: self._translate_match(match.group(0)), text)

    def _translate_match(self, text: str) -> str:
        try:
            return str(self.translate_address(text))
        except ipaddress.AddressValueError:  # 999.1.2.3 and the like: not an address, leave it
            return text

    def translate_documents(self, documents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of Kubernetes documents written for DOCUMENTATION_PLAN (the samples), with every
        address in every string (keys included) moved onto this plan."""
        return [cast(dict[str, Any], self._translate_value(document)) for document in documents]

    def _translate_value(self, value: object) -> object:
        if isinstance(value, str):
            return self.translate_text(value)
        if isinstance(value, dict):
            return {self._translate_value(key): self._translate_value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._translate_value(item) for item in value]
        return value


def _documented_interface(text: str) -> tuple[Segment, ipaddress.IPv4Interface] | None:
    if "/" not in text:
        return None
    try:
        interface = ipaddress.IPv4Interface(text)
    except ValueError:
        return None
    for segment, documented in DOCUMENTATION_PLAN.networks.items():
        if interface.ip in documented and interface.network.prefixlen == documented.prefixlen:
            return segment, interface
    return None


# The plan the samples, docs and golden tests are written for, and the lab's first choice.
DOCUMENTATION_PLAN = AddressPlan(
    front=ipaddress.IPv4Network("198.51.100.0/24"),
    back=ipaddress.IPv4Network("198.18.0.0/24"),
    mgmt=ipaddress.IPv4Network("203.0.113.0/24"),
)


# --- choosing the plan -----------------------------------------------------------------------------


class AddressPlanError(ValueError):
    """No safe plan exists (or a pinned range is unsafe); the message names what overlaps what."""


@dataclass(frozen=True)
class InterfaceAddress:
    """An address of one of the machine's own (root-namespace) interfaces."""

    interface: str
    address: ipaddress.IPv4Interface

    def __str__(self) -> str:
        return f"address {self.address} of {self.interface}"


@dataclass(frozen=True)
class Protected:
    """Addresses the machine must keep reaching, and why (e.g. "resolver in /etc/resolv.conf")."""

    network: ipaddress.IPv4Network
    source: str

    def __str__(self) -> str:
        where = self.network.network_address if self.network.prefixlen == 32 else self.network  # noqa: PLR2004
        return f"protected address {where} ({self.source})"


DOCUMENTATION_RANGES = tuple(
    ipaddress.IPv4Network(cidr) for cidr in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
BENCHMARKING_RANGE = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544
SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598, last resort
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def candidate_networks() -> Iterator[ipaddress.IPv4Network]:
    """Every /24 the lab may choose, in order of preference: documentation ranges (RFC 5737), the
    benchmarking range (RFC 2544) without the control plane's ClusterIP range, then the shared address
    space (RFC 6598). None of these is ever assigned to a public host."""
    yield from DOCUMENTATION_RANGES
    for network in BENCHMARKING_RANGE.subnets(new_prefix=MAX_PREFIX_LENGTH):
        if not network.overlaps(SERVICE_CLUSTER_NETWORK):
            yield network
    yield from SHARED_ADDRESS_SPACE.subnets(new_prefix=MAX_PREFIX_LENGTH)


def describe_route(route: Mapping[str, Any]) -> str:
    """Render one entry of `ip -j route` roughly as `ip route` prints it, for messages."""
    # ip omits "type" for plain unicast routes, as `ip route` does.
    words = [str(route["type"])] if "type" in route else []
    words.append(str(route.get("dst", "?")))
    for key in ("gateway", "dev", "table"):
        if key in route:
            words += ["via" if key == "gateway" else key, str(route[key])]
    return " ".join(words)


def _route_network(route: Mapping[str, Any]) -> ipaddress.IPv4Network | None:
    """The destination of a non-default IPv4 route. A default route overlaps everything by definition
    and only matters if traffic is not delivered locally, which the lab's connected routes guarantee;
    any more specific route would steal or shadow lab traffic (or be shadowed by it)."""
    destination = route.get("dst")
    if not isinstance(destination, str) or destination == "default":
        return None
    network = ipaddress.IPv4Network(destination, strict=False)
    return None if network.prefixlen == 0 else network


Blocker = tuple[ipaddress.IPv4Network, str]


def blockers(
    routes: Iterable[Mapping[str, Any]],
    interface_addresses: Iterable[InterfaceAddress],
    protected: Iterable[Protected],
) -> list[Blocker]:
    """Every network a lab range must not overlap, each with a readable phrase naming it.

    `routes` is the parsed output of `ip -4 -j route show table all` (every table, local included).
    An interface address blocks its whole subnet (an address added with noprefixroute has no route, and
    the machine still treats that subnet as on-link)."""
    found = [
        (route_network, f"root route '{describe_route(route)}'")
        for route in routes
        if (route_network := _route_network(route)) is not None
    ]
    found += [(local.address.network, str(local)) for local in interface_addresses]
    found += [(entry.network, str(entry)) for entry in protected]
    return found


def _overlapping(network: ipaddress.IPv4Network, blocked: Iterable[Blocker]) -> list[str]:
    return [phrase for blocked_network, phrase in blocked if network.overlaps(blocked_network)]


def conflicts(
    network: ipaddress.IPv4Network,
    routes: Iterable[Mapping[str, Any]],
    interface_addresses: Iterable[InterfaceAddress],
    protected: Iterable[Protected],
) -> list[str]:
    """What `network` would collide with on the machine (see blockers()), each as a readable phrase;
    empty when it is safe."""
    return _overlapping(network, blockers(routes, interface_addresses, protected))


def pin_variable(segment: Segment) -> str:
    """The environment variable that pins `segment`'s range, e.g. LBPAIR_LAB_MGMT_CIDR."""
    return f"LBPAIR_LAB_{str(segment).upper()}_CIDR"


def _never_a_lab_range(network: ipaddress.IPv4Network) -> bool:
    special = network.is_loopback or network.is_link_local or network.is_multicast or network.is_reserved
    return network.is_global or special or network.overlaps(THIS_NETWORK)


def pins_from_environment(environment: Mapping[str, str]) -> dict[Segment, ipaddress.IPv4Network]:
    """The ranges pinned by LBPAIR_LAB_{FRONT,BACK,MGMT}_CIDR (unset or empty: the lab chooses)."""
    pins: dict[Segment, ipaddress.IPv4Network] = {}
    for segment in Segment:
        variable = pin_variable(segment)
        value = environment.get(variable, "").strip()
        if not value:
            continue
        try:
            network = ipaddress.IPv4Network(value)
        except ValueError as error:
            raise AddressPlanError(
                f"{variable}={value!r} is not an IPv4 network in CIDR form ({error})"
            ) from None
        if not MIN_PREFIX_LENGTH <= network.prefixlen <= MAX_PREFIX_LENGTH:
            raise AddressPlanError(
                f"{variable}={value}: the {segment} network needs a prefix length from "
                f"/{MIN_PREFIX_LENGTH} to /{MAX_PREFIX_LENGTH} (it holds host numbers up to .100)"
            )
        if _never_a_lab_range(network):
            raise AddressPlanError(
                f"{variable}={value}: pin a private, documentation or benchmarking range, never a public, "
                "loopback, link-local or multicast one"
            )
        pins[segment] = network
    return pins


def pairs_from_environment(environment: Mapping[str, str]) -> int:
    """How many LB node pairs LBPAIR_LAB_PAIRS asks for (unset or empty: 1)."""
    value = environment.get(PAIRS_VARIABLE, "").strip()
    if not value:
        return 1
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAIRS:
        raise AddressPlanError(f"{PAIRS_VARIABLE}={value!r}: the lab has 1 to {MAX_PAIRS} pairs of LB nodes")
    return int(value)


def choose_plan(
    routes: Sequence[Mapping[str, Any]],
    interface_addresses: Sequence[InterfaceAddress],
    protected: Sequence[Protected],
    pins: Mapping[Segment, ipaddress.IPv4Network] | None = None,
) -> AddressPlan:
    """The lab's ranges on a machine with these routes, interface addresses and protected addresses.

    Pinned segments get their pin, or the lab is refused if the pin overlaps anything. Every other
    segment gets its DOCUMENTATION_PLAN network when that is free, else the first free network of
    candidate_networks(), taken in segment order (front, back, mgmt): the same machine always gets the
    same plan. No two segments share a range. Raises AddressPlanError naming every overlap.
    """
    pins = dict(pins or {})
    blocked = blockers(routes, interface_addresses, protected)
    problems: list[str] = []
    for segment, network in pins.items():
        found = _overlapping(network, blocked)
        found += [
            f"the {other} network {other_network} ({pin_variable(other)})"
            for other, other_network in pins.items()
            if other != segment and network.overlaps(other_network)
        ]
        if found:
            pinned = f"the {segment} network {network} (pinned by {pin_variable(segment)})"
            problems.append(f"{pinned} overlaps {'; '.join(found)}")
    if problems:
        raise AddressPlanError(
            "; ".join(problems) + ". Pin a free range or unset the variable to let the lab choose"
        )

    chosen = dict(pins)

    def free(network: ipaddress.IPv4Network) -> bool:
        return not any(network.overlaps(taken) for taken in chosen.values()) and not _overlapping(
            network, blocked
        )

    unpinned = [segment for segment in Segment if segment not in pins]
    for segment in unpinned:
        documented = DOCUMENTATION_PLAN.network(segment)
        if free(documented):
            chosen[segment] = documented
    for segment in unpinned:
        if segment in chosen:
            continue
        first_free = next((candidate for candidate in candidate_networks() if free(candidate)), None)
        if first_free is None:
            raise AddressPlanError(
                f"no free range for the {segment} network: every candidate (RFC 5737, {BENCHMARKING_RANGE}, "
                f"{SHARED_ADDRESS_SPACE}) overlaps a route, an interface address, a protected address or "
                f"another lab network; pin one with {pin_variable(segment)}"
            )
        chosen[segment] = first_free
    return AddressPlan(front=chosen[Segment.FRONT], back=chosen[Segment.BACK], mgmt=chosen[Segment.MGMT])


def explain_plan(
    plan: AddressPlan,
    routes: Sequence[Mapping[str, Any]],
    interface_addresses: Sequence[InterfaceAddress],
    protected: Sequence[Protected],
    pins: Mapping[Segment, ipaddress.IPv4Network] | None = None,
) -> list[str]:
    """One line per segment: its network and why it is that one (for `lab up` and `lab plan`)."""
    lines = []
    for segment, network in plan.networks.items():
        documented = DOCUMENTATION_PLAN.network(segment)
        if pins and segment in pins:
            why = f"pinned by {pin_variable(segment)}"
        elif network == documented:
            why = "documentation default"
        else:
            found = conflicts(documented, routes, interface_addresses, protected)
            taken = [
                f"the {other} network"
                for other, other_network in plan.networks.items()
                if other != segment and documented.overlaps(other_network)
            ]
            why = f"{documented} is not free: {'; '.join(found + taken)}"
        lines.append(f"{segment:<5} {network!s:<18} {why}")
    return lines
