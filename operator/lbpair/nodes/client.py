"""What the rest of the operator needs from a node: run a command (stdin carries file bundles), close.

The paramiko adapter (ssh.py) is the production implementation; keeping this seam small lets the
orchestration be read (and unit-tested) without SSH in the picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class NodeError(Exception):
    """A node could not be reached or did not do what it was asked."""


class NodeUnreachableError(NodeError):
    """No SSH session could be established (connect, handshake or authentication failed)."""


class HostKeyMismatchError(NodeUnreachableError):
    """The node presented a host key other than the pinned one: refused, never trusted."""


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class NodeClient(Protocol):
    """One node reached over one persistent session."""

    name: str

    def run(self, command: str, *, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        """Run a shell command (with sudo when the pair asks for it) and wait for it."""
        ...

    def close(self) -> None: ...
