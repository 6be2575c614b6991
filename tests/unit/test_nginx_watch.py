"""The nginx watcher as it runs on a node: the rendered program and config, started the way the check
script starts it, against a stand-in "nginx" (a process named nginx holding a listening socket on
loopback). What is asserted is what keepalived and the probe read: the track file and the status file.

The waits poll for an outcome with a bound; nothing here measures time (bench/ does).
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lbpair.build.keepalived import WATCH_STATE_DIRECTORY, nginx_watch
from lbpair.model.pair import PairSpec
from lbpair.nodes.observe import NginxWatchState, parse_nginx_watch, parse_probe
from lbpair.render import render_nginx_watch
from lbpair.render.keepalived_model import NginxWatch, WatchedListener
from tests.unit.samples import sample

# A process whose /proc/PID/comm is "nginx", holding a listener until told to close it (SIGUSR1) or killed.
FAKE_NGINX = """
import ctypes, signal, socket, sys, time
ctypes.CDLL(None).prctl(15, b"nginx", 0, 0, 0)  # PR_SET_NAME
listener = socket.create_server(("127.0.0.1", 0))
signal.signal(signal.SIGUSR1, lambda *_: listener.close())
print(listener.getsockname()[1], flush=True)
while True:
    time.sleep(1)
"""


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


@dataclass
class Node:
    root: Path
    nginx: subprocess.Popen[str]
    port: int
    watcher: subprocess.Popen[bytes]

    @property
    def track(self) -> str:
        path = self.root / "track"
        return path.read_text().strip() if path.exists() else ""

    def status(self) -> list[str]:
        path = self.root / "state" / "status"
        return path.read_text().split() if path.exists() else []

    def reads(self, track: str) -> bool:
        """The track file says `track` and the status file, written right after it, agrees."""
        status = self.status()
        return self.track == track and len(status) == 4 and status[2] == ("up" if track == "0" else "down")


def start_nginx(root: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, "-c", FAKE_NGINX], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    (root / "nginx.pid").write_text(f"{process.pid}\n")
    return process, port


def install(root: Path, port: int, interval_milliseconds: int = 20) -> NginxWatch:
    watch = NginxWatch(
        program_path=str(root / "lbpair-nginx-watch"),
        config_path=str(root / "lbpair-nginx-watch.json"),
        state_dir=str(root / "state"),
        track_file=str(root / "track"),
        nginx_pid_path=str(root / "nginx.pid"),
        listeners=[WatchedListener("127.0.0.1", port)],
        interval_milliseconds=interval_milliseconds,
    )
    for file in render_nginx_watch(watch):
        Path(file.path).write_text(file.content)
        Path(file.path).chmod(file.mode)
    return watch


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    nginx, port = start_nginx(tmp_path)
    install(tmp_path, port)
    watcher = subprocess.Popen(
        ["python3", str(tmp_path / "lbpair-nginx-watch"), str(tmp_path / "lbpair-nginx-watch.json")],
        start_new_session=True,
    )
    try:
        yield Node(tmp_path, nginx, port, watcher)
    finally:
        for process in (watcher, nginx):
            process.kill()
            process.wait(timeout=10)


def test_serving_nginx_reads_0_and_the_status_names_the_files_it_runs(node: Node) -> None:
    wait_until(lambda: node.reads("0"), "track file 0")

    pid, files_hash, verdict, _since = node.status()
    program = (node.root / "lbpair-nginx-watch").read_bytes()
    config = (node.root / "lbpair-nginx-watch.json").read_bytes()
    assert verdict == "up"
    assert int(pid) > 0
    assert files_hash == hashlib.sha256(program + config).hexdigest()


def test_a_killed_master_reads_1_and_a_new_master_reads_0_again(node: Node) -> None:
    wait_until(lambda: node.reads("0"), "track file 0")

    node.nginx.send_signal(signal.SIGKILL)
    node.nginx.wait(timeout=10)
    wait_until(lambda: node.reads("1"), "track file 1 after the kill")
    assert node.status()[2] == "down"

    node.nginx, port = start_nginx(node.root)
    install(node.root, port)  # the new master listens elsewhere: the config follows (and is re-read)
    wait_until(lambda: node.track == "0", "track file 0 with the new master")


def test_a_master_that_stops_accepting_reads_1(node: Node) -> None:
    wait_until(lambda: node.reads("0"), "track file 0")

    node.nginx.send_signal(signal.SIGUSR1)  # closes its listener, as a graceful stop does first

    wait_until(lambda: node.track == "1", "track file 1 with the listener closed")
    assert node.nginx.poll() is None  # the process still runs: only the connect check saw it


def test_an_update_is_taken_in_place_and_removal_stops_the_watcher(node: Node) -> None:
    wait_until(lambda: node.reads("0"), "track file 0")
    pid, old_hash = node.status()[:2]

    (node.root / "track").unlink()  # only a new start of the watcher writes it again
    install(node.root, node.port, interval_milliseconds=30)

    wait_until(
        lambda: node.reads("0") and node.status()[1] != old_hash,
        "track and status rewritten after the update",
    )
    assert node.status()[0] == pid  # the same process, re-executed
    (node.root / "lbpair-nginx-watch").unlink()
    wait_until(lambda: not (node.root / "state" / "pid").exists(), "watcher gone after removal")
    assert node.status() == []
    assert node.watcher.wait(timeout=10) == 0


def test_a_second_watcher_started_beside_a_running_one_leaves_at_once(node: Node) -> None:
    wait_until(lambda: node.reads("0"), "track file 0")

    second = subprocess.run(
        ["python3", str(node.root / "lbpair-nginx-watch"), str(node.root / "lbpair-nginx-watch.json")],
        timeout=10,
        check=False,
    )

    assert second.returncode == 0
    assert node.status()[0] == str(node.watcher.pid)
    assert node.watcher.poll() is None


def test_the_build_watches_the_pairs_listeners_on_the_nodes_front_address() -> None:
    pair = sample("seed-tutorial.yaml").pair
    pair["spec"]["healthCheck"] = {"method": "Watch"}
    pair["spec"]["vrrp"] = {"virtualRouterId": 51}
    spec = PairSpec.model_validate(pair["spec"])

    watch = nginx_watch(spec, spec.nodes[1])
    files = {f.path: f for f in render_nginx_watch(watch)} if watch else {}
    config = json.loads(files["/etc/keepalived/lbpair-nginx-watch.json"].content)

    assert config["listeners"] == [[spec.nodes[1].vrrp_address, 80], [spec.nodes[1].vrrp_address, 443]]
    assert config["trackFile"] == "/var/lib/lbpair/track/nginx"
    assert files["/etc/keepalived/lbpair-nginx-watch"].mode == 0o755
    pair["spec"]["healthCheck"] = {"method": "Script"}
    assert nginx_watch(PairSpec.model_validate(pair["spec"]), spec.nodes[1]) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("running abc123 up", NginxWatchState(running=True, hash="abc123", nginx_serving=True)),
        ("stopped abc123 down", NginxWatchState(running=False, hash="abc123", nginx_serving=False)),
        ("running abc123", None),
        ("sleeping abc123 up", None),
    ],
)
def test_the_probe_reports_the_watcher_line(line: str, expected: NginxWatchState | None) -> None:
    assert parse_nginx_watch([line]) == expected
    assert parse_probe(f"== hostname\nlb1\n== nginx-watch\n{line}\n").nginx_watch == expected


def test_the_agent_reads_the_watchers_state_where_the_build_puts_it() -> None:
    agent = (Path(__file__).parents[2] / "operator/lbpair/nodes/agent.sh").read_text()
    assert f"NGINX_WATCH_STATE={WATCH_STATE_DIRECTORY}\n" in agent


def refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_nothing_listens_where_the_fake_nginx_closed(tmp_path: Path) -> None:
    """The fake's SIGUSR1 really closes the listener (else the deaf-nginx test could not fail)."""
    nginx, port = start_nginx(tmp_path)
    try:
        nginx.send_signal(signal.SIGUSR1)
        wait_until(lambda: refused(port), "listener closed")
    finally:
        nginx.kill()
        nginx.wait(timeout=10)
