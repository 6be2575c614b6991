"""Two nodes' keepalived.conf -> a LoadBalancerPair's nodes, VIPs, VRRP and health check (pure).

The two files are merged: what each node says about itself (router_id, priority, interface, source
address) goes to its spec.nodes entry; what the pair shares (router id, advert interval, version, peering,
authentication, VIPs, preemption, the check script's timing) must agree between the files, else the import
fails (the operator would run both nodes with one value). One VRRP instance per node is an ActivePassive
pair, two per node (each preferring one node) an ActiveActive one. Values stay text for the model to judge;
what has no field is a Note.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lbpair.adopt.keepalived_conf import KeepalivedStatement
from lbpair.adopt.notes import Note, shorten
from lbpair.model.patterns import DNS_LABEL_PATTERN

# keepalived's own gratuitous ARP defaults: kept when the file sets none, so the pair behaves as before
# (the operator's defaults differ).
KEEPALIVED_GARP_DELAY_SECONDS = 5
KEEPALIVED_GARP_REPEAT = 5
_GARP = {
    "garp_master_delay": "masterDelaySeconds",
    "garp_master_repeat": "masterRepeat",
    "garp_master_refresh": "masterRefreshSeconds",
    "garp_lower_prio_repeat": "lowerPrioRepeat",
}
_NODE_FIELDS = {
    "interface": "interface",
    "priority": "priority",
    "mcast_src_ip": "vrrpAddress",
    "unicast_src_ip": "vrrpAddress",
}
_VRRP_NUMBERS = {"virtual_router_id": "virtualRouterId", "version": "version"}
_SCRIPT_FIELDS = {"interval": "intervalSeconds", "weight": "weight", "fall": "fall", "rise": "rise"}
# Instance keywords read below; any other is a Note.
_INSTANCE_READ = frozenset(
    {
        "state", "interface", "virtual_router_id", "priority", "advert_int", "mcast_src_ip", "unicast_src_ip",
        "unicast_peer", "authentication", "virtual_ipaddress", "track_script", "nopreempt", "preempt_delay",
        "version", *_GARP,
    }
)  # fmt: skip
# global_defs keywords the operator sets itself.
_GLOBAL_RENDERED = frozenset({"router_id", "vrrp_version", "enable_script_security", "script_user"})


class KeepalivedImportError(ValueError):
    """The nodes' files cannot make one pair (no instance, several, or shared settings that differ)."""


@dataclass(frozen=True)
class NodeKeepalived:
    """One node's keepalived.conf as parsed, with the addresses of its interfaces (`ip -4 addr`), from
    which a VIP written without a prefix length gets the node network's."""

    label: str
    """How messages name the node (the address it was read from)."""
    statements: tuple[KeepalivedStatement, ...]
    interface_addresses: tuple[ipaddress.IPv4Interface, ...] = ()


@dataclass
class KeepalivedImport:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    """spec.nodes entries without address and hostKey (the command knows those)."""
    shared: dict[str, Any] = field(default_factory=dict)
    """spec.vips, spec.vrrp, spec.healthCheck, and spec.mode when ActiveActive."""
    auth_pass: str | None = None
    """The VRRP PASS password, for the Secret spec.vrrp.authentication names."""
    notes: list[Note] = field(default_factory=list)


