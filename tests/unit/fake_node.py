"""A scripted in-memory node for unit tests of the orchestration: it keeps files, a manifest, a backup,
services and addresses the way the node agent and a real server do, and fails where a test tells it to.

nginx "loads" its configuration on reload: from then on it serves the config hash written in the live
status file, as the real status server does, unless the test says nginx ignores reloads.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field

from lbpair.model.files import ManagedFile
from lbpair.nodes.backend_probe import BackendTarget
from lbpair.nodes.client import NodeError, NodeUnreachableError
from lbpair.nodes.drill import VipSample
from lbpair.nodes.layout import NodeLayout
from lbpair.nodes.node import Node
from lbpair.nodes.observe import ManagedFileState, NodeObservation, VrrpInstanceState
from lbpair.nodes.operations import (
    Activation,
    NodeRestoreFailedError,
    NodeRolledBackError,
    ValidationFailedError,
)
from lbpair.nodes.ssh import SSHTarget

SERVED_HASH = re.compile(r'location = /lbpair/config-hash \{[^}]*return 200 "([0-9a-f]+)\\n";')


@dataclass
class FakeNode:
    name: str
    addresses: set[str] = field(default_factory=set)
    """Static IPv4 interfaces, e.g. "198.51.100.11/24"."""
    vips: set[str] = field(default_factory=set)
    """VIPs keepalived has configured here, e.g. "198.51.100.10/24": the node is their holder (MASTER)."""
    vrrp: tuple[VrrpInstanceState, ...] = ()
    """What keepalived reports; empty: one instance lbpair_1, MASTER while the node holds a VIP."""
    files: dict[str, ManagedFile] = field(default_factory=dict)
    """What is on disk, by path (the operator's files and the node's own)."""
    manifest: dict[str, str] = field(default_factory=dict)  # path -> sha256 the operator applied
    live_hash: str = ""
    services: dict[str, bool] = field(default_factory=lambda: {"nginx": True, "keepalived": True})
    serving: str = ""  # the nginx config hash the running nginx serves
    failing: dict[str, Exception] = field(default_factory=dict)
    """Method name -> the error that method raises (until removed)."""
    failing_once: dict[str, Exception] = field(default_factory=dict)
    """Method name -> the error that method raises on its next call only."""
    nginx_ignores_reload: bool = False
    owner: str = ""  # "" until a stage or claim: the agent's owner marker
    refuses: dict[str, bool] = field(default_factory=dict)
    """Text the validators refuse wherever the staged config holds it -> whether their message names the
    file (nginx mostly does; some checks name none)."""
    calls: list[str] = field(default_factory=list)
    reloaded: list[list[str]] = field(default_factory=list)  # the services of each reload
    staged: list[ManagedFile] = field(default_factory=list)
    """The files the latest stage shipped (only those that differed from the node's)."""
    watches: list[list[VipSample]] = field(default_factory=list)
    """What each next watch_vip reports (a drill's view of keepalived moving the VIP), in order."""
    clock: float = 1_000.0  # the node's clock as set_maintenance reports it
    unreachable_backends: set[str] = field(default_factory=set)
    """Backends ("ADDRESS:PORT") the node cannot connect to; every other one answers."""
    _staged_manifest: dict[str, str] = field(default_factory=dict)
    _backup: tuple[dict[str, ManagedFile], dict[str, str]] | None = None
    _absent: set[str] = field(default_factory=set)

    def _call(self, method: str) -> None:
        self.calls.append(method)
        if method in self.failing_once:
            raise self.failing_once.pop(method)
        if method in self.failing:
            raise self.failing[method]

    def observe(self) -> NodeObservation:
        self._call("observe")
        return self._observation()

    def _observation(self) -> NodeObservation:
        return NodeObservation(
            hostname=self.name,
            services=dict(self.services),
            addresses=frozenset(ipaddress.IPv4Interface(a) for a in self.addresses | self.vips),
            managed_files={
                path: ManagedFileState(applied, self.files[path].sha256 if path in self.files else None)
                for path, applied in self.manifest.items()
            },
            vrrp=self.vrrp or (VrrpInstanceState("lbpair_1", "MASTER" if self.vips else "BACKUP", 100),),
            live_hash=self.live_hash,
            owner=self.owner,
        )

    def stage(self, files: Sequence[ManagedFile], changed: Set[str]) -> None:
        self._call("stage")
        self.owner = self.owner or "fake-uid demo/seed"
        self.staged = [managed for managed in files if managed.path in changed]
        self._staged_manifest = {managed.path: managed.sha256 for managed in files}

    def validate(self) -> None:
        """As nginx -t: stops at the first refused text of the staged tree (staged files, else live ones)."""
        self._call("validate")
        staged = {managed.path: managed.content for managed in self.staged}
        for path in sorted(self._staged_manifest):
            content = staged[path] if path in staged else self.files[path].content
            for text, names_file in self.refuses.items():
                if text in content:
                    where = f" in {path}:1" if names_file else ""
                    raise ValidationFailedError(
                        f'nginx: [emerg] invalid value "{text}"{where}\n'
                        "nginx: configuration file /etc/nginx/nginx.conf test failed"
                    )

    def swap(self) -> None:
        """As the agent's: installs the staged files, removes what the new manifest drops, and refuses a
        manifest path that is neither staged nor live with its content; the backup holds what changed."""
        self._call("swap")
        staged = {managed.path: managed for managed in self.staged}
        for path, sha256 in self._staged_manifest.items():
            if path not in staged and (path not in self.files or self.files[path].sha256 != sha256):
                raise NodeError(f"swapping config failed (exit 1): {path} is neither staged nor live")
        removed = set(self.manifest) - set(self._staged_manifest)
        touched = removed | set(staged)
        self._backup = ({p: self.files[p] for p in touched if p in self.files}, dict(self.manifest))
        self._absent = {p for p in touched if p not in self.files}
        for path in removed:
            self.files.pop(path, None)
        self.files.update(staged)
        self.manifest = dict(self._staged_manifest)
        self.live_hash = ""

    def reload(self, services: Sequence[str]) -> None:
        self._call("reload")
        self.reloaded.append(list(services))
        for service in services:
            self.services[service] = True
            if service == "nginx" and not self.nginx_ignores_reload:
                self.serving = next(
                    (m.group(1) for f in self.files.values() if (m := SERVED_HASH.search(f.content))), ""
                )

    def roll_out(self, activation: Activation) -> tuple[NodeObservation, dict[str, int]]:
        """As the agent's roll-out (activate without the swap): the steps below in one call; a failure
        after the swap restores the last-known-good files, unless the connection was lost there (the node
        is left as the failure found it, for the next pass to probe)."""
        self._call("roll_out")
        if activation.swap:
            self.validate()
            self.swap()
        try:
            self.reload(activation.services)
            self._verify(activation.nginx_hash)
            self.mark_live(activation.config_hash)
        except NodeUnreachableError:
            raise
        except NodeError as error:
            try:
                self.restore()
                self.reload(activation.services)
            except NodeError as restore_error:
                raise NodeRestoreFailedError(
                    f"{error}; {restore_error}; restoring the last-known-good config failed too"
                ) from error
            raise NodeRolledBackError(f"{error}; restored the last-known-good config") from error
        return self._observation(), {}

    def _verify(self, nginx_hash: str) -> None:
        if self.serving != nginx_hash:
            serving = self.serving or "nothing"
            raise NodeError(
                f"nginx does not serve the new config after reload (serves {serving!r}, "
                f"expected {nginx_hash[:12]})"
            )
        if not self.services.get("keepalived"):
            raise NodeError("keepalived (keepalived) is not running after reload")

    def mark_live(self, config_hash: str) -> None:
        self._call("mark_live")
        self.live_hash = config_hash

    def restore(self) -> None:
        self._call("restore")
        if self._backup is None:
            raise NodeError("restoring last-known-good config failed (exit 1): no backup to restore")
        files, manifest = self._backup
        for path in self._absent:
            self.files.pop(path, None)
        self.files.update(files)
        self.manifest = dict(manifest)
        self.live_hash = ""

    def claim(self) -> None:
        self._call("claim")
        self.owner = self.owner or "fake-uid demo/seed"

    def set_maintenance(self, path: str, *, drained: bool) -> float:
        self._call("set_maintenance")
        self.files[path] = ManagedFile(path, "1\n" if drained else "0\n")
        return self.clock

    def watch_vip(self, address: str, seconds: int) -> list[VipSample]:
        self._call("watch_vip")
        if not self.watches:
            held = any(vip.split("/")[0] == address for vip in self.vips)
            return [VipSample(int(self.clock * 1_000_000), held)]  # nothing moved within `seconds`
        return self.watches.pop(0)

    def read_files(self, paths: Sequence[str]) -> dict[str, str | None]:
        """As the agent's read-files: managed, world-readable files only (a key's content stays here)."""
        self._call("read_files")
        return {
            path: managed.content
            if path in self.manifest and (managed := self.files.get(path)) and managed.mode & 0o004
            else None
            for path in paths
        }

    def probe_backends(self, targets: Iterable[BackendTarget]) -> dict[BackendTarget, bool]:
        self._call("probe_backends")
        return {target: str(target) not in self.unreachable_backends for target in targets}

    def uninstall(self) -> None:
        self._call("uninstall")
        self.owner = ""
        for path in self.manifest:
            self.files.pop(path, None)
        self.manifest, self.live_hash = {}, ""
        self.services["keepalived"] = False
        self.vips.clear()  # a stopped keepalived releases its VIPs


@dataclass
class FakeNodes:
    """The NodeFactory of unit tests: hands out the scripted nodes by name (and address)."""

    nodes: dict[str, FakeNode]
    targets: list[SSHTarget] = field(default_factory=list)

    def node(self, target: SSHTarget, layout: NodeLayout) -> Node:
        """The node registered as "NAME@ADDRESS" (a machine that replaced another), else as NAME."""
        self.targets.append(target)
        return self.nodes.get(f"{target.name}@{target.address}") or self.nodes[target.name]

    def close_all(self) -> None:
        """Nothing to close."""
