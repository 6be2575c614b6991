"""The node agent's file handling (swap, restore, uninstall), run for real by sh on a temporary tree.

No services are involved: these commands only move files, so a directory under tmp_path stands in for /.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lbpair.model.files import ManagedFile
from lbpair.nodes.operations import AGENT_SCRIPT, build_bundle


class Node:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "var" / "lib" / "lbpair"

    def path(self, relative: str) -> str:
        return str(self.root / relative)

    def agent(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["sh", "-s", "--", *args],
            input=AGENT_SCRIPT,
            env={"LBPAIR_STATE": str(self.state), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
            capture_output=True,
            check=True,
        )

    def stage(self, files: dict[str, str]) -> None:
        """What push_bundle does on a node: the bundle unpacked into the stage directory."""
        stage = self.state / "stage"
        stage.mkdir(parents=True, exist_ok=True)
        bundle = build_bundle([ManagedFile(self.path(name), content) for name, content in files.items()])
        subprocess.run(["tar", "-x", "-C", str(stage)], input=bundle, check=True)

    def roll_out(self, files: dict[str, str]) -> None:
        self.stage(files)
        self.agent("swap")

    def read(self, relative: str) -> str | None:
        target = self.root / relative
        return target.read_text() if target.exists() else None


def test_swap_restore_and_uninstall_keep_the_nodes_own_files(tmp_path: Path) -> None:
    node = Node(tmp_path)
    (tmp_path / "etc" / "app").mkdir(parents=True)
    (tmp_path / "etc" / "app" / "a.conf").write_text("node's own a")
    (tmp_path / "etc" / "app" / "c.conf").write_text("node's own c")

    node.roll_out({"etc/app/a.conf": "a1"})
    node.roll_out({"etc/app/a.conf": "a2", "etc/app/b.conf": "b2"})
    assert (node.read("etc/app/a.conf"), node.read("etc/app/b.conf")) == ("a2", "b2")

    node.agent("restore")  # back to the last-known-good: before the latest swap
    assert (node.read("etc/app/a.conf"), node.read("etc/app/b.conf")) == ("a1", None)

    # c.conf is taken over only now, long after the first swap: it is still the node's own file.
    node.roll_out({"etc/app/a.conf": "a3", "etc/app/c.conf": "c3"})
    assert node.read("etc/app/c.conf") == "c3"
    node.agent("uninstall")

    assert node.read("etc/app/a.conf") == "node's own a"
    assert node.read("etc/app/b.conf") is None
    assert node.read("etc/app/c.conf") == "node's own c"
    assert not node.state.exists()


def test_files_the_new_config_drops_are_removed_and_no_temporary_files_remain(tmp_path: Path) -> None:
    node = Node(tmp_path)

    node.roll_out({"etc/app/a.conf": "a", "etc/app/old.conf": "old"})
    node.roll_out({"etc/app/a.conf": "a"})

    assert sorted(p.name for p in (tmp_path / "etc" / "app").iterdir()) == ["a.conf"]
    assert (node.state / "manifest").read_text().count("\n") == 1
