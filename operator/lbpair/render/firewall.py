"""The render model of the nodes' firewall (spec.firewall): what nftables.conf.j2 loops over, in nftables'
own terms (see lbpair.render.model for the rules). Every address here is an allow-listed IPv4 address or
network, normalised by the build."""

from __future__ import annotations

from dataclasses import dataclass

FIREWALL_TABLE = "lbpair"
"""`table inet lbpair`: the node agent deletes it by this name when the firewall is turned off."""


@dataclass(frozen=True)
class VrrpAdmission:
    """VRRP adverts admitted on `interface` from the peer's `source` to `destination` (the multicast group,
    or this node's own address with unicast peering)."""

    interface: str
    source: str
    destination: str


@dataclass(frozen=True)
class FirewallRuleset:
    """One node's inbound rules: everything not admitted here is dropped (and counted)."""

    path: str
    table: str
    vrrp: list[VrrpAdmission]
    ssh_port: int
    ssh_sources: list[str]
    """Networks SSH is admitted from; 0.0.0.0/0 when spec.firewall names none. Kept in the named set
    `ssh_sources`, where the node agent looks up its own SSH client before it keeps a new ruleset."""
    listener_ports: list[int]
    vips: list[str]
    """The VIPs (addresses without prefix length) the listener ports are admitted on."""
    listener_sources: list[str] | None
    """Networks clients may come from; None: anywhere."""
