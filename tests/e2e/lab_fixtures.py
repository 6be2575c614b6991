"""pytest fixtures and SSH helpers for tests that run against the network-namespace lab.

Load them from a conftest.py with `pytest_plugins = ["tests.e2e.lab_fixtures"]`. Fixtures: `lab` (the
running Lab) and `node_shell` (factory of open SSH connections to LB nodes).

`lab` is session-scoped: one freshly built lab for the whole run, always torn down at the end. Tests that
inject faults must undo them (in `finally`) so later tests find the lab in its planned state.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from testbed.addressing import SSH_PORT
from testbed.lab import Lab


def require_root() -> None:
    """Fail, never skip: CI runs the lab tests as root, so a skip there would hide a feature nobody tested."""
    if os.geteuid() != 0:
        pytest.fail(
            "the network-namespace lab needs root: run the e2e tests as root (as CI does), or deselect the "
            "lab tests explicitly",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A freshly built lab (anything left by an earlier run is removed first), torn down afterwards."""
    require_root()
    running_lab = Lab.up(reuse=False)
    try:
        yield running_lab
    finally:
        running_lab.down()


def connect_ssh(
    address: str, *, key_path: Path, known_hosts_path: Path, timeout: float = 5.0
) -> paramiko.SSHClient:
    """Log in as root with the lab's client key, accepting only the host key pinned in known_hosts."""
    sock = socket.create_connection((address, SSH_PORT), timeout=timeout)
    # Without it every small SSH packet waits for Nagle + delayed ACK: ~48 ms per command instead of ~5.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts_path))
    # Never trust on first use: an unknown or different host key is an error.
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            address,
            port=SSH_PORT,
            username="root",
            key_filename=str(key_path),
            sock=sock,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except BaseException:
        client.close()
        sock.close()
        raise
    return client


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class NodeShell:
    """An open SSH connection to one LB node, as the operator would hold it."""

    def __init__(self, node: str, client: paramiko.SSHClient) -> None:
        self.node = node
        self.client = client

    def run(self, command: str, *, check: bool = True, timeout: float = 30.0) -> CommandResult:
        _stdin, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        result = CommandResult(
            exit_status=stdout.channel.recv_exit_status(),
            stdout=stdout.read().decode(),
            stderr=stderr.read().decode(),
        )
        if check and result.exit_status != 0:
            raise AssertionError(
                f"{self.node}: {command!r} exited {result.exit_status}: {result.stderr.strip()}"
            )
        return result

    def write_file(self, path: str, content: str) -> None:
        with self.client.open_sftp() as sftp, sftp.open(path, "w") as remote_file:
            remote_file.write(content)

    def remove_file(self, path: str) -> None:
        with self.client.open_sftp() as sftp:
            try:
                sftp.remove(path)
            except FileNotFoundError:
                return


def open_node_shell(lab: Lab, node: str, timeout: float = 5.0) -> NodeShell:
    client = connect_ssh(
        str(lab.mgmt_address(node)),
        key_path=lab.ssh_key_path,
        known_hosts_path=lab.known_hosts_path,
        timeout=timeout,
    )
    return NodeShell(node, client)


@pytest.fixture
def node_shell(lab: Lab) -> Iterator[Callable[[str], NodeShell]]:
    """Factory: node_shell("lb1") opens (once per test) an SSH connection; all are closed afterwards."""
    shells: dict[str, NodeShell] = {}

    def shell_for(node: str) -> NodeShell:
        if node not in shells:
            shells[node] = open_node_shell(lab, node)
        return shells[node]

    try:
        yield shell_for
    finally:
        for shell in shells.values():
            shell.client.close()