def import_keepalived(nodes: Sequence[NodeKeepalived]) -> KeepalivedImport:
    result = KeepalivedImport()
    per_node = [_import_node(result, node) for node in nodes]
    _name_nodes(per_node)
    counts = [len(instances) for instances in per_node]
    if set(counts) == {1}:
        imported = [instances[0] for instances in per_node]
    elif set(counts) == {2} and len(per_node) == 2:  # noqa: PLR2004 - a pair
        imported = _active_active(result, nodes, per_node)
    else:
        found = ", ".join(f"{node.label}: {count}" for node, count in zip(nodes, counts, strict=True))
        raise KeepalivedImportError(
            f"vrrp_instance blocks per node ({found}): the import takes one on each node (ActivePassive) or "
            "two (ActiveActive)"
        )
    for key in imported[0].shared:
        if len({repr(one.shared[key]) for one in imported}) > 1:
            labels = ", ".join(
                f"{node.label}: {one.shared[key]}" for node, one in zip(nodes, imported, strict=True)
            )
            raise KeepalivedImportError(f"the nodes disagree on {key} ({labels}); one pair runs one value")
    if len({one.auth_pass for one in imported}) > 1:
        raise KeepalivedImportError("the nodes disagree on the VRRP authentication (auth_pass)")
    result.nodes = [one.own for one in imported]
    result.shared = imported[0].shared
    result.auth_pass = imported[0].auth_pass
    return result


@dataclass
class _NodeImport:
    own: dict[str, Any]
    shared: dict[str, Any]
    auth_pass: str | None


def _import_node(result: KeepalivedImport, node: NodeKeepalived) -> list[_NodeImport]:
    """One _NodeImport per vrrp_instance of the node."""
    scripts = {s.args[0]: s for s in node.statements if s.keyword == "vrrp_script" and s.args}
    global_defs = next((s for s in node.statements if s.keyword == "global_defs"), None)
    for statement in node.statements:
        if statement.keyword not in ("vrrp_instance", "vrrp_script", "global_defs"):
            _note(result, node, statement, "no field of LoadBalancerPair expresses it; not imported")
    version: int | str = 2
    own: dict[str, Any] = {}
    for statement in global_defs.block or () if global_defs else ():
        if statement.keyword == "router_id" and statement.args:
            own["name"] = statement.args[0]
        elif statement.keyword == "vrrp_version" and statement.args:
            version = _number(statement.args[0])
        elif statement.keyword not in _GLOBAL_RENDERED:
            _note(
                result, node, statement, "not expressed: the operator reports failovers as Kubernetes events"
            )
    imported = []
    for instance in (s for s in node.statements if s.keyword == "vrrp_instance"):
        one = _instance(result, node, instance, scripts)
        one.shared["vrrp"].setdefault("version", version)
        one.own = {**own, **one.own}
        imported.append(one)
    return imported


def _name_nodes(per_node: list[list[_NodeImport]]) -> None:
    """Each node's name: its router_id when that is a DNS label not taken yet, else lb1/lb2."""
    taken: set[str] = set()
    for index, instances in enumerate(per_node):
        name = str(instances[0].own.get("name", "") if instances else "").lower()
        if not re.fullmatch(DNS_LABEL_PATTERN.strip("^$"), name) or name in taken:
            name = f"lb{index + 1}"
        taken.add(name)
        for one in instances:
            one.own["name"] = name


