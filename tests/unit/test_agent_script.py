"""The node agent run for real by sh on a temporary tree, and broken on purpose.

No services are involved: the file commands only move files, so a directory under tmp_path stands in for
/. The agent runs exactly as the operator starts it (the command lines from lbpair.nodes), in a session
of its own as sshd runs it. To break it at a chosen instruction, shims for the file tools (cp, mv, rm,
mkdir, sync, touch, chmod) come first on PATH: they count their calls and SIGKILL the agent's whole
process group at the Nth one; the agent itself has no test hooks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lbpair.model.files import ManagedFile
from lbpair.nodes.observe import parse_probe
from lbpair.nodes.operations import AGENT_SCRIPT, build_agent_command, build_bundle, build_staging_command
from lbpair.nodes.ssh import bounded_command

SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
PAIR_A, PAIR_B = "uid-a team-a/pair", "uid-b team-b/pair"  # LBPAIR_OWNER, as a pair's session exports it
FILE_TOOLS = ("cp", "mv", "rm", "mkdir", "sync", "touch", "chmod")
ENOSPC_MESSAGE = "No space left on device"
ABORTED_MESSAGE = "failed before any live file changed; the config that was live is still live"

SHIM = """#!/bin/sh
# Test shim for {tool}: counts file operations; at the Nth, SIGKILLs the process group (the agent).
real=/usr/bin/{tool}
[ -n "${{SHIM_COUNTER:-}}" ] || exec "$real" "$@"
read -r n <"$SHIM_COUNTER"
n=$((n + 1))
echo "$n" >"$SHIM_COUNTER"
[ -z "${{SHIM_LOG:-}}" ] || echo "{tool} $*" >>"$SHIM_LOG"
if [ "$n" = "${{SHIM_KILL_AT:-0}}" ]; then
    case ${{SHIM_MODE:-before}} in
    after) "$real" "$@" ;;
    torn) # half of the source reaches the destination, as if the copy was cut off
        if [ {tool} = cp ]; then
            eval "src=\\${{$(($# - 1))}}" && eval "dst=\\${{$#}}"
            if [ -f "$src" ]; then head -c "$(( $(wc -c <"$src") / 2 ))" "$src" >"$dst" 2>/dev/null || :; fi
        fi ;;
    esac
    kill -s KILL 0
