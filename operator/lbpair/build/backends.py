"""Where a pair's attached objects may send traffic: backend host names resolved by the operator, and
every address checked against the pair's boundaries (spec.backends).

nginx resolves a host name in `server` or `proxy_pass` once, when it loads the configuration, and a name
that does not resolve fails `nginx -t` for the whole pair. Resolving here instead turns that into a
problem of the one object that uses the name, and lets each resolved address be checked like a literal.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from lbpair.build.resources import NameResolver
from lbpair.model.pair import LoadBalancerPair

# Refused unless the pair's spec.backends.allowedCIDRs has an entry inside the range.
GUARDED_RANGES = (
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local"),
    (ipaddress.IPv4Network("0.0.0.0/8"), "unspecified (this host on this network)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast"),
    (ipaddress.IPv4Network("255.255.255.255/32"), "broadcast"),
)


class BackendRefused(ValueError):
    """A backend host that does not resolve, or an address the pair does not allow."""


@dataclass(frozen=True)
class Backends:
    """The boundaries of one pair, for one build."""

    pair: LoadBalancerPair
    resolve: NameResolver

    def addresses(self, host: str) -> list[str]:
        """The allowed IPv4 addresses `host` (an address or a DNS name) stands for; BackendRefused if it
        does not resolve or any of its addresses is not allowed (a name is used whole or not at all)."""
        if _is_address(host):
            addresses = [host]
        else:
            addresses = list(self.resolve(host))
            if not addresses:
                raise BackendRefused(f"{host} does not resolve (to an IPv4 address)")
        for address in addresses:
            refusal = self._refusal(ipaddress.IPv4Address(address))
            if refusal:
                resolved = "" if address == host else f"{host} resolves to "
                raise BackendRefused(f"{resolved}{address}, which {refusal}")
        return addresses

    def _refusal(self, address: ipaddress.IPv4Address) -> str | None:
        own = self._own_addresses.get(address)
        if own:
            return f"is {own} of the pair itself: refused"
        allowed = self._allowed_networks
        for network, what in GUARDED_RANGES:
            if address in network:
                if any(address in entry and entry.subnet_of(network) for entry in allowed or ()):
                    return None
                return (
                    f"is {what} ({network}): refused unless the pair's spec.backends.allowedCIDRs lists "
                    "a network inside that range"
                )
        if allowed is not None and not any(address in entry for entry in allowed):
            return "is outside the pair's spec.backends.allowedCIDRs"
        return None

    @functools.cached_property
    def _allowed_networks(self) -> list[ipaddress.IPv4Network] | None:
        cidrs = self.pair.spec.backends.allowed_cidrs
        return None if cidrs is None else [ipaddress.IPv4Network(cidr, strict=False) for cidr in cidrs]

    @functools.cached_property
    def _own_addresses(self) -> dict[ipaddress.IPv4Address, str]:
        spec = self.pair.spec
        own = {ipaddress.IPv4Interface(vip.address).ip: "a VIP" for vip in spec.vips}
        for node in spec.nodes:
            own[ipaddress.IPv4Address(node.vrrp_address)] = f"node {node.name}'s vrrpAddress"
            node_addresses = [node.address] if _is_address(node.address) else self.resolve(node.address)
            for address in node_addresses:
                own[ipaddress.IPv4Address(address)] = f"node {node.name}'s address"
        return own


def _is_address(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
