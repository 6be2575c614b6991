"""A pair's nodes cleaned up: all of them when the pair is deleted (per its deletionPolicy), and each node
that leaves the pair's spec."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lbpair.events import Event
from lbpair.model.pair import PairNode
from lbpair.nodes.client import NodeError
from lbpair.nodes.node import Node
from lbpair.nodes.operations import NodeOwnedElsewhereError


def restore_nodes(nodes: Iterable[Node]) -> str:
    """Policy Restore: each node gets its own files back and stops serving the pair's VIPs. Returns what
    is still pending ('' when done); a pending node is tried again whole."""
    pending = [(node.name, release_node(node)[0]) for node in nodes]
    return "; ".join(f"{name}: {error}" for name, error in pending if error)


def release_node(node: Node) -> tuple[str, str]:
    """Restores one node: ('', what was done) or (why it is still pending, '')."""
    try:
        node.uninstall()
    except NodeOwnedElsewhereError as error:
        return "", f"nothing to clean up, {error}"  # another pair has the node: nothing on it is ours
    except NodeError as error:
        return str(error), ""
    return "", "cleaned up"


@dataclass
class FormerNodes:
    """The nodes of a pair's last pass, to notice one that leaves the spec (removed, or its address
    changed), and those that left and are not cleaned up yet."""

    current: dict[str, tuple[Node, str]] = field(default_factory=dict)
    """Node and pinned host key by endpoint ("lb2 198.51.100.12:22")."""
    leaving: dict[str, tuple[tuple[Node, str], str]] = field(default_factory=dict)
    """Node and host key by endpoint, and what is still pending."""

    def pending(self) -> dict[str, str]:
        return {endpoint: pending for endpoint, (_, pending) in self.leaving.items()}

    def release(self, spec_nodes: Sequence[PairNode], nodes: Mapping[str, Node]) -> list[Event]:
        """A node that left the spec is cleaned up like a deleted pair's node: its own files back,
        keepalived stopped (the VIPs go with it). One that cannot be reached yet is tried again every pass
        and keeps the pair Degraded. One whose pinned host key is a current node's is that node under
        another address: it is only forgotten."""
        current = {endpoint(node): (nodes[node.name], node.host_key) for node in spec_nodes}
        for former in self.current.keys() - current.keys():
            self.leaving.setdefault(former, (self.current[former], ""))
        for returned in self.leaving.keys() & current.keys():
            del self.leaving[returned]
        self.current = current
        current_host_keys = {host_key for _, host_key in current.values()}
        events = []
        for former, ((node, host_key), before) in sorted(self.leaving.items()):
            if host_key in current_host_keys:
                pending, done = "", "it is a current node under another address"
            else:
                pending, done = release_node(node)
            if pending:
                self.leaving[former] = ((node, host_key), pending)
                if pending != before:
                    events.append(Event.warning("CleanupPending", f"{former} left the spec: {pending}"))
                continue
            del self.leaving[former]
            events.append(Event.normal("NodeReleased", f"{former} left the spec: {done}"))
        return events


def endpoint(node: PairNode) -> str:
    return f"{node.name} {node.address}:{node.ssh_port}"