fi
exec "$real" "$@"
"""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Node:
    def __init__(self, root: Path, bin_dir: Path | None = None) -> None:
        self.root = root
        self.state = root / "var" / "lib" / "lbpair"
        self.bin_dir = bin_dir
        self.env: dict[str, str] = {}
        self.owner = PAIR_A  # the pair whose session runs the commands

    def path(self, relative: str) -> str:
        return str(self.root / relative)

    def _run(
        self, command: str, stdin: bytes, check: bool, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[bytes]:
        path = f"{self.bin_dir}:{SYSTEM_PATH}" if self.bin_dir else SYSTEM_PATH
        result = subprocess.run(
            ["sh", "-c", command],
            input=stdin,
            env={"PATH": path, "LBPAIR_OWNER": self.owner, **self.env},
            capture_output=True,
            start_new_session=True,  # as sshd runs a command; the shims kill this group
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{command} failed ({result.returncode}): {result.stderr.decode()}")
        return result

    def agent(
        self, *args: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[bytes]:
        command = build_agent_command(args, timeout, state_dir=str(self.state))
        return self._run(command, AGENT_SCRIPT, check)

    def managed(self, files: dict[str, str]) -> list[ManagedFile]:
        return [ManagedFile(self.path(name), content) for name, content in files.items()]

    def stage(self, files: dict[str, str], only: set[str] | None = None) -> None:
        """push_bundle's command line, with its bundle: the manifest of `files`, shipping those in `only`
        (relative names; all when None) as a rollout ships the ones that differ."""
        staged = None if only is None else {self.path(name) for name in only}
        bundle = build_bundle(self.managed(files), staged)
        self._run(build_staging_command(state_dir=str(self.state)), bundle, True)

    def roll_out(self, files: dict[str, str]) -> None:
        self.stage(files)
        self.agent("swap")

    def install(self, files: dict[str, str]) -> None:
        """The node as a completed swap of `files` leaves it (written directly: a first swap of thousands
        of files takes the agent tens of seconds, one process per file; the swaps after it are tested)."""
        for name, content in files.items():
            target = self.root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "manifest").write_text(self.manifest_of(files))
        (self.state / "original").mkdir(exist_ok=True)
        (self.state / "original" / "absent").write_text(
            "".join(f"{self.path(name)}\n" for name in sorted(files))
        )

    def read(self, relative: str) -> str | None:
        target = self.root / relative
        return target.read_text() if target.exists() else None

    def manifest(self) -> str:
        path = self.state / "manifest"
        return path.read_text() if path.exists() else ""

    def manifest_of(self, files: dict[str, str]) -> str:
        return "".join(managed.manifest_line for managed in sorted(self.managed(files), key=lambda f: f.path))


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
    node.agent("restore")  # restoring again changes nothing
    assert (node.read("etc/app/a.conf"), node.read("etc/app/b.conf")) == ("a1", None)
    assert node.manifest() == node.manifest_of({"etc/app/a.conf": "a1"})

    # c.conf is taken over only now, long after the first swap: it is still the node's own file.
    node.roll_out({"etc/app/a.conf": "a3", "etc/app/c.conf": "c3"})
    assert node.read("etc/app/c.conf") == "c3"
    node.agent("uninstall")

    assert node.read("etc/app/a.conf") == "node's own a"
    assert node.read("etc/app/b.conf") is None
    assert node.read("etc/app/c.conf") == "node's own c"
    assert not node.state.exists()


def test_a_node_one_pair_has_refuses_every_other_pairs_changes_until_that_pair_uninstalls(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path)
    node.roll_out({"etc/app/a.conf": "pair A's"})  # pair A stages first: the node is A's
    node.owner = PAIR_B
    bundle = build_bundle(node.managed({"etc/app/a.conf": "pair B's"}))

    staged = node._run(build_staging_command(state_dir=str(node.state)), bundle, check=False)
    refusals = [node.agent(command, check=False) for command in ("validate", "swap", "restore", "uninstall")]

    refused = "this node belongs to LoadBalancerPair team-a/pair (uid uid-a)"
    for result in [staged, *refusals]:
        assert (result.returncode, refused in result.stderr.decode()) == (66, True)
    assert node.read("etc/app/a.conf") == "pair A's"
    probe = parse_probe(node.agent("probe").stdout.decode())  # reading is not changing: answered
    assert probe.owner == PAIR_A

    node.owner = PAIR_A
    node.agent("uninstall")
    node.owner = PAIR_B
    node.roll_out({"etc/app/a.conf": "pair B's"})  # free again: B takes it
    assert node.read("etc/app/a.conf") == "pair B's"


def test_a_node_programmed_before_owners_is_claimed_by_its_pair_and_then_refuses_others(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path)
    node.roll_out({"etc/app/a.conf": "a"})
    (node.state / "owner").unlink()  # as the agent before owners left a node

    node.agent("claim")
    node.owner = PAIR_B
    refused = node.agent("claim", check=False)

    assert (node.state / "owner").read_text() == f"{PAIR_A}\n"
    assert refused.returncode == 66
    assert node.read("etc/app/a.conf") == "a"


def test_files_the_new_config_drops_are_removed_and_no_temporary_files_remain(tmp_path: Path) -> None:
    node = Node(tmp_path)

    node.roll_out({"etc/app/a.conf": "a", "etc/app/old.conf": "old"})
    node.roll_out({"etc/app/a.conf": "a"})

    assert sorted(p.name for p in (tmp_path / "etc" / "app").iterdir()) == ["a.conf"]
    assert (node.state / "manifest").read_text().count("\n") == 1
    assert sorted(p.name for p in node.state.iterdir()) == [
        "backup",
        "lock",
        "manifest",
        "original",
        "owner",
        "stage",
    ]


def test_swap_refuses_staged_files_that_do_not_match_their_manifest(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.roll_out({"etc/app/a.conf": "a1"})
    node.stage({"etc/app/a.conf": "a2"})
    (node.state / "stage" / "files" / node.path("etc/app/a.conf").lstrip("/")).write_text("a2, torn")

    result = node.agent("swap", check=False)

    assert result.returncode != 0
    assert b"do not match the staged manifest" in result.stderr
    assert node.read("etc/app/a.conf") == "a1"


def test_swap_refuses_a_path_that_is_neither_staged_nor_live_with_its_content(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.roll_out({"etc/app/a.conf": "a1", "etc/app/b.conf": "b1"})
    (tmp_path / "etc" / "app" / "b.conf").write_text("b1, edited by hand")  # after the operator looked
    node.stage({"etc/app/a.conf": "a2", "etc/app/b.conf": "b1"}, only={"etc/app/a.conf"})

    result = node.agent("swap", check=False)

    assert result.returncode != 0
    assert f"not live with the content the staged manifest names: {node.path('etc/app/b.conf')}".encode() in (
        result.stderr
    )
    assert node.read("etc/app/a.conf") == "a1"
    assert node.manifest() == node.manifest_of({"etc/app/a.conf": "a1", "etc/app/b.conf": "b1"})


def test_swap_refuses_a_staged_file_the_staged_manifest_does_not_list(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.roll_out({"etc/app/a.conf": "a1"})
    node.stage({"etc/app/a.conf": "a2"})
    extra = node.state / "stage" / "files" / node.path("etc/app/extra.conf").lstrip("/")
    extra.write_text("not in the manifest")

    result = node.agent("swap", check=False)

    assert result.returncode != 0
    assert b"is staged but not in the staged manifest" in result.stderr
    assert node.read("etc/app/a.conf") == "a1"
    assert node.read("etc/app/extra.conf") is None


def many(count: int) -> dict[str, str]:
    """`count` managed files, as many VirtualHosts render."""
    return {f"etc/app/hosts/vhost_{number:05}.conf": f"server {number}\n" for number in range(count)}


def test_a_one_file_change_among_5000_stages_backs_up_and_swaps_that_file_only(tmp_path: Path) -> None:
    node = Node(tmp_path)
    old = {**many(5000), "etc/app/gone.conf": "removed by the change"}
    node.install(old)
    new = {name: content for name, content in old.items() if name != "etc/app/gone.conf"}
    edited = "etc/app/hosts/vhost_02500.conf"
    new[edited] = "server 2500 edited\n"
    hosts = tmp_path / "etc" / "app" / "hosts"
    untouched = {
        entry.name: entry.stat().st_ino for entry in hosts.iterdir() if entry.name != "vhost_02500.conf"
    }

    node.stage(new, only={edited})
    staged = [p.relative_to(node.state / "stage" / "files") for p in (node.state / "stage").rglob("*.conf")]
    node.agent("swap")

    assert staged == [Path(node.path(edited).lstrip("/"))]
    assert node.manifest() == node.manifest_of(new)
    assert node.read(edited) == "server 2500 edited\n"
    assert node.read("etc/app/gone.conf") is None
    # Every other file is the very same inode: not rewritten, not renamed over.
    assert {
        entry.name: entry.stat().st_ino for entry in hosts.iterdir() if entry.name in untouched
    } == untouched
    backup = node.state / "backup"
    backed_up = sorted(
        str(p.relative_to(backup / "files")) for p in (backup / "files").rglob("*") if p.is_file()
    )
    assert backed_up == sorted(node.path(name).lstrip("/") for name in (edited, "etc/app/gone.conf"))
    assert (backup / "absent").read_text() == ""
    assert (backup / "manifest").read_text() == node.manifest_of(old)  # the complete previous manifest

    node.agent("restore")

    assert node.manifest() == node.manifest_of(old)
    assert {name: node.read(name) for name in (edited, "etc/app/gone.conf")} == {
        edited: "server 2500\n",
        "etc/app/gone.conf": "removed by the change",
    }


def test_a_one_file_swap_makes_as_many_file_operations_at_5000_files_as_at_5(
    tmp_path: Path, shims: Path
) -> None:
    operations = {}
    for count in (5, 5000):
        files = {**many(count), "etc/app/a.conf": "a1"}
        change = {"etc/app/hosts/vhost_00002.conf": "server 2 edited\n"}
        node_snapshot = snapshot(
            tmp_path / str(count), shims, files, stage={**files, **change}, only=set(change), installed=True
        )
        operations[count] = [line.split()[0] for line in node_snapshot.count_operations("swap")]

    assert operations[5000] == operations[5]
    assert len(operations[5]) < 40


FAKE_NGINX = """#!/bin/sh
# nginx -T -q -c CONF stand-in: prints every file it sees beside CONF (on stderr, as nginx's messages), then
# refuses (so validate exits 65).
cd "${4%/*}" && find . -type f | sort | while read -r f; do printf '%s=%s\\n' "$f" "$(cat "$f")"; done >&2
exit 1
"""
NO_OVERLAY_MOUNT = """#!/bin/sh
# mount stand-in for a kernel without overlayfs.
case " $* " in *" -t overlay "*) echo "mount: unknown filesystem type 'overlay'" >&2; exit 32 ;; esac
exec /usr/bin/mount "$@"
"""


@pytest.mark.parametrize("overlayfs", [True, False], ids=["overlay", "copy-without-overlayfs"])
def test_validate_shows_the_validators_the_new_set_at_its_real_paths_and_changes_nothing_live(
    tmp_path: Path, overlayfs: bool
) -> None:
    if os.geteuid() != 0:
        pytest.fail("a private mount namespace needs root (CI runs as root)", pytrace=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {"nginx": FAKE_NGINX, **({} if overlayfs else {"mount": NO_OVERLAY_MOUNT})}
    for name, script in stand_ins.items():
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    node = Node(tmp_path / "node", bin_dir)
    (node.root / "etc" / "app").mkdir(parents=True)
    (node.root / "etc" / "app" / "own.conf").write_text("node's own")
    old = {"etc/app/nginx.conf": "n1", "etc/app/sub/gone.conf": "g1", "etc/app/same.conf": "s1"}
    node.roll_out(old)
    new = {"etc/app/nginx.conf": "n2", "etc/app/same.conf": "s1", "etc/app/sub/added.conf": "a2"}
    node.stage(new, only={"etc/app/nginx.conf", "etc/app/sub/added.conf"})

    result = node.agent(
        "validate", node.path("etc/app/nginx.conf"), "/nonexistent", node.path("etc/app"), check=False
    )

    assert result.returncode == 65, result.stderr.decode()
    assert result.stdout.decode().splitlines() == [
        "./nginx.conf=n2",
        "./own.conf=node's own",
        "./same.conf=s1",
        "./sub/added.conf=a2",
    ]
    assert {name: node.read(name) for name in [*old, *new]} == {**old, "etc/app/sub/added.conf": None}
    assert not (node.state / "stage" / "view").exists()
    assert "lbpair-validate" not in Path("/proc/self/mountinfo").read_text()


def test_nginx_is_reloaded_by_hup_of_its_master_and_started_by_its_unit_when_not_running(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls, hups, pid_file = tmp_path / "systemctl.log", tmp_path / "hups", tmp_path / "nginx.pid"
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\necho "$*" >>{calls}\ncase $1 in is-active) exit 3 ;; esac\n'
    )
    # An "nginx" master (its /proc/PID/comm is the script's name) that counts the HUPs it gets.
    # It says when its trap is set: a HUP before that would kill it instead of being counted.
    ready = tmp_path / "ready"
    (bin_dir / "nginx").write_text(
        f"#!/bin/sh\ntrap 'echo hup >>{hups}' HUP\n: >{ready}\nwhile :; do sleep 0.05; done\n"
    )
    for name in ("systemctl", "nginx"):
        (bin_dir / name).chmod(0o755)
    node = Node(tmp_path / "node", bin_dir)
    master = subprocess.Popen([str(bin_dir / "nginx")], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        pid_file.write_text(f"{master.pid}\n")
        node.agent("reload", f"nginx={pid_file}")
        deadline = time.monotonic() + 5
        while not (hups.exists() and hups.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)  # the file exists a moment before the trap's echo has written to it
        assert hups.read_text() == "hup\n"
        assert not calls.exists()  # no systemctl, no `nginx -s reload`
    finally:
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()

    node.agent("reload", f"nginx={pid_file}", "keepalived")  # the pid file names a dead process now

    assert calls.read_text().splitlines() == [
        "is-active nginx",
        "start nginx",
        "is-active keepalived",
        "start keepalived",
    ]


# -- interrupted at every step --

OWN = {"etc/app/own.conf": "node's own"}
OLD = {"etc/app/a.conf": "a1", "etc/app/old.conf": "old", "etc/app/same.conf": "same"}
NEW = {
    "etc/app/a.conf": "a2",
    "etc/app/b.conf": "b2",
    "etc/app/own.conf": "own, from B",
    "etc/app/same.conf": "same",
    "etc/app/sub/c.conf": "c2",
}
CHANGED = {name for name in NEW if NEW[name] != OLD.get(name)}  # what a rollout ships: all but same.conf


@pytest.fixture
def shims(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "shims"
    bin_dir.mkdir()
    for tool in FILE_TOOLS:
        shim = bin_dir / tool
        shim.write_text(SHIM.format(tool=tool))
        shim.chmod(0o755)
    return bin_dir


def live_set(node: Node) -> dict[str, str | None]:
    paths = {*OWN, *OLD, *NEW}
    return {path: node.read(path) for path in sorted(paths)}


def expected(files: dict[str, str]) -> dict[str, str | None]:
    """What the tree holds with `files` live: the node's own file wherever the config does not manage it."""
    return {path: files.get(path, OWN.get(path)) for path in sorted({*OWN, *OLD, *NEW})}


