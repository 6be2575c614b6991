"""The agent's read-files, run for real by sh on a temporary tree (as in test_agent_script.py): what a
preview or `python -m lbpair diff --against-node` may read from a node, and what it never may."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lbpair.model.files import ManagedFile
from lbpair.nodes.client import CommandResult
from lbpair.nodes.operations import read_managed_files
from tests.unit.test_agent_script import PAIR_B, Node


@dataclass
class LocalClient:
    """A NodeClient running commands here, as the node's sshd would (state paths point into the tree)."""

    node: Node
    owner: str
    name: str = "local"

    def run(self, command: str, *, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        command = command.replace("LBPAIR_STATE=/var/lib/lbpair", f"LBPAIR_STATE={self.node.state}")
        result = self.node._run(command, stdin, check=False, timeout=timeout)
        return CommandResult(result.returncode, result.stdout.decode(), result.stderr.decode())

    def close(self) -> None:
        """Nothing to close."""


def test_read_files_shows_managed_readable_files_only(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.roll_out({"etc/app/a.conf": "line 1\nline 2\n", "etc/app/empty.conf": ""})
    key = ManagedFile(node.path("etc/app/site.key"), "-----BEGIN PRIVATE KEY-----\nsecret\n", 0o600)
    key_path = Path(key.path)
    key_path.write_text(key.content)
    key_path.chmod(0o600)
    (node.state / "manifest").write_text(node.manifest() + key.manifest_line)
    (tmp_path / "etc" / "app" / "own.conf").write_text("the node's own file\n")
    paths = [node.path(name) for name in ("etc/app/a.conf", "etc/app/empty.conf", "etc/app/own.conf")]

    # Another pair may read too (the command changes nothing): a diff of any node over SSH.
    read = read_managed_files(LocalClient(node, PAIR_B), [*paths, key.path, node.path("etc/app/gone.conf")])

    assert read == {
        paths[0]: "line 1\nline 2\n",
        paths[1]: "",
        paths[2]: None,  # not managed: not shown
        key.path: None,  # a secret: its content never leaves the node
        node.path("etc/app/gone.conf"): None,
    }
