"""spec.firewall → each node's nftables ruleset (lbpair.render.firewall), or None when it is off."""

from __future__ import annotations

import ipaddress

from lbpair.model.pair import PairNode, PairSpec
from lbpair.render.firewall import FIREWALL_TABLE, FirewallRuleset, VrrpAdmission

VRRP_MULTICAST_GROUP = "224.0.0.18"  # keepalived's default mcast_dst_ip; the config sets no other
ANYWHERE = "0.0.0.0/0"


def firewall(spec: PairSpec, node: PairNode) -> FirewallRuleset | None:
    settings = spec.firewall
    if not settings.enabled:
        return None
    peer = next(other for other in spec.nodes if other.name != node.name)
    unicast = spec.vrrp.peering == "Unicast"
    return FirewallRuleset(
        path=spec.node_profile.firewall_ruleset_path,
        table=FIREWALL_TABLE,
        vrrp=[
            VrrpAdmission(
                interface=node.interface,
                source=peer.vrrp_address,
                destination=node.vrrp_address if unicast else VRRP_MULTICAST_GROUP,
            )
        ],
        ssh_port=node.ssh_port,
        ssh_sources=_networks(settings.ssh_source_cidrs) or [ANYWHERE],
        listener_ports=sorted(listener.port for listener in spec.listeners),
        vips=sorted({vip.address.partition("/")[0] for vip in spec.vips}, key=ipaddress.IPv4Address),
        listener_sources=_networks(settings.listener_source_cidrs) or None,
    )


def _networks(cidrs: list[str] | None) -> list[str]:
    """The networks with host bits cleared and overlaps merged, sorted: nft refuses 10.0.0.5/24 and
    overlapping intervals in a set."""
    networks = [ipaddress.IPv4Network(cidr, strict=False) for cidr in cidrs or []]
    return [str(network) for network in ipaddress.collapse_addresses(networks)]
