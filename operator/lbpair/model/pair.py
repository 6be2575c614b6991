"""LoadBalancerPair: two nodes running nginx + keepalived, their VIPs, VRRP and nginx-wide settings."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from lbpair.model.base import ApiModel, CelRule, UniqueItems, cel_config
from lbpair.model.common import ObjectMeta, Port, SecretKeyRef
from lbpair.model.nginx import NginxSettings
from lbpair.model.node_profile import NodeProfile
from lbpair.model.patterns import (
    DnsLabel,
    Host,
    InterfaceName,
    IPv4Address,
    IPv4Cidr,
    LabelKey,
    LabelValue,
    NginxSize,
    SshHostKey,
    UnixUser,
)
from lbpair.model.vrrp import HealthCheck, Vrrp

Priority = Annotated[int, Field(ge=1, le=254)]
KEY_TYPE_LENGTH_BYTES = 4


def _well_formed_host_key(line: str) -> str:
    """The pattern admits any base64-looking text; the key data must also decode and name the same key
    type as the line, as OpenSSH's wire format does (a 4-byte length, then the type)."""
    key_type, data = line.split(" ")
    try:
        blob = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise ValueError("the key data is not valid base64 (cut short?)") from None
    length = int.from_bytes(blob[:KEY_TYPE_LENGTH_BYTES], "big")
    if blob[KEY_TYPE_LENGTH_BYTES : KEY_TYPE_LENGTH_BYTES + length] != key_type.encode():
        raise ValueError(f"the key data is not a {key_type} key")
    return line


HostKey = Annotated[SshHostKey, AfterValidator(_well_formed_host_key)]


class PairNode(ApiModel):
    """One of the two load-balancer machines."""

    name: DnsLabel
    """Node name; also keepalived's router_id on that node."""
    address: Host
    """Address (IPv4 or DNS name) the operator connects to over SSH."""
    ssh_port: Port = 22
    """SSH port."""
    host_key: HostKey
    """The node's pinned SSH host public key in OpenSSH form ("ssh-ed25519 AAAA..."); any other key is
    refused."""
    interface: InterfaceName
    """Network interface that carries VRRP and the VIPs (the seed's `interface em1`)."""
    vrrp_address: IPv4Address
    """This node's own address on `interface`: the VRRP source (unicast_src_ip / mcast_src_ip) and the peer's
    unicast_peer."""
    priority: Priority
    """VRRP priority (1-254). The node with the higher priority holds the VIPs in ActivePassive mode; in
    ActiveActive mode each node uses the higher of the two priorities for the VIPs it prefers."""
    maintenance: Literal["None", "Drain"] = "None"
    """Drain: the node demotes itself (keepalived FAULT through a tracked file) so that the peer takes every
    VIP, whatever the preempt policy; it stays in the config rollout. Once status.nodes[].maintenance says
    Drained it is safe to stop nginx or reboot it. Refused (condition Maintenance, event DrainRefused) while
    the peer is not healthy or is itself drained. None: back in service per the preempt policy."""


class SshSettings(ApiModel):
    """How the operator logs in to the nodes."""

    user: UnixUser = "root"
    """Login user on both nodes."""
    private_key_secret_ref: SecretKeyRef
    """Secret (in the pair's namespace) holding the SSH private key."""
    sudo: bool = False
    """Run privileged commands through `sudo -n` (for a non-root user)."""


class Vip(ApiModel):
    """A floating address held by exactly one node at a time."""

    address: IPv4Cidr
    """The VIP with the prefix length of the node network, e.g. 198.51.100.10/24; both nodes' vrrpAddress
    must lie in that network."""
    preferred_node: DnsLabel | None = None
    """ActiveActive only (and required there): the node that holds this VIP while both are healthy."""


SELECTOR_ONLY_WITH_FROM_SELECTOR = CelRule(
    rule="(self.from == 'Selector') == has(self.selector)",
    message="selector is required when from is Selector, and allowed only then",
    field_path=".selector",
)