def _active_active(
    result: KeepalivedImport, nodes: Sequence[NodeKeepalived], per_node: list[list[_NodeImport]]
) -> list[_NodeImport]:
    """Two instances on each node, each preferring (with the higher priority) one node -> one _NodeImport per
    node in ActiveActive terms: the first router id is the one the first node prefers, each VIP names the
    node its instance prefers, node priorities are the first instance's (the operator gives each node the
    higher of them on the instance it prefers)."""
    by_router_id = [
        {one.shared["vrrp"].get("virtualRouterId"): one for one in instances} for instances in per_node
    ]
    if set(by_router_id[0]) != set(by_router_id[1]) or len(by_router_id[0]) != 2:  # noqa: PLR2004 - two instances
        raise KeepalivedImportError(
            "ActiveActive: both nodes' two instances must use the same two virtual_router_ids"
        )
    preferred = {}
    for router_id in by_router_id[0]:
        first, second = (by_router_id[index][router_id].own.get("priority") for index in (0, 1))
        if not isinstance(first, int) or not isinstance(second, int) or first == second:
            raise KeepalivedImportError(f"virtual_router_id {router_id}: the nodes need different priorities")
        preferred[router_id] = 0 if first > second else 1
    if sorted(preferred.values()) != [0, 1]:
        raise KeepalivedImportError("ActiveActive: each node must have the higher priority on one instance")
    first_id, second_id = sorted(preferred, key=lambda router_id: preferred[router_id])
    names = [instances[0].own["name"] for instances in per_node]
    merged = []
    for node, instances in zip(nodes, by_router_id, strict=True):
        main, other = instances[first_id], instances[second_id]
        if {**main.own, "priority": 0} != {**other.own, "priority": 0}:
            raise KeepalivedImportError(
                f"{node.label}: its two instances differ in interface or source address"
            )
        vips = [{**vip, "preferredNode": names[0]} for vip in main.shared.get("vips", [])]
        vips += [{**vip, "preferredNode": names[1]} for vip in other.shared.get("vips", [])]
        shared = {**main.shared, "vips": vips, "mode": "ActiveActive"}
        shared["vrrp"] = {**main.shared["vrrp"], "secondVirtualRouterId": second_id}
        if {**other.shared, "vips": None, "vrrp": {**other.shared["vrrp"], "virtualRouterId": first_id}} != {
            **main.shared,
            "vips": None,
        }:
            raise KeepalivedImportError(f"{node.label}: its two instances differ in settings the pair shares")
        merged.append(_NodeImport(main.own, shared, main.auth_pass))
    low, high = sorted(one.own["priority"] for one in merged)
    second_priorities = [by_router_id[index][second_id].own["priority"] for index in (1, 0)]
    if second_priorities != [high, low]:
        result.notes.append(
            Note(
                nodes[1].label,
                f"virtual_router_id {second_id}",
                f"priorities {second_priorities}: the pair gives each node {high} on the instance it prefers "
                f"and {low} on the other",
            )
        )
    return merged


def _instance(
    result: KeepalivedImport,
    node: NodeKeepalived,
    instance: KeepalivedStatement,
    scripts: dict[str, KeepalivedStatement],
) -> _NodeImport:
    own: dict[str, Any] = {}
    auth_pass = None
    vrrp: dict[str, Any] = {
        "garp": {"masterDelaySeconds": KEEPALIVED_GARP_DELAY_SECONDS, "masterRepeat": KEEPALIVED_GARP_REPEAT},
        "peering": "Multicast",
        "preempt": {"mode": "Preempt"},
    }
    shared: dict[str, Any] = {"vrrp": vrrp}
    for statement in instance.block or ():
        keyword, args = statement.keyword, statement.args
        if keyword not in _INSTANCE_READ:
            _note(result, node, statement, "no field of LoadBalancerPair expresses it; not imported")
        elif keyword in _NODE_FIELDS and args:
            own[_NODE_FIELDS[keyword]] = _number(args[0]) if keyword == "priority" else args[0]
        elif keyword in _VRRP_NUMBERS and args:
            vrrp[_VRRP_NUMBERS[keyword]] = _number(args[0])
        elif keyword in _GARP and args:
            vrrp["garp"][_GARP[keyword]] = _number(args[0])
        elif keyword == "advert_int" and args:
            vrrp["advertIntervalMilliseconds"] = _milliseconds(args[0])
        elif keyword in ("unicast_peer", "nopreempt", "preempt_delay"):
            _peering_and_preemption(vrrp, statement)
        elif keyword == "authentication":
            auth_pass = _auth_pass(result, node, statement)
        elif keyword == "virtual_ipaddress":
            shared["vips"] = _vips(result, node, statement, own.get("interface"))
        elif keyword == "track_script":
            shared["healthCheck"] = _health_check(result, node, statement, scripts)
    own.setdefault("vrrpAddress", _interface_address(node, own.get("interface")))
    if "healthCheck" not in shared:
        _note(result, node, instance, "no track_script: the operator adds its nginx check (healthCheck)")
    return _NodeImport(own, shared, auth_pass)


