"""What the operator does to a node, one SSH round trip each, built on the node agent (agent.sh).

`observe_*` only read; `push_*`, `apply_*` and `restore_*` change the node.
"""

from __future__ import annotations

import io
import shlex
import tarfile
from collections.abc import Iterable
from importlib import resources

from lbpair.model.files import ManagedFile
from lbpair.nodes.client import CommandResult, NodeClient, NodeError
from lbpair.nodes.observe import NodeObservation, parse_probe

AGENT_SCRIPT = resources.files("lbpair.nodes").joinpath("agent.sh").read_bytes()
DEFAULT_STATE_DIR = "/var/lib/lbpair"
PROBE_TIMEOUT_SECONDS = 5.0


class ValidationFailedError(NodeError):
    """nginx -t or keepalived -t rejected the staged config; the message is the validator's output."""


def _agent(
    client: NodeClient, *args: str, state_dir: str = DEFAULT_STATE_DIR, timeout: float = 30.0
) -> CommandResult:
    command = f"LBPAIR_STATE={shlex.quote(state_dir)} sh -s -- " + " ".join(shlex.quote(arg) for arg in args)
    return client.run(command, stdin=AGENT_SCRIPT, timeout=timeout)


def _checked(result: CommandResult, what: str) -> CommandResult:
    if not result.ok:
        detail = (result.stderr or result.stdout).strip()
        raise NodeError(f"{what} failed (exit {result.exit_status}): {detail}")
    return result


def build_bundle(files: Iterable[ManagedFile]) -> bytes:
    """A tar of `files/<absolute path>` plus the manifest, deterministic for identical input."""
    ordered = sorted(files, key=lambda managed: managed.path)
    manifest = "".join(managed.manifest_line for managed in ordered)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        entries = [(f"files{managed.path}", managed.content.encode(), managed.mode) for managed in ordered]
        entries.append(("manifest", manifest.encode(), 0o644))
        for name, content, mode in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def observe_node(
    client: NodeClient, units: tuple[str, str] = ("nginx", "keepalived"), state_dir: str = DEFAULT_STATE_DIR
) -> NodeObservation:
    """Probe a node; `units` are the nginx and keepalived service names, reported as "nginx"/"keepalived"."""
    # A probe takes ~50 ms; a short timeout notices a node that died under an open connection quickly.
    result = _agent(client, "probe", *units, state_dir=state_dir, timeout=PROBE_TIMEOUT_SECONDS)
    try:
        return parse_probe(_checked(result, "probe").stdout)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise NodeError(f"unreadable probe output: {error}") from error


def push_bundle(
    client: NodeClient,
    files: Iterable[ManagedFile],
    directories: Iterable[str] = (),
    state_dir: str = DEFAULT_STATE_DIR,
) -> None:
    """Stage the files on the node and create `directories` the config needs (e.g. the cache root, which
    nginx will not create with its parents); nothing live changes."""
    stage = shlex.quote(f"{state_dir}/stage")
    needed = " ".join(shlex.quote(directory) for directory in [f"{state_dir}/stage", *sorted(directories)])
    command = f"rm -rf {stage} && mkdir -p {needed} && tar -x --no-same-owner -C {stage}"
    _checked(client.run(command, stdin=build_bundle(files)), "staging files")


def validate_staged(
    client: NodeClient,
    config_paths: tuple[str, str],
    roots: Iterable[str],
    state_dir: str = DEFAULT_STATE_DIR,
) -> None:
    """nginx -t and keepalived -t (on `config_paths`: nginx.conf, keepalived.conf) over the staged files."""
    result = _agent(client, "validate", *config_paths, *sorted(roots), state_dir=state_dir, timeout=60.0)
    if not result.ok:
        raise ValidationFailedError((result.stdout + result.stderr).strip())


def apply_staged(client: NodeClient, state_dir: str = DEFAULT_STATE_DIR) -> None:
    """Swap the staged files into place, keeping the replaced ones as the last-known-good backup."""
    _checked(_agent(client, "swap", state_dir=state_dir), "swapping config")


def apply_reload(client: NodeClient, services: Iterable[str], state_dir: str = DEFAULT_STATE_DIR) -> None:
    """Reload (or start) the services in the order given: nginx before keepalived, so a VIP never moves
    to a node whose nginx does not have the new config yet."""
    _checked(_agent(client, "reload", *services, state_dir=state_dir), "reload")


def mark_live(client: NodeClient, config_hash: str, state_dir: str = DEFAULT_STATE_DIR) -> None:
    """Record on the node that its services run `config_hash` (after the operator verified it)."""
    _checked(_agent(client, "mark-live", config_hash, state_dir=state_dir), "recording the live config")


def apply_stop(client: NodeClient, services: Iterable[str], state_dir: str = DEFAULT_STATE_DIR) -> None:
    _checked(_agent(client, "stop", *sorted(services), state_dir=state_dir), "stop")


def restore_last_good(client: NodeClient, state_dir: str = DEFAULT_STATE_DIR) -> None:
    _checked(_agent(client, "restore", state_dir=state_dir), "restoring last-known-good config")


def uninstall_managed(client: NodeClient, state_dir: str = DEFAULT_STATE_DIR) -> None:
    """Put back the node's own files the operator replaced, remove the rest of what it wrote."""
    _checked(_agent(client, "uninstall", state_dir=state_dir), "uninstalling managed config")


def observe_served_hash(client: NodeClient, port: int, state_dir: str = DEFAULT_STATE_DIR) -> str:
    """The config hash the node's running nginx serves on its loopback status endpoint ('' if none)."""
    return _agent(client, "served-hash", str(port), state_dir=state_dir).stdout.strip()
