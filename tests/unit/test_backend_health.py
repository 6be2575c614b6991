"""Backend health seen from each LB node: the agent's probe-backends command against real sockets, the
Upstream status it makes (per server and node, with the time of the last change) and the events, written
only when something changes."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from lbpair.model.status import AttachedStatus, BackendNodeStatus, BackendStatus
from lbpair.nodes.backend_probe import BackendTarget, backend_changes, backend_statuses, probe_backends
from lbpair.nodes.client import CommandResult
from lbpair.render.model import ObjectKey
from tests.unit.test_reconcile import World, make_world

T0, T1 = "2026-11-30T10:00:00Z", "2026-11-30T10:00:02Z"
BE1, BE2 = BackendTarget("198.18.0.11", 80), BackendTarget("198.18.0.12", 80)
LB_WWW = ObjectKey("Upstream", "demo", "lb-www")


class LocalClient:
    """A NodeClient that runs the agent's command line here, as sshd would on a node."""

    name = "local"

    def __init__(self, state: Path) -> None:
        self.state = state

    def run(self, command: str, *, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        command = command.replace("/var/lib/lbpair", str(self.state))
        done = subprocess.run(
            ["sh", "-c", command], input=stdin, capture_output=True, timeout=timeout, check=False
        )
        return CommandResult(done.returncode, done.stdout.decode(), done.stderr.decode())

    def close(self) -> None:
        """Nothing to close."""


@pytest.fixture
def listening() -> Iterator[tuple[BackendTarget, BackendTarget]]:
    """A loopback port that accepts connections, and one that refuses them."""
    with socket.socket() as open_socket, socket.socket() as closed_socket:
        open_socket.bind(("127.0.0.1", 0))
        open_socket.listen()
        closed_socket.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield (
            BackendTarget("127.0.0.1", open_socket.getsockname()[1]),
            BackendTarget("127.0.0.1", closed_socket.getsockname()[1]),
        )


def test_the_agent_reports_which_backends_accept_a_connection(
    listening: tuple[BackendTarget, BackendTarget], tmp_path: Path
) -> None:
    up, down = listening

    assert probe_backends(LocalClient(tmp_path), [down, up]) == {up: True, down: False}
    assert probe_backends(LocalClient(tmp_path), []) == {}


class HealthAnswers(http.server.BaseHTTPRequestHandler):
    """200 for /healthz, 503 for anything else."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        """Quiet."""


def test_with_a_health_path_the_agent_counts_only_a_2xx_or_3xx_answer(tmp_path: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), HealthAnswers)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        port = server.server_address[1]
        healthy = BackendTarget("127.0.0.1", port, "/healthz")
        sick = BackendTarget("127.0.0.1", port, "/v1/status")

        assert probe_backends(LocalClient(tmp_path), [healthy, sick]) == {healthy: True, sick: False}
    finally:
        server.shutdown()
        server.server_close()


def node_view(name: str, reachable: bool, since: str) -> BackendNodeStatus:
    return BackendNodeStatus(name=name, reachable=reachable, last_transition_time=since)


def test_status_keeps_the_time_of_the_last_change_and_the_view_of_a_node_not_probed() -> None:
    first = backend_statuses([BE1], {"lb1": {BE1: True}, "lb2": {BE1: True}}, ["lb1", "lb2"], [], T0)
    lb1_down = backend_statuses([BE1], {"lb1": {BE1: False}, "lb2": {BE1: True}}, ["lb1", "lb2"], first, T1)
    lb2_unreachable = backend_statuses([BE1], {"lb1": {BE1: False}}, ["lb1", "lb2"], lb1_down, "later")

    assert lb1_down == [
        BackendStatus(
            address="198.18.0.11", port=80, nodes=[node_view("lb1", False, T1), node_view("lb2", True, T0)]
        )
    ]
    assert lb2_unreachable == lb1_down  # nothing new: the same status, nothing to write
    assert backend_changes(first, lb1_down) == [(BE1, "lb1", False)]
    assert backend_changes(lb1_down, lb2_unreachable) == []


def test_a_server_first_seen_down_is_a_change_one_first_seen_up_is_not() -> None:
    current = backend_statuses([BE1, BE2], {"lb1": {BE1: True, BE2: False}}, ["lb1"], [], T0)

    assert backend_changes([], current) == [(BE2, "lb1", False)]


def upstream_status(world: World) -> AttachedStatus:
    statuses = [s for plural, name, s in world.sink.writes if plural == "upstreams" and name == "lb-www"]
    assert isinstance(statuses[-1], AttachedStatus)
    return statuses[-1]


def reachability(status: AttachedStatus) -> dict[str, dict[str, bool]]:
    return {f"{b.address}:{b.port}": {n.name: n.reachable for n in b.nodes} for b in status.backends or []}


def test_a_backend_down_from_one_node_shows_in_status_with_an_event_and_writes_only_on_change() -> None:
    world = make_world()
    world.run_pass()
    assert reachability(upstream_status(world)) == {
        "198.18.0.11:80": {"lb1": True, "lb2": True},
        "198.18.0.12:80": {"lb1": True, "lb2": True},
    }

    world.lb1.unreachable_backends = {"198.18.0.11:80"}
    events = world.run_pass()
    writes = len(world.sink.writes)
    quiet = world.run_pass()

    assert reachability(upstream_status(world))["198.18.0.11:80"] == {"lb1": False, "lb2": True}
    assert [(e.type, e.reason, e.message, e.regarding) for e in events if e.reason.startswith("Backend")] == [
        ("Warning", "BackendDown", "198.18.0.11:80 is unreachable from lb1", LB_WWW)
    ]
    assert [e for e in quiet if e.reason.startswith("Backend")] == []
    assert [w for w in world.sink.writes[writes:] if w[0] != "loadbalancerpairs"] == []

    world.lb1.unreachable_backends = set()
    back = world.run_pass()

    assert reachability(upstream_status(world))["198.18.0.11:80"] == {"lb1": True, "lb2": True}
    assert [(e.type, e.reason, e.message) for e in back if e.regarding == LB_WWW] == [
        ("Normal", "BackendUp", "198.18.0.11:80 is reachable again from lb1")
    ]


def test_an_upstream_health_path_is_what_the_nodes_probe() -> None:
    world = make_world()
    world.resources.upstream("lb-www")["spec"]["healthPath"] = "/healthz"
    world.lb2.unreachable_backends = {"198.18.0.12:80/healthz", "198.18.0.11:80"}  # the latter: not asked

    world.run_pass()

    assert reachability(upstream_status(world)) == {
        "198.18.0.11:80": {"lb1": True, "lb2": True},
        "198.18.0.12:80": {"lb1": True, "lb2": False},
    }


def test_virtual_hosts_statuses_are_written_before_the_backends_are_probed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A VirtualHost's Programmed must not wait for a backend probe (up to its timeout on a blackholed
    server): the probe runs after every VirtualHost's status is written, before the Upstreams'."""
    world = make_world()
    written_when_probed: list[str] = []
    probe = world.lb1.probe_backends

    def probe_recording_writes(targets: Iterable[BackendTarget]) -> dict[BackendTarget, bool]:
        written_when_probed.extend(plural for plural, _, _ in world.sink.writes)
        return probe(targets)

    monkeypatch.setattr(world.lb1, "probe_backends", probe_recording_writes)
    world.run_pass()

    virtual_hosts = [name for plural, name, _ in world.sink.writes if plural == "virtualhosts"]
    assert virtual_hosts
    assert written_when_probed.count("virtualhosts") == len(virtual_hosts)
    assert "upstreams" not in written_when_probed
