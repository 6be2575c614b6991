"""A pair's deletion on its nodes, per its deletionPolicy."""

from __future__ import annotations

from collections.abc import Iterable

from lbpair.nodes.client import NodeError
from lbpair.nodes.node import Node
from lbpair.nodes.operations import NodeOwnedElsewhereError


def restore_nodes(nodes: Iterable[Node]) -> str:
    """Policy Restore: each node gets its own files back and stops serving the pair's VIPs. Returns what
    is still pending ('' when done); a pending node is tried again whole."""
    pending = []
    for node in nodes:
        try:
            node.uninstall()
        except NodeOwnedElsewhereError:
            pass  # another pair has the node: nothing on it is this pair's to clean
        except NodeError as error:
            pending.append(f"{node.name}: {error}")
    return "; ".join(pending)