def _peering_and_preemption(vrrp: dict[str, Any], statement: KeepalivedStatement) -> None:
    if statement.keyword == "unicast_peer":
        vrrp["peering"] = "Unicast"
    elif statement.keyword == "nopreempt":
        vrrp["preempt"] = {"mode": "NoPreempt"}
    elif statement.args:
        vrrp["preempt"]["delaySeconds"] = _number(statement.args[0])


def _auth_pass(result: KeepalivedImport, node: NodeKeepalived, block: KeepalivedStatement) -> str | None:
    auth_type = block.first("auth_type")
    password = block.first("auth_pass")
    if auth_type is None or auth_type.args != ("PASS",) or password is None or not password.args:
        _note(result, node, block, "only auth_type PASS with an auth_pass is expressed; not imported")
        return None
    return password.args[0]


def _vips(
    result: KeepalivedImport, node: NodeKeepalived, block: KeepalivedStatement, interface: str | None
) -> list[dict[str, str]]:
    vips = []
    for entry in block.block or ():
        address, *rest = (entry.keyword, *entry.args)
        if (rest and rest[:2] != ["dev", interface]) or len(rest) > 2:  # noqa: PLR2004 - "dev IF"
            _note(result, node, entry, "only the address (on the instance's interface) is expressed")
        vips.append({"address": _with_prefix(address, node)})
    return vips


def _with_prefix(address: str, node: NodeKeepalived) -> str:
    """`A.B.C.D` or `A.B.C.D/32` -> the address with the prefix length of the node network holding it
    (spec.vips[].address is written that way); anything else is left for the model to refuse."""
    text = address.removesuffix("/32")
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        return address
    for interface in node.interface_addresses:
        if ip in interface.network and ip != interface.ip:
            return f"{ip}/{interface.network.prefixlen}"
    return address


def _interface_address(node: NodeKeepalived, interface: str | None) -> str:
    """keepalived sends from the interface's first address when no source is set; with none known the
    model refuses the missing vrrpAddress, naming it."""
    return str(node.interface_addresses[0].ip) if interface and node.interface_addresses else ""


def _health_check(
    result: KeepalivedImport,
    node: NodeKeepalived,
    block: KeepalivedStatement,
    scripts: dict[str, KeepalivedStatement],
) -> dict[str, Any]:
    tracked = [entry.keyword for entry in block.block or ()]
    script = scripts.get(tracked[0]) if len(tracked) == 1 else None
    if script is None:
        _note(result, node, block, "one tracked vrrp_script is expressed; the operator's check is used")
        return {"method": "Script"}
    check: dict[str, Any] = {"method": "Script"}
    for statement in script.block or ():
        if statement.keyword in _SCRIPT_FIELDS and statement.args:
            check[_SCRIPT_FIELDS[statement.keyword]] = _number(statement.args[0])
        elif statement.keyword == "script":
            _note(
                result, node, statement,
                "the operator runs its own check script (nginx answering on its status port; it starts nginx "
                "when nginx is down, as restartNginx says) instead",
            )  # fmt: skip
        else:
            _note(result, node, statement, "no field of spec.healthCheck expresses it; not imported")
    return check


def _note(
    result: KeepalivedImport, node: NodeKeepalived, statement: KeepalivedStatement, reason: str
) -> None:
    note = Note(f"{node.label}:{statement.line}", shorten([statement.keyword, *statement.args]), reason)
    if note not in result.notes:
        result.notes.append(note)


def _number(text: str) -> int | str:
    """A whole number (negative too) as an int; anything else stays text for the model to refuse."""
    digits = text.removeprefix("-")
    return int(text) if digits.isdigit() and len(digits) < 10 else text  # noqa: PLR2004 - fits an int32


def _milliseconds(seconds: str) -> int | str:
    try:
        value = float(seconds)
    except ValueError:
        return seconds
    return round(value * 1000) if 0 < value < 1000 else seconds  # noqa: PLR2004 - keepalived's range
