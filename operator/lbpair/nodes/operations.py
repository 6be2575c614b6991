"""What the operator does to a node, one SSH round trip each, built on the node agent (agent.sh).

`observe_*` read (after finishing any change an interrupted command left half done); `push_*`,
`roll_out`, `apply_*`, `restore_*` and `uninstall_*` change the node; `build_*` are pure. A rollout uses
`push_bundle` then `roll_out` (validate, swap, reload, verify, mark live and probe in one command); the
single steps (`validate_staged` for a candidate that is not to go live, `apply_staged`, `apply_reload`,
`restore_last_good`, `observe_served_hash`) stay for isolating refused objects and for driving a node by
hand (tests/e2e/test_node_agent.py).
"""

from __future__ import annotations

import base64
import io
import shlex
import tarfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import ClassVar

from lbpair.model.files import ManagedFile
from lbpair.nodes.client import CommandResult, NodeClient, NodeError
from lbpair.nodes.layout import NodeLayout
from lbpair.nodes.observe import NodeObservation, parse_probe, split_sections


def _script(*parts: str) -> bytes:
    return b"".join(resources.files("lbpair.nodes").joinpath(part).read_bytes() for part in parts)


# One script on stdin: owner.sh and journal.sh only define functions, agent.sh sets the state and runs the
# command. The staging command (not an agent command: its stdin is the bundle) starts with owner.sh too.
OWNER_SCRIPT = _script("owner.sh").decode()
AGENT_SCRIPT = _script("owner.sh", "journal.sh", "agent.sh")
DEFAULT_STATE_DIR = "/var/lib/lbpair"
PROBE_TIMEOUT_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 30.0
VALIDATE_TIMEOUT_SECONDS = 60.0
VALIDATION_REFUSED_STATUS = 65  # the agent's `validate`: nginx -t or keepalived -t said no
OWNED_ELSEWHERE_STATUS = 66  # owner.sh: the node belongs to another pair
ROLLED_BACK_STATUS = 67  # the agent's `activate`: the new config failed; the last-known-good is back
RESTORE_FAILED_STATUS = 68  # ... and putting the last-known-good back failed too
DEFAULT_NGINX_PID_FILES = {"nginx": "/run/nginx.pid"}


class ValidationFailedError(NodeError):
    """nginx -t or keepalived -t rejected the staged config; the message is the validator's output."""

    reason: ClassVar[str] = "Rejected"


class NodeRolledBackError(NodeError):
    """The new config went live on the node but failed there (a reload, nginx not serving it, keepalived
    not running); the node restored its last-known-good files and reloaded on them."""

    reason: ClassVar[str] = "RolledBack"


class NodeRestoreFailedError(NodeError):
    """The new config failed on the node and restoring the last-known-good files failed too."""

    reason: ClassVar[str] = "RestoreFailed"


class NodeOwnedElsewhereError(NodeError):
    """The node belongs to another LoadBalancerPair: the command was refused and nothing changed on it."""

    reason: ClassVar[str] = "NodeOwnedByAnotherPair"


def _lock_wait(timeout: float) -> str:
    """How long a command waits for the node's lock: a third of its time, so that a node busy with
    another command answers "busy" well before the command's own deadline kills it."""
    return f"{max(timeout / 3, 1.0):.1f}"


def build_agent_command(args: Iterable[str], timeout: float, state_dir: str = DEFAULT_STATE_DIR) -> str:
    """The shell line that runs the agent (its script on stdin) with `args`. The calling pair comes in
    $LBPAIR_OWNER, exported by its session (lbpair.nodes.node.PairSession)."""
    return (
        f"LBPAIR_STATE={shlex.quote(state_dir)} LBPAIR_LOCK_WAIT={_lock_wait(timeout)} sh -s -- "
        + " ".join(shlex.quote(arg) for arg in args)
    )


def build_staging_command(directories: Iterable[str] = (), state_dir: str = DEFAULT_STATE_DIR) -> str:
    """The shell script that unpacks a bundle (on stdin) into the stage.

    The bundle arrives on stdin, where the agent reads its own script, so this one command is not an agent
    command; it takes the agent's lock all the same, takes the node for the calling pair if it is free
    (refusing it when another pair has it), and unpacks beside the stage, renaming it into place only
    once complete (swap checks the staged files against their manifest too).
    """
    needed = " ".join(shlex.quote(directory) for directory in ["stage.new", *sorted(directories)])
    return (
        f"{OWNER_SCRIPT}LBPAIR_STATE={shlex.quote(state_dir)}\n"
        'mkdir -p -m 0700 "$LBPAIR_STATE" && cd "$LBPAIR_STATE" && exec 9>>lock && '
        f"flock -w {_lock_wait(COMMAND_TIMEOUT_SECONDS)} 9 && own claim && rm -rf stage.new && "
        f"mkdir -p {needed} && tar -x --no-same-owner -C stage.new && rm -rf stage && mv stage.new stage"
    )


