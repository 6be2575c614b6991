"""A pair's deletion on its nodes, per its deletionPolicy."""

from __future__ import annotations

from collections.abc import Iterable

from lbpair.nodes.client import NodeError
from lbpair.nodes.layout import NodeLayout
from lbpair.nodes.node import Node


def restore_nodes(nodes: Iterable[Node], layout: NodeLayout) -> str:
    """Policy Restore: the node's own files back, the operator's removed, keepalived stopped (its VIPs go
    with it) and nginx reloaded on what is left. Returns what is still pending ('' when done)."""
    pending = []
    for node in nodes:
        try:
            node.uninstall()
            node.stop([layout.keepalived_service])
            node.reload([layout.nginx_service])
        except NodeError as error:
            pending.append(f"{node.name}: {error}")
    return "; ".join(pending)