def assert_converged(node: Node) -> str:
    """The live files are exactly OLD or exactly NEW, manifest and hashes agreeing; returns which."""
    leftovers = [str(p) for p in node.root.rglob("*.lbpair-new")]
    leftovers += [
        name for name in ("txn", "txn.new", "txn.done", "backup.old") if (node.state / name).exists()
    ]
    assert not leftovers
    manifest = node.manifest()
    for line in manifest.splitlines():
        _, digest, path = line.split(" ", 2)
        assert sha256(Path(path).read_text()) == digest, path
    if manifest == node.manifest_of(OLD):
        assert live_set(node) == expected(OLD)
        return "old"
    assert manifest == node.manifest_of(NEW)
    assert live_set(node) == expected(NEW)
    return "new"


@dataclass(frozen=True)
class Snapshot:
    """The node tree before the operation under test, put back before each interrupted run."""

    node: Node
    saved: Path
    shims: Path

    def reset(self) -> None:
        shutil.rmtree(self.node.root)
        shutil.copytree(self.saved, self.node.root, symlinks=True)

    def count_operations(self, *args: str) -> list[str]:
        """Runs the operation once, uninterrupted, and returns the file operations it makes."""
        self.reset()
        log = self.saved.parent / "operations.log"
        log.unlink(missing_ok=True)
        self.node.env = {"SHIM_COUNTER": str(self.saved.parent / "counter"), "SHIM_LOG": str(log)}
        (self.saved.parent / "counter").write_text("0")
        self.node.bin_dir = self.shims
        self.node.agent(*args)
        self.node.env, self.node.bin_dir = {}, None
        return log.read_text().splitlines()

    def interrupt(self, *args: str, at: int, mode: str) -> None:
        self.reset()
        (self.saved.parent / "counter").write_text("0")
        self.node.env = {
            "SHIM_COUNTER": str(self.saved.parent / "counter"),
            "SHIM_KILL_AT": str(at),
            "SHIM_MODE": mode,
        }
        self.node.bin_dir = self.shims
        result = self.node.agent(*args, check=False)
        self.node.env, self.node.bin_dir = {}, None
        assert result.returncode == -signal.SIGKILL, result.stderr.decode()


