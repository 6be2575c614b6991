"""Roll a rendered config out to the pair: backup node first, VIP holder last, one node at a time.

Per node: compare hashes (no change: no write, no reload) -> stage -> validate (nginx -t, keepalived -t on
the staged tree) -> swap -> reload (never restart) -> verify the new config is what nginx serves -> record
it as live. A failure before the swap changes nothing; a failure from the swap on restores the
last-known-good files on that node. Either way the rollout stops there, so the other node keeps serving
the old config. A node whose files are right but whose services were never verified on them (the operator
stopped between swap and reload) is reloaded and verified again.
"""

from __future__ import annotations

import ipaddress
import posixpath
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lbpair.model.files import ManagedFile
from lbpair.nodes.client import NodeClient, NodeError
from lbpair.nodes.observe import NodeObservation
from lbpair.nodes.operations import (
    apply_reload,
    apply_staged,
    mark_live,
    observe_node,
    observe_served_hash,
    push_bundle,
    restore_last_good,
    validate_staged,
)

VERIFY_TIMEOUT_SECONDS = 10.0
VERIFY_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class NodeLayout:
    """Where the two services' config lives on a node, and how to tell which service a file belongs to."""

    nginx_service: str
    keepalived_service: str
    nginx_config_path: str
    keepalived_config_path: str
    status_port: int
    directories: tuple[str, ...] = ()  # created before validation: nginx makes only the last level

    @property
    def units(self) -> tuple[str, str]:
        return (self.nginx_service, self.keepalived_service)

    @property
    def nginx_root(self) -> str:
        return posixpath.dirname(self.nginx_config_path)

    @property
    def keepalived_root(self) -> str:
        return posixpath.dirname(self.keepalived_config_path)

    @property
    def roots(self) -> tuple[str, str]:
        return (self.nginx_root, self.keepalived_root)

    def services_for(self, paths: Iterable[str]) -> list[str]:
        """The services that must reload for these files: each reads only files under its own root."""
        services = []
        changed = list(paths)
        if any(_under(path, self.nginx_root) for path in changed):
            services.append(self.nginx_service)
        if any(_under(path, self.keepalived_root) for path in changed):
            services.append(self.keepalived_service)
        return services


def _under(path: str, root: str) -> bool:
    return posixpath.commonpath([path, root]) == root


@dataclass(frozen=True)
class NodePlan:
    """What one node should run: its files, their hash, and the hash its nginx serves once they are live."""

    name: str
    client: NodeClient
    files: tuple[ManagedFile, ...]
    config_hash: str
    nginx_hash: str


@dataclass(frozen=True)
class Difference:
    changed: frozenset[str]  # paths whose live content differs from the desired (added, changed or stale)
    drifted: frozenset[str]  # of those, paths edited on the node since the operator wrote them
    unverified: bool = False  # the files are right, but the services were not verified to run them

    @property
    def any(self) -> bool:
        return bool(self.changed) or self.unverified


def compare(observation: NodeObservation, plan: NodePlan) -> Difference:
    desired = {managed.path: managed.sha256 for managed in plan.files}
    live = {path: state.actual_sha256 for path, state in observation.managed_files.items()}
    changed = {path for path in desired.keys() | live.keys() if desired.get(path) != live.get(path)}
    drifted = {path for path, state in observation.managed_files.items() if state.drifted}
    unverified = not changed and observation.live_hash != plan.config_hash
    return Difference(frozenset(changed), frozenset(drifted & changed), unverified)


def rollout_order(
    plans: Sequence[NodePlan], observations: Mapping[str, NodeObservation], vips: Sequence[str]
) -> list[NodePlan]:
    """Nodes holding fewer VIPs first, so the node carrying traffic changes last."""
    addresses = [ipaddress.IPv4Address(vip) for vip in vips]

    def vips_held(plan: NodePlan) -> int:
        observation = observations.get(plan.name)
        return 0 if observation is None else sum(observation.holds(address) for address in addresses)

    return sorted(plans, key=lambda plan: (vips_held(plan), plan.name))


class RolledBackError(NodeError):
    """The new config went live on a node but failed there; the last-known-good files were restored."""


class RestoreFailedError(NodeError):
    """The new config failed on a node and putting the last-known-good files back failed too."""


def roll_out_node(plan: NodePlan, difference: Difference, layout: NodeLayout) -> None:
    """Apply `plan` on its node.

    Raises ValidationFailedError (nothing changed on the node), RolledBackError (it was restored),
    RestoreFailedError (it is in an unknown state), or NodeUnreachableError before anything changed.
    """
    client = plan.client
    services = layout.services_for(difference.changed) if difference.changed else list(layout.units)
    if difference.changed:
        push_bundle(client, plan.files, layout.directories)
        validate_staged(client, (layout.nginx_config_path, layout.keepalived_config_path), layout.roots)
    try:
        if difference.changed:
            apply_staged(client)
        apply_reload(client, services)
        verify_node(client, plan.nginx_hash, layout)
        mark_live(client, plan.config_hash)
    except NodeError as error:
        if not difference.changed:
            raise  # nothing was swapped: there is nothing to restore
        try:
            restore_last_good(client)
            apply_reload(client, services)
        except NodeError as restore_error:
            raise RestoreFailedError(
                f"{plan.name}: {error}; restoring the last-known-good config failed too: {restore_error}"
            ) from error
        raise RolledBackError(f"{plan.name}: {error}; restored the last-known-good config") from error


def verify_node(client: NodeClient, nginx_hash: str, layout: NodeLayout) -> None:
    """nginx serves the new config (its status endpoint returns the new hash) and keepalived runs."""
    deadline = time.monotonic() + VERIFY_TIMEOUT_SECONDS
    served = ""
    while time.monotonic() < deadline:
        served = observe_served_hash(client, layout.status_port)
        if served == nginx_hash:
            break
        time.sleep(VERIFY_POLL_SECONDS)
    else:
        raise NodeError(
            f"nginx does not serve the new config after reload (serves {served or 'nothing'!r}, "
            f"expected {nginx_hash[:12]})"
        )
    if not observe_node(client, layout.units).running("keepalived"):
        raise NodeError("keepalived is not running after reload")
