"""Two nodes' keepalived.conf -> a LoadBalancerPair's nodes, VIPs, VRRP and health check (pure).

The two files are merged: what each node says about itself (router_id, priority, interface, source
address) goes to its spec.nodes entry; what the pair shares (router id, advert interval, version, peering,
authentication, VIPs, preemption, the check script's timing) must agree between the files, else the import
fails (the operator would run both nodes with one value). One VRRP instance per node is imported
(ActivePassive). Values stay text for the model to judge; what has no field is a Note.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lbpair.adopt.keepalived_conf import KeepalivedStatement
from lbpair.adopt.notes import Note, shorten

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
    """spec.vips, spec.vrrp, spec.healthCheck."""
    auth_pass: str | None = None
    """The VRRP PASS password, for the Secret spec.vrrp.authentication names."""
    notes: list[Note] = field(default_factory=list)


def import_keepalived(nodes: Sequence[NodeKeepalived]) -> KeepalivedImport:
    result = KeepalivedImport()
    per_node = [_import_node(result, node) for node in nodes]
    for key in per_node[0].shared:
        if len({repr(imported.shared[key]) for imported in per_node}) > 1:
            labels = ", ".join(
                f"{node.label}: {imported.shared[key]}"
                for node, imported in zip(nodes, per_node, strict=True)
            )
            raise KeepalivedImportError(f"the nodes disagree on {key} ({labels}); one pair runs one value")
    if len({imported.auth_pass for imported in per_node}) > 1:
        raise KeepalivedImportError("the nodes disagree on the VRRP authentication (auth_pass)")
    result.nodes = [imported.own for imported in per_node]
    result.shared = per_node[0].shared
    result.auth_pass = per_node[0].auth_pass
    return result


@dataclass
class _NodeImport:
    own: dict[str, Any]
    shared: dict[str, Any]
    auth_pass: str | None


def _import_node(result: KeepalivedImport, node: NodeKeepalived) -> _NodeImport:
    instances = [s for s in node.statements if s.keyword == "vrrp_instance"]
    if len(instances) != 1:
        raise KeepalivedImportError(
            f"{node.label}: {len(instances)} vrrp_instance blocks; the import takes exactly one "
            "(ActivePassive)"
        )
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
    imported = _instance(result, node, instances[0], scripts)
    imported.shared["vrrp"].setdefault("version", version)
    imported.own = {**own, **imported.own}
    return imported


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