class AllowedNamespaces(ApiModel):
    """Which namespaces may attach Upstreams and VirtualHosts to this pair (like Gateway API
    allowedRoutes)."""

    model_config = cel_config(SELECTOR_ONLY_WITH_FROM_SELECTOR)

    from_: Literal["Same", "All", "Selector"] = Field(default="Same", alias="from")
    """Same: only the pair's namespace. All: every namespace. Selector: namespaces matching selector."""
    selector: NamespaceSelector | None = None
    """Label selector for namespaces (with from: Selector)."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        SELECTOR_ONLY_WITH_FROM_SELECTOR.enforce((self.from_ == "Selector") == (self.selector is not None))
        return self


class NamespaceSelector(ApiModel):
    """Namespaces whose labels include all of matchLabels."""

    match_labels: Annotated[dict[LabelKey, LabelValue], Field(min_length=1, max_length=16)]
    """Labels a namespace must carry."""


class Backends(ApiModel):
    """Where attached Upstreams and URL locations may send traffic.

    Refused unless listed: loopback (127.0.0.0/8), link-local (169.254.0.0/16, e.g. a cloud metadata
    service), 0.0.0.0/8, multicast (224.0.0.0/4) and 255.255.255.255. Always refused: the pair's own node
    addresses, vrrpAddresses and VIPs (a loop, or the nodes' own services)."""

    allowed_cidrs: Annotated[list[IPv4Cidr], Field(min_length=1, max_length=64), UniqueItems()] | None = (
        Field(default=None, alias="allowedCIDRs")
    )
    """When set, every backend address must lie in one of these networks. A refused-unless-listed range
    is allowed only by an entry inside it: 127.0.0.0/8 or 127.0.0.1/32 allows loopback, but 169.0.0.0/8
    does not open 169.254.0.0/16. Unset: every address but the refused ones."""


class Limits(ApiModel):
    """Upper bounds on the sizes attached VirtualHosts may set, so that one tenant cannot take the nodes'
    memory or disk. The defaults leave room for ordinary tuning: nginx's own defaults are one 4k header
    buffer, 8 x 4k response buffers and a 1024m temporary file per proxied request."""

    max_buffer_size: NginxSize = "1m"
    """Largest proxy.bufferSize and proxy.buffers.size: one buffer, held per proxied request. 1m fits any
    sane response header (large cookies or tokens need tens of kilobytes)."""
    max_buffers_total: NginxSize = "4m"
    """Largest proxy.buffers (number x size), proxy.busyBuffersSize and proxy.tempFileWriteSize: memory
    per proxied request, so 1,000 concurrent requests hold at most 4 GB; larger responses spill to a
    temporary file."""
    max_temp_file_size: NginxSize = "1024m"
    """Largest proxy.maxTempFileSize (disk per proxied request); nginx's default."""


class PairListener(ApiModel):
    """A port the pair's nginx listens on (on every address, so it follows the VIPs) and its protocol."""

    port: Port
    """Port; neither a node's sshPort nor nodeProfile.nginxStatusPort."""
    protocol: Literal["HTTP", "HTTPS"]
    """HTTPS: TLS on this port, with each VirtualHost's own certificate; a name no VirtualHost declares gets
    no certificate."""


SourceCidrs = Annotated[list[IPv4Cidr], Field(min_length=1, max_length=64), UniqueItems()]
FIREWALL_SOURCES_ONLY_WHEN_ENABLED = CelRule(
    rule="self.enabled || (!has(self.sshSourceCIDRs) && !has(self.listenerSourceCIDRs))",
    message="sshSourceCIDRs and listenerSourceCIDRs are only used with enabled: true",
    field_path=".enabled",
)


class Firewall(ApiModel):
    """nftables rules on both nodes, in a table of their own (`table inet lbpair`; no other table is
    touched). Inbound, they admit only: loopback, replies to connections the node made or accepted,
    ICMP echo and IPv6 neighbour discovery, VRRP (IP protocol 112) from the peer's vrrpAddress to the
    address VRRP uses, SSH on the node's sshPort, and the pair's listener ports on its VIPs; the rest is
    dropped. A ruleset that would not admit the operator's own SSH connection is rolled back at once."""

    model_config = cel_config(FIREWALL_SOURCES_ONLY_WHEN_ENABLED)

    enabled: bool = False
    """true: render, validate (`nft -c`) and load the ruleset on both nodes; false: remove the table."""
    ssh_source_cidrs: SourceCidrs | None = Field(default=None, alias="sshSourceCIDRs")
    """Networks SSH is admitted from (the operator's and the administrators'). Unset: SSH from anywhere."""
    listener_source_cidrs: SourceCidrs | None = Field(default=None, alias="listenerSourceCIDRs")
    """Networks clients may reach the listeners from. Unset: from anywhere."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        FIREWALL_SOURCES_ONLY_WHEN_ENABLED.enforce(
            self.enabled or (self.ssh_source_cidrs is None and self.listener_source_cidrs is None)
        )
        return self


LISTENERS_AVOID_NODE_PORTS = CelRule(
    rule="self.listeners.all(l, l.port != self.nodeProfile.nginxStatusPort && "
    "self.nodes.all(n, n.sshPort != l.port))",
    message="listeners may not use a node's sshPort or nodeProfile.nginxStatusPort",
    field_path=".listeners",
)


NODE_PRIORITIES_DIFFER = CelRule(
    rule="size(self.nodes) != 2 || self.nodes[0].priority != self.nodes[1].priority",
    message="the two nodes must have different priorities",
    field_path=".nodes",
)
NODE_ADDRESSES_DIFFER = CelRule(
    rule="size(self.nodes) != 2 || self.nodes[0].vrrpAddress != self.nodes[1].vrrpAddress",
    message="the two nodes must have different vrrpAddress values",
    field_path=".nodes",
)
PREFERRED_NODE_ONLY_ACTIVE_ACTIVE = CelRule(
    rule="self.mode == 'ActiveActive' || self.vips.all(v, !has(v.preferredNode))",
    message="vips[].preferredNode is only used in ActiveActive mode",
    field_path=".vips",
)
ACTIVE_ACTIVE_NEEDS_PREFERRED_NODES = CelRule(
    rule="self.mode != 'ActiveActive' || self.nodes.all(n, self.vips.exists(v, has(v.preferredNode) && "
    "v.preferredNode == n.name)) && self.vips.all(v, has(v.preferredNode) && "
    "self.nodes.exists(n, n.name == v.preferredNode))",
    message="ActiveActive needs preferredNode on every VIP, naming a node, and each node preferred by a VIP",
    field_path=".vips",
)
ACTIVE_ACTIVE_ROUTER_IDS = CelRule(
    rule="self.mode != 'ActiveActive' || has(self.vrrp.secondVirtualRouterId) || "
    "self.vrrp.virtualRouterId < 255",
    message="ActiveActive needs vrrp.secondVirtualRouterId when virtualRouterId is 255",
    field_path=".vrrp.secondVirtualRouterId",
)
WEIGHT_EXCEEDS_PRIORITY_GAP = CelRule(
    rule="size(self.nodes) != 2 || self.healthCheck.weight == 0 || self.healthCheck.weight * "
    "self.healthCheck.weight > (self.nodes[0].priority - self.nodes[1].priority) * "
    "(self.nodes[0].priority - self.nodes[1].priority)",
    message="|healthCheck.weight| must exceed the difference of the node priorities, or be 0 (FAULT), "
    "otherwise a failed health check never moves the VIPs",
    field_path=".healthCheck.weight",
)
VIPS_IN_NODE_NETWORK = CelRule(
    rule="size(self.nodes) != 2 || self.vips.all(v, cidr(v.address).containsIP(self.nodes[0].vrrpAddress) && "
    "cidr(v.address).containsIP(self.nodes[1].vrrpAddress) && "
    "!v.address.startsWith(self.nodes[0].vrrpAddress + '/') && "
    "!v.address.startsWith(self.nodes[1].vrrpAddress + '/'))",
    message="every VIP must lie in the network of both nodes' vrrpAddress (given by the VIP's prefix length) "
    "and differ from both",
    field_path=".vips",
)
NOPREEMPT_NEEDS_FAULT = CelRule(
    rule="self.vrrp.preempt.mode != 'NoPreempt' || self.healthCheck.weight == 0",
    message="healthCheck.weight must be 0 with vrrp.preempt.mode NoPreempt: with nopreempt a lowered "
    "priority never moves the VIPs (keepalived issue 2599), only FAULT does",
    field_path=".healthCheck.weight",
)
ADVERTS_KEEP_UP_WITH_THE_CHECK = CelRule(
    rule="self.healthCheck.weight == 0 || self.healthCheck.method == 'TrackProcess' || "
    "self.vrrp.advertIntervalMilliseconds <= self.healthCheck.intervalSeconds * 1000",
    message="vrrp.advertIntervalMilliseconds must not exceed healthCheck.intervalSeconds when "
    "healthCheck.weight is not 0: the peer learns a lowered priority from the holder's periodic adverts, "
    "so adverts rarer than the check make its interval pointless (weight 0 hands over at once)",
    field_path=".vrrp.advertIntervalMilliseconds",
)


class PairSpec(ApiModel):
    """Desired state of a LoadBalancerPair."""

    model_config = cel_config(
        NODE_PRIORITIES_DIFFER,
        NODE_ADDRESSES_DIFFER,
        PREFERRED_NODE_ONLY_ACTIVE_ACTIVE,
        ACTIVE_ACTIVE_NEEDS_PREFERRED_NODES,
        ACTIVE_ACTIVE_ROUTER_IDS,
        WEIGHT_EXCEEDS_PRIORITY_GAP,
        VIPS_IN_NODE_NETWORK,
        NOPREEMPT_NEEDS_FAULT,
        LISTENERS_AVOID_NODE_PORTS,
        ADVERTS_KEEP_UP_WITH_THE_CHECK,
    )

    nodes: Annotated[list[PairNode], Field(min_length=2, max_length=2), UniqueItems(("name",))]
    """Exactly two nodes."""
    ssh: SshSettings
    """SSH login used by the operator."""
    vips: Annotated[list[Vip], Field(min_length=1, max_length=16), UniqueItems(("address",))]
    """Floating addresses; all site names should resolve to them."""
    mode: Literal["ActivePassive", "ActiveActive"] = "ActivePassive"
    """ActivePassive: one VRRP instance; the higher-priority node holds every VIP. ActiveActive: two VRRP
    instances; each node holds the VIPs that prefer it, and the survivor holds all of them on failure."""
    vrrp: Vrrp
    """VRRP settings."""
    health_check: HealthCheck = HealthCheck()
    """nginx health check driving failover."""
    nginx: NginxSettings = NginxSettings()
    """nginx-wide settings, identical on both nodes."""
    node_profile: NodeProfile = NodeProfile()
    """Paths and service control on the nodes."""
    allowed_namespaces: AllowedNamespaces = AllowedNamespaces()
    """Namespaces whose Upstreams and VirtualHosts may attach to this pair."""
    listeners: Annotated[list[PairListener], Field(min_length=1, max_length=16), UniqueItems(("port",))] = [  # noqa: RUF012
        PairListener(port=80, protocol="HTTP"),
        PairListener(port=443, protocol="HTTPS"),
    ]
    """The ports VirtualHosts may listen on, each with its protocol (like a Gateway's listeners). A
    VirtualHost listening elsewhere, or with the other protocol, is not accepted."""
    deletion_policy: Literal["Restore", "Retain"] = "Restore"
    """What happens on the nodes when the pair is deleted. Restore: the files the operator replaced are put
    back and its own files removed. Retain: the last applied configuration stays in place."""
    backends: Backends = Backends()
    """Which addresses attached Upstreams and URL locations may proxy to."""
    limits: Limits = Limits()
    """Size limits for attached VirtualHosts."""
    paused: bool = False
    """Preview instead of rollout: the operator renders the config, stages and validates it on the backup
    node (nginx -t, keepalived -t) without swapping it in, and reports what would change in status.preview
    and the ConfigMap it names; the live config stays as it is on both nodes. Setting it back to false rolls
    the same config out (the same resources render to the same config hash)."""
    firewall: Firewall = Firewall()
    """nftables rules on the nodes (off by default)."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        first, second = self.nodes
        node_names = {node.name for node in self.nodes}
        active_active = self.mode == "ActiveActive"
        NODE_PRIORITIES_DIFFER.enforce(first.priority != second.priority)
        NODE_ADDRESSES_DIFFER.enforce(first.vrrp_address != second.vrrp_address)
        PREFERRED_NODE_ONLY_ACTIVE_ACTIVE.enforce(
            active_active or all(v.preferred_node is None for v in self.vips)
        )
        ACTIVE_ACTIVE_NEEDS_PREFERRED_NODES.enforce(
            not active_active or {vip.preferred_node for vip in self.vips} == node_names
        )
        ACTIVE_ACTIVE_ROUTER_IDS.enforce(
            not active_active
            or self.vrrp.second_virtual_router_id is not None
            or self.vrrp.virtual_router_id < 255  # noqa: PLR2004
        )
        weight = self.health_check.weight
        WEIGHT_EXCEEDS_PRIORITY_GAP.enforce(
            weight == 0 or abs(weight) > abs(first.priority - second.priority)
        )
        VIPS_IN_NODE_NETWORK.enforce(
            all(_in_network(vip.address, node.vrrp_address) for vip in self.vips for node in self.nodes)
        )
        NOPREEMPT_NEEDS_FAULT.enforce(self.vrrp.preempt.mode != "NoPreempt" or weight == 0)
        ADVERTS_KEEP_UP_WITH_THE_CHECK.enforce(
            weight == 0
            or self.health_check.method == "TrackProcess"
            or self.vrrp.advert_interval_milliseconds <= self.health_check.interval_seconds * 1000
        )
        return self

    @model_validator(mode="after")
    def _listener_rules(self) -> Self:
        reserved = {self.node_profile.nginx_status_port} | {node.ssh_port for node in self.nodes}
        LISTENERS_AVOID_NODE_PORTS.enforce(all(listener.port not in reserved for listener in self.listeners))
        return self


def _in_network(vip: str, address: str) -> bool:
    interface = ipaddress.IPv4Interface(vip)
    return (
        ipaddress.IPv4Address(address) in interface.network and ipaddress.IPv4Address(address) != interface.ip
    )


class LoadBalancerPair(ApiModel):
    """A LoadBalancerPair as the model reads it."""

    metadata: ObjectMeta
    spec: PairSpec
