"""What the rest of the operator needs from a node: run a command (stdin carries file bundles), close.

The paramiko adapter (ssh.py) is the production implementation; keeping this seam small lets the
orchestration be read (and unit-tested) without SSH in the picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol


class NodeError(Exception):
    """A node could not be reached or did not do what it was asked."""

    reason: ClassVar[str] = "NodeError"
    """The event reason the operator reports this error with."""


class NodeUnreachableError(NodeError):
    """No SSH session could be established (connect, handshake or authentication failed), or the
    connection broke or stalled past the command's deadline."""

    reason: ClassVar[str] = "NodeUnreachable"


class HostKeyMismatchError(NodeUnreachableError):
    """The node presented a host key other than the pinned one: refused, never trusted."""

    reason: ClassVar[str] = "HostKeyMismatch"


class InvalidHostKeyError(NodeError):
    """The pinned host key is not a usable OpenSSH public key line; no connection is attempted."""

    reason: ClassVar[str] = "InvalidHostKey"


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

    @property
    def name(self) -> str: ...

    def run(self, command: str, *, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        """Run a shell command (with sudo when the pair asks for it) and wait for it, at most `timeout`
        seconds in all; the command is not left running on the node when this raises."""
        ...

    def close(self) -> None: ...
