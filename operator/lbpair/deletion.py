"""A pair's deletion on its nodes, per its deletionPolicy."""

from __future__ import annotations

from collections.abc import Iterable

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