def snapshot(
    tmp_path: Path,
    shims: Path,
    *rollouts: dict[str, str],
    stage: dict[str, str] | None,
    only: set[str] | None = None,
    installed: bool = False,
) -> Snapshot:
    node = Node(tmp_path / "node")
    (node.root / "etc" / "app").mkdir(parents=True)
    for name, content in OWN.items():
        (node.root / name).write_text(content)
    for files in rollouts:
        if installed:
            node.install(files)
        else:
            node.roll_out(files)
        node.agent("mark-live", "hash-" + files["etc/app/a.conf"])
    if stage is not None:
        node.stage(stage, only)
    saved = tmp_path / "saved"
    shutil.copytree(node.root, saved, symlinks=True)
    return Snapshot(node, saved, shims)


def cases(operations: list[str]) -> Iterator[tuple[int, str]]:
    """Killed before each operation, after the last, and half-way through each copy."""
    for number, operation in enumerate(operations, start=1):
        yield number, "before"
        if operation.startswith("cp "):
            yield number, "torn"
    yield len(operations), "after"


@pytest.mark.parametrize("only", [None, CHANGED], ids=["every-file-staged", "changed-files-staged"])
def test_a_swap_killed_at_any_step_leaves_the_old_or_the_new_files_once_recovered(
    tmp_path: Path, shims: Path, only: set[str] | None
) -> None:
    node_snapshot = snapshot(tmp_path, shims, OLD, stage=NEW, only=only)
    node = node_snapshot.node
    operations = node_snapshot.count_operations("swap")
    assert len(operations) > 20
    outcomes = set()

    for at, mode in cases(operations):
        node_snapshot.interrupt("swap", at=at, mode=mode)
        node.agent("recover")
        outcome = assert_converged(node)
        outcomes.add(outcome)
        if outcome == "new":
            assert not (node.state / "live").exists()  # never verified live
        else:
            assert (node.state / "live").read_text() == "hash-a1\n" or not (node.state / "live").exists()
            node.roll_out(NEW)  # the swap goes through now
            assert assert_converged(node) == "new"
        # The backup is the old set, whole: restoring brings it back, and the node's own file
        # (kept at the interrupted swap's first take-over of own.conf) comes back on uninstall.
        node.agent("restore")
        assert assert_converged(node) == "old", (at, mode)
        node.agent("uninstall")
        assert live_set(node) == expected({}), (at, mode)
        assert not node.state.exists()

    assert outcomes == {"old", "new"}