def _agent(client: NodeClient, *args: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> CommandResult:
    return client.run(build_agent_command(args, timeout), stdin=AGENT_SCRIPT, timeout=timeout)


def _checked(result: CommandResult, what: str) -> CommandResult:
    if result.exit_status == OWNED_ELSEWHERE_STATUS:
        raise NodeOwnedElsewhereError(result.stderr.strip().removeprefix("lbpair agent: "))
    if not result.ok:
        detail = (result.stderr or result.stdout).strip()
        raise NodeError(f"{what} failed (exit {result.exit_status}): {detail}")
    return result


def build_bundle(files: Iterable[ManagedFile], staged: Collection[str] | None = None) -> bytes:
    """A tar of `files/<absolute path>` for the files whose path is in `staged` (all when None) plus the
    manifest of all of them, deterministic for identical input. The node's swap installs the staged files
    and requires every other path of the manifest to be live with its content already."""
    ordered = sorted(files, key=lambda managed: managed.path)
    manifest = "".join(managed.manifest_line for managed in ordered)
    shipped = [managed for managed in ordered if staged is None or managed.path in staged]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        entries = [(f"files{managed.path}", managed.content.encode(), managed.mode) for managed in shipped]
        entries.append(("manifest", manifest.encode(), 0o644))
        for name, content, mode in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def observe_node(client: NodeClient, units: tuple[str, str] = ("nginx", "keepalived")) -> NodeObservation:
    """Probe a node; `units` are the nginx and keepalived service names, reported as "nginx"/"keepalived".

    Like every agent command but served-hash, the probe first finishes or undoes a change to the live
    files that an earlier command left half done (an operator or node crash), so what it reports is
    always a complete file set.
    """
    # A probe takes ~50 ms; a short timeout notices a node that died under an open connection quickly.
    result = _agent(client, "probe", *units, timeout=PROBE_TIMEOUT_SECONDS)
    try:
        return parse_probe(_checked(result, "probe").stdout)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise NodeError(f"unreadable probe output: {error}") from error


def push_bundle(
    client: NodeClient,
    files: Iterable[ManagedFile],
    directories: Iterable[str] = (),
    staged: Collection[str] | None = None,
) -> None:
    """Stage the complete set `files` on the node, shipping only the files whose path is in `staged` (all
    when None: those that differ from the node's), and create `directories` the config needs (e.g. the
    cache root, which nginx will not create with its parents); nothing live changes."""
    command = build_staging_command(directories)
    bundle = build_bundle(files, staged)
    _checked(client.run(command, stdin=bundle, timeout=COMMAND_TIMEOUT_SECONDS), "staging files")


def validate_staged(client: NodeClient, config_paths: tuple[str, str], roots: Iterable[str]) -> None:
    """nginx -t and keepalived -t (on `config_paths`: nginx.conf, keepalived.conf) over the staged files."""
    result = _agent(client, "validate", *config_paths, *sorted(roots), timeout=VALIDATE_TIMEOUT_SECONDS)
    if result.exit_status == VALIDATION_REFUSED_STATUS:
        raise ValidationFailedError((result.stdout + result.stderr).strip())
    _checked(result, "validating the staged config")


def apply_staged(client: NodeClient) -> None:
    """Swap the staged files into place, keeping the replaced ones as the last-known-good backup.

    Journaled on the node: interrupted anywhere (a lost connection, the deadline, a crash), the next agent
    command leaves either the old or the new file set live, complete. A full disk fails it before any
    live file changes.
    """
    _checked(_agent(client, "swap"), "swapping config")


@dataclass(frozen=True)
class Activation:
    """What makes a node's new config live: the services to reload (those whose files changed), and what
    the node must show before it counts as live: nginx serving `nginx_hash`, keepalived running."""

    config_hash: str
    nginx_hash: str
    services: tuple[str, ...]
    verify_timeout: float
    swap: bool = True
    """Validate and swap the stage first; False: the files are live already, never verified."""


def build_roll_out_args(layout: NodeLayout, activation: Activation) -> list[str]:
    """The agent's `roll-out` (or, without a swap, `activate`) arguments."""
    activate = [
        activation.config_hash,
        activation.nginx_hash,
        str(layout.status_port),
        str(max(round(activation.verify_timeout * 1000), 0)),
        *layout.units,
        *build_reload_args(activation.services, {layout.nginx_service: layout.nginx_pid_path}),
    ]
    if not activation.swap:
        return ["activate", *activate]
    return ["roll-out", *layout.config_paths, " ".join(sorted(layout.roots)), *activate]


def roll_out(
    client: NodeClient, layout: NodeLayout, activation: Activation
) -> tuple[NodeObservation, dict[str, int]]:
    """The rest of a node's rollout after staging, in one round trip: validate the stage and swap it in
    (when `activation.swap`), reload, verify on the node, record it as live; returns the node as observed
    then and how long each step took there (ms). A refusal raises ValidationFailedError (nothing changed);
    a failure after the swap NodeRolledBackError or NodeRestoreFailedError (the node put its last-known-good
    files back itself, or tried to); any other NodeError means nothing live changed, or, when the node was
    lost, that the next probe tells (the journal leaves the old set or the new one, never a mix)."""
    timeout = VALIDATE_TIMEOUT_SECONDS + activation.verify_timeout
    result = _agent(client, *build_roll_out_args(layout, activation), timeout=timeout)
    detail = (result.stdout + result.stderr).strip()
    if result.exit_status == VALIDATION_REFUSED_STATUS:
        raise ValidationFailedError(detail)
    if result.exit_status in {ROLLED_BACK_STATUS, RESTORE_FAILED_STATUS}:
        lines = [line.removeprefix("lbpair agent: ") for line in result.stderr.strip().splitlines()]
        error = NodeRolledBackError if result.exit_status == ROLLED_BACK_STATUS else NodeRestoreFailedError
        raise error("; ".join(line for line in lines if line))
    stdout = _checked(result, "rolling out the staged config").stdout
    try:
        observation = parse_probe(stdout)
        timings = {step: int(ms) for step, ms in (line.split() for line in split_sections(stdout)["timings"])}
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise NodeError(f"unreadable rollout output: {error}") from error
    return observation, timings


def build_reload_args(services: Iterable[str], pid_files: Mapping[str, str]) -> list[str]:
    """The agent's `reload` arguments: `UNIT=PIDFILE` for a service reloaded by HUP of the process in its
    pid file (nginx), the plain unit name for one reloaded through systemctl (keepalived)."""
    return [f"{service}={pid_files[service]}" if service in pid_files else service for service in services]


def apply_reload(
    client: NodeClient, services: Iterable[str], pid_files: Mapping[str, str] = DEFAULT_NGINX_PID_FILES
) -> None:
    """Reload (or start) the services in the order given: nginx before keepalived, so a VIP never moves
    to a node whose nginx does not have the new config yet. nginx (the unit named in `pid_files`) is
    reloaded by HUP of its running master: the config was validated already, and `nginx -s reload`
    would parse all of it again before sending the same signal."""
    _checked(_agent(client, "reload", *build_reload_args(services, pid_files)), "reload")


def claim_node(client: NodeClient) -> None:
    """Take a node no pair has yet for the calling pair (staging does it too); refused if another has it."""
    _checked(_agent(client, "claim"), "claiming the node")


def restore_last_good(client: NodeClient) -> None:
    """Put back the files the latest swap replaced (journaled and idempotent: restoring twice is restoring
    once). Also right after a swap whose services were never verified, e.g. the operator stopped between
    swap and reload."""
    _checked(_agent(client, "restore"), "restoring last-known-good config")


def uninstall_managed(client: NodeClient, *units: str) -> None:
    """Put back the node's own files the operator replaced, remove the rest of what it wrote; with
    `units` (keepalived's and nginx's), stop keepalived and reload nginx on the node's own config."""
    _checked(_agent(client, "uninstall", *units), "uninstalling managed config")


def read_managed_files(client: NodeClient, paths: Iterable[str]) -> dict[str, str | None]:
    """The content of each of `paths` the operator manages on the node (its first MiB), by path; None for
    a path the node will not show: not managed, missing, or a secret (not world-readable)."""
    stdout = _checked(_agent(client, "read-files", *paths), "reading managed files").stdout
    contents: dict[str, str | None] = {}
    try:
        for line in stdout.splitlines():
            path, _, encoded = line.partition(" ")
            contents[path] = None if encoded == "-" else base64.b64decode(encoded, validate=True).decode()
    except (ValueError, UnicodeDecodeError) as error:
        raise NodeError(f"unreadable read-files output: {error}") from error
    return contents


def observe_served_hash(client: NodeClient, port: int) -> str:
    """The config hash the node's running nginx serves on its loopback status endpoint ('' if none)."""
    return _agent(client, "served-hash", str(port)).stdout.strip()
