"""One node as a rollout sees it: observe, stage, validate, roll out (validate, swap, reload, verify, and
restore on failure, on the node itself), claim, uninstall.

`AgentNode` is the real one: each call is one round trip of the node agent over SSH
(`lbpair.nodes.operations`). Unit tests of the orchestration script a fake with the same methods.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Protocol

from lbpair.model.files import ManagedFile
from lbpair.nodes.backend_probe import BackendTarget, probe_backends
from lbpair.nodes.client import CommandResult, NodeClient
from lbpair.nodes.drill import VipSample, apply_maintenance, observe_vip_change
from lbpair.nodes.layout import NodeLayout
from lbpair.nodes.observe import NodeObservation
from lbpair.nodes.operations import (
    Activation,
    NodeOwnedElsewhereError,
    claim_node,
    observe_node,
    push_bundle,
    read_managed_files,
    roll_out,
    uninstall_managed,
    validate_staged,
)
from lbpair.nodes.ssh import NodeConnections, SSHTarget


class Node(Protocol):
    """Every method raises NodeError (NodeUnreachableError when the node cannot be reached)."""

    @property
    def name(self) -> str: ...

    def observe(self) -> NodeObservation: ...

    def stage(self, files: Sequence[ManagedFile], changed: Set[str]) -> None:
        """Stage the complete set `files` beside the live tree, shipping only those whose path is in
        `changed` (the others are live already: swap checks); nothing live changes."""
        ...

    def validate(self) -> None:
        """nginx -t and keepalived -t over the staged files (ValidationFailedError when refused)."""
        ...

    def roll_out(self, activation: Activation) -> tuple[NodeObservation, dict[str, int]]:
        """Validate the stage and swap it in (`activation.swap`), reload, verify and record it as live, in
        one round trip; returns the node as observed then, and each step's milliseconds on the node. After
        the swap, a failure restores the last-known-good files on the node (NodeRolledBackError,
        NodeRestoreFailedError)."""
        ...

    def read_files(self, paths: Sequence[str]) -> dict[str, str | None]:
        """The live content of managed files by path; None where the node will not show it (a secret)."""
        ...

    def claim(self) -> None:
        """The node is this pair's from now on (staging claims it too); another pair's are refused."""
        ...

    def uninstall(self) -> None:
        """The node's own files back, the operator's removed, keepalived stopped (its VIPs go with it),
        nginx reloaded on what is left, and the operator's state gone."""
        ...

    def set_maintenance(self, path: str, *, drained: bool) -> float:
        """A drill's drain or undrain through the maintenance track file; when, by the node's clock."""
        ...

    def watch_vip(self, address: str, seconds: int) -> list[VipSample]:
        """Whether the node holds `address` now and when that first changes, by the node's clock."""
        ...

    def probe_backends(self, targets: Iterable[BackendTarget]) -> dict[BackendTarget, bool]:
        """Whether the node can open a TCP connection to each backend (bounded: see backend_probe)."""
        ...


class NodeFactory(Protocol):
    def node(self, target: SSHTarget, layout: NodeLayout) -> Node: ...

    def close_all(self) -> None: ...


@dataclass(frozen=True)
class PairSession:
    """A node's client as one pair uses it: every command carries the pair (`owner`, "UID NAMESPACE/NAME"),
    and the node's agent refuses the commands of a pair other than the one that has the node."""

    client: NodeClient
    owner: str

    @property
    def name(self) -> str:
        return self.client.name

    def run(self, command: str, *, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        return self.client.run(
            f"export LBPAIR_OWNER={shlex.quote(self.owner)}\n{command}", stdin=stdin, timeout=timeout
        )

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class AgentNode:
    client: PairSession
    layout: NodeLayout

    @property
    def name(self) -> str:
        return self.client.name

    def observe(self) -> NodeObservation:
        """Raises NodeOwnedElsewhereError for a node another pair has: it is reported, never touched."""
        observation = observe_node(self.client, self.layout.units)
        owner_uid, _, owner_pair = observation.owner.partition(" ")
        if owner_uid and owner_uid != self.client.owner.partition(" ")[0]:
            raise NodeOwnedElsewhereError(
                f"this node belongs to LoadBalancerPair {owner_pair} (uid {owner_uid})"
            )
        return observation

    def stage(self, files: Sequence[ManagedFile], changed: Set[str]) -> None:
        push_bundle(self.client, files, self.layout.directories, staged=changed)

    def validate(self) -> None:
        validate_staged(self.client, self.layout.config_paths, self.layout.roots)

    def roll_out(self, activation: Activation) -> tuple[NodeObservation, dict[str, int]]:
        return roll_out(self.client, self.layout, activation)

    def read_files(self, paths: Sequence[str]) -> dict[str, str | None]:
        return read_managed_files(self.client, paths)

    def uninstall(self) -> None:
        uninstall_managed(self.client, self.layout.keepalived_service, self.layout.nginx_service)

    def claim(self) -> None:
        claim_node(self.client)

    def set_maintenance(self, path: str, *, drained: bool) -> float:
        return apply_maintenance(self.client, path, drained=drained)

    def watch_vip(self, address: str, seconds: int) -> list[VipSample]:
        return observe_vip_change(self.client, address, seconds)

    def probe_backends(self, targets: Iterable[BackendTarget]) -> dict[BackendTarget, bool]:
        return probe_backends(self.client, targets)


class AgentNodes:
    """The production NodeFactory: the node agent over pooled, pinned-key SSH connections."""

    def __init__(self, connections: NodeConnections | None = None) -> None:
        self._connections = connections or NodeConnections()

    def node(self, target: SSHTarget, layout: NodeLayout) -> Node:
        return AgentNode(PairSession(self._connections.client(target), target.pair), layout)

    def close_all(self) -> None:
        self._connections.close_all()