def test_a_restore_killed_at_any_step_leaves_the_old_or_the_new_files_once_recovered(
    tmp_path: Path, shims: Path
) -> None:
    node_snapshot = snapshot(tmp_path, shims, OLD, NEW, stage=None)
    node = node_snapshot.node
    operations = node_snapshot.count_operations("restore")
    outcomes = set()

    for at, mode in cases(operations):
        node_snapshot.interrupt("restore", at=at, mode=mode)
        node.agent("recover")
        outcomes.add(assert_converged(node))  # "old" is restored, "new" not yet
        node.agent("restore")  # restoring (again) ends on the old files either way
        assert assert_converged(node) == "old", (at, mode)
        node.agent("uninstall")
        assert live_set(node) == expected({}), (at, mode)

    assert outcomes == {"old", "new"}


def test_an_uninstall_killed_at_any_step_finishes_when_run_again(tmp_path: Path, shims: Path) -> None:
    node_snapshot = snapshot(tmp_path, shims, OLD, NEW, stage=None)
    node = node_snapshot.node
    operations = node_snapshot.count_operations("uninstall")

    for at, mode in cases(operations):
        node_snapshot.interrupt("uninstall", at=at, mode=mode)
        node.agent("uninstall")
        assert live_set(node) == expected({}), (at, mode)
        assert not list(node.root.rglob("*.lbpair-new"))
        assert not node.state.exists()


# -- a full disk --


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (CI runs as root)", pytrace=False)
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "lbpair-test", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` up to `leave` bytes free."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(stats.f_bavail * stats.f_frsize - leave, 0))
    return filler


@pytest.mark.parametrize("only", [None, CHANGED], ids=["every-file-staged", "changed-files-staged"])
def test_a_full_disk_at_any_step_of_a_swap_keeps_the_live_config_and_says_why(
    small_disk: Path, only: set[str] | None
) -> None:
    big_old = {name: content * 20000 for name, content in OLD.items()}
    big_new = {name: content * 20000 for name, content in NEW.items()}
    failures, successes = set(), 0

    for leave in range(0, 960 * 1024, 24 * 1024):
        for entry in small_disk.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        node = Node(small_disk / "node")
        (node.root / "etc" / "app").mkdir(parents=True)
        (node.root / "etc" / "app" / "own.conf").write_text("node's own" * 10000)
        node.roll_out(big_old)
        node.agent("mark-live", "hash-old")
        node.stage(big_new, only)
        filler = fill(small_disk, leave)

        result = node.agent("swap", check=False)

        if result.returncode == 0:
            successes += 1
            assert node.manifest() == node.manifest_of(big_new)
            continue
        stderr = result.stderr.decode()
        assert ENOSPC_MESSAGE in stderr, stderr
        assert ABORTED_MESSAGE in stderr, stderr
        failures.add(stderr.splitlines()[0])
        assert node.manifest() == node.manifest_of(big_old)
        assert {name: node.read(name) for name in big_old} == big_old
        assert node.read("etc/app/b.conf") is None
        assert (node.state / "live").read_text() == "hash-old\n"
        assert not list(node.root.rglob("*.lbpair-new"))
        assert not (node.state / "txn.new").exists()
        filler.unlink()
        node.agent("swap")  # with room again, the same staged files go live
        assert node.manifest() == node.manifest_of(big_new)
        assert {name: node.read(name) for name in big_new} == big_new

    assert len(failures) >= 3, failures  # it ran out of space at several different steps
    assert successes >= 1


def test_a_full_disk_during_a_restore_leaves_the_files_as_they_were_and_says_why(small_disk: Path) -> None:
    node = Node(small_disk / "node")
    node.roll_out({name: content * 20000 for name, content in OLD.items()})
    node.roll_out(NEW)
    filler = fill(small_disk, 0)

    result = node.agent("restore", check=False)

    assert result.returncode != 0
    assert ENOSPC_MESSAGE in result.stderr.decode()
    assert ABORTED_MESSAGE in result.stderr.decode()
    assert node.manifest() == node.manifest_of(NEW)
    assert {name: node.read(name) for name in NEW} == NEW
    filler.unlink()
    node.agent("restore")
    assert node.read("etc/app/a.conf") == "a1" * 20000


# -- one command at a time, none for longer than its time --


def test_agent_commands_on_a_node_run_one_at_a_time(tmp_path: Path, shims: Path) -> None:
    node = Node(tmp_path / "node", shims)
    node.roll_out(OLD)
    node.stage(NEW)
    log = tmp_path / "operations.log"
    slow_sync = shims / "sync"
    slow_sync.write_text(f'#!/bin/sh\necho "$SHIM_TAG sync" >>{log}\nsleep 0.2\nexec /usr/bin/sync "$@"\n')
    path = f"{shims}:{SYSTEM_PATH}"

    def start(tag: str, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["sh", "-c", build_agent_command(args, 30, state_dir=str(node.state))],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={
                "PATH": path,
                "SHIM_TAG": tag,
                "SHIM_COUNTER": str(tmp_path / "counter"),
                "LBPAIR_OWNER": PAIR_A,
            },
            start_new_session=True,
        )
        assert process.stdin is not None
        process.stdin.write(AGENT_SCRIPT)
        process.stdin.close()
        return process

    swap = start("swap", "swap")
    while not log.exists():
        time.sleep(0.01)
    restore = start("restore", "restore")
    assert swap.wait(30) == 0
    assert restore.wait(30) == 0

    tags = [line.split()[0] for line in log.read_text().splitlines()]
    assert tags == sorted(tags, key=["swap", "restore"].index)  # no interleaving
    assert {"swap", "restore"} <= set(tags)
    assert node.manifest() == node.manifest_of(OLD)  # the restore came after the swap


def test_a_node_busy_past_the_lock_wait_says_so(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.roll_out(OLD)
    holder = subprocess.Popen(["flock", str(node.state / "lock"), "sleep", "30"], start_new_session=True)
    try:
        while subprocess.run(["flock", "-n", str(node.state / "lock"), "true"], check=False).returncode == 0:
            time.sleep(0.01)
        started = time.monotonic()
        result = node.agent("probe", "nginx", "keepalived", check=False, timeout=3.0)  # waits 1 s
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and the sleep holding the lock
        holder.wait()

    assert result.returncode == 75
    assert b"node busy" in result.stderr
    assert time.monotonic() - started < 2.5


def test_a_daemon_the_agent_starts_does_not_hold_the_lock(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pid_file = tmp_path / "daemon.pid"
    systemctl = bin_dir / "systemctl"
    # A stand-in that starts a "daemon" keeping every descriptor it inherits (as the lab's does).
    systemctl.write_text(
        f"#!/bin/sh\ncase $1 in is-active) exit 3 ;; esac\n"
        f"setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! >{pid_file}\n"
    )
    systemctl.chmod(0o755)
    node = Node(tmp_path / "node", bin_dir)
    try:
        node.agent("reload", "nginx")
        node.agent("recover", timeout=5.0)  # "node busy" after 1.7 s if the daemon held the lock
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_command_past_its_time_is_killed_with_its_children(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pids = tmp_path / "pids"
    systemctl = bin_dir / "systemctl"
    # A reload that hangs, with a child in the background and one in the foreground.
    systemctl.write_text(
        f"#!/bin/sh\ncase $1 in is-active) exit 0 ;; esac\n"
        f"sleep 300 & echo $! >>{pids}\nsh -c 'echo $$ >>{pids}; exec sleep 300'\n"
    )
    systemctl.chmod(0o755)
    node = Node(tmp_path / "node", bin_dir)
    command = bounded_command(build_agent_command(["reload", "nginx"], 30, state_dir=str(node.state)), 1.0)
    started = time.monotonic()

    result = node._run(command, AGENT_SCRIPT, check=False, timeout=10)

    assert time.monotonic() - started < 3.0
    assert result.returncode == 124
    assert result.stderr.decode().startswith("lbpair-pgid ")
    children = [int(pid) for pid in pids.read_text().split()]
    assert len(children) == 2
    deadline = time.monotonic() + 2
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in children if alive(pid)]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


# -- the VRRP dump: read only what keepalived (root) wrote after the probe's signal --

FAKE_KEEPALIVED = """#!/bin/sh
# Stands in for keepalived: on USR1 writes its JSON dump the way $DUMP_MODE says.
dump='[{"data":{"iname":"VI_1","state":2,"effective_priority":150},"stats":{}}]'
forged='[{"data":{"iname":"VI_1","state":2,"effective_priority":255},"stats":{}}]'
write() {
    target=/tmp/keepalived.json
    case $DUMP_MODE in
    keepalived) printf '%s' "$dump" >$target.new && mv $target.new $target ;;
    foreign) printf '%s' "$forged" >/tmp/forged && chown 65534 /tmp/forged && mv /tmp/forged $target ;;
    symlink) printf '%s' "$forged" >/tmp/forged && ln -s /tmp/forged $target ;;
    hardlink) printf '%s' "$forged" >/tmp/forged && ln /tmp/forged $target ;;
    silent) ;;
    esac
}
trap write USR1
echo $$ >/run/keepalived.pid
while :; do sleep 0.01; done
"""

PROBE_IN_NAMESPACE = """
set -e
# A private /run and /tmp, with the test's directory still in reach.
mount -t tmpfs lbpair-run /run
mkdir /run/work
mount --bind "$WORK" /run/work
mount -t tmpfs lbpair-tmp /tmp
if [ "$DUMP_MODE" = silent ]; then  # a stale dump, root's own, left from an earlier signal
    printf '[{"data":{"iname":"VI_1","state":1,"effective_priority":100}}]' >/tmp/keepalived.json
fi
sh /run/work/keepalived-daemon &
daemon=$!
while [ ! -s /run/keepalived.pid ]; do sleep 0.01; done
status=0
export LBPAIR_STATE=/run/work/state PATH=/run/work/bin:$PATH
sh -s -- probe nginx keepalived </run/work/agent.sh || status=$?
kill "$daemon"
exit "$status"
"""


@pytest.mark.parametrize(
    ("mode", "trusted"),
    [("keepalived", True), ("foreign", False), ("symlink", False), ("hardlink", False), ("silent", False)],
)
def test_probe_reads_only_a_dump_keepalived_wrote_after_the_signal(
    tmp_path: Path, mode: str, trusted: bool
) -> None:
    if os.geteuid() != 0:
        pytest.fail("a private mount namespace needs root (CI runs as root)", pytrace=False)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "keepalived").write_text("#!/bin/sh\necho USR1\n")  # --signum=JSON
    (tmp_path / "bin" / "keepalived").chmod(0o755)
    (tmp_path / "keepalived-daemon").write_text(FAKE_KEEPALIVED)
    (tmp_path / "agent.sh").write_bytes(AGENT_SCRIPT)

    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", PROBE_IN_NAMESPACE],
        env={"PATH": SYSTEM_PATH, "WORK": str(tmp_path), "DUMP_MODE": mode},
        capture_output=True,
        start_new_session=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr.decode()
    vrrp = parse_probe(result.stdout.decode()).vrrp
    if trusted:
        assert [(i.name, i.state, i.effective_priority) for i in vrrp] == [("VI_1", "MASTER", 150)]
        assert (tmp_path / "state" / "vrrp").stat().st_mode & 0o777 == 0o700
    else:
        assert vrrp == ()
        if mode != "silent":
            assert b"ignoring /tmp/keepalived.json" in result.stderr
