"""The operator's node layer on real lab nodes: pinned SSH, probe, stage/validate/swap/reload, restore.

These drive lbpair.nodes directly (no Kubernetes) so a failure points at the node layer itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator

import paramiko
import pytest

from lbpair.model.files import ManagedFile
from lbpair.nodes.client import HostKeyMismatchError, NodeClient
from lbpair.nodes.node import PairSession
from lbpair.nodes.operations import (
    NodeOwnedElsewhereError,
    ValidationFailedError,
    apply_reload,
    apply_staged,
    observe_node,
    observe_served_hash,
    push_bundle,
    restore_last_good,
    uninstall_managed,
    validate_staged,
)
from lbpair.nodes.ssh import NodeConnections, SSHNodeClient, SSHTarget
from testbed.addressing import SSH_PORT
from testbed.lab import Lab
from testbed.operator import wait_for

pytestmark = pytest.mark.e2e

ROOTS = ("/etc/nginx", "/etc/keepalived")
CONFIG_PATHS = ("/etc/nginx/nginx.conf", "/etc/keepalived/keepalived.conf")
STATUS_PORT = 18081
KEEPALIVED_CONF = """global_defs {
    router_id agent-test
}
"""


def nginx_conf(marker: str) -> str:
    return f"""events {{}}
http {{
    server {{
        listen 127.0.0.1:{STATUS_PORT};
        location = /lbpair/config-hash {{ return 200 "{marker}\\n"; }}
    }}
}}
"""


def bundle(marker: str) -> list[ManagedFile]:
    return [
        ManagedFile("/etc/nginx/nginx.conf", nginx_conf(marker)),
        ManagedFile("/etc/keepalived/keepalived.conf", KEEPALIVED_CONF),
    ]


def target(lab: Lab, node: str, host_key: str | None = None) -> SSHTarget:
    return SSHTarget(
        name=node,
        address=str(lab.mgmt_address(node)),
        port=22,
        user="root",
        host_key=host_key or lab.host_key(node),
        private_key_pem=lab.ssh_key_path.read_text(),
    )


PAIR_A, PAIR_B = "uid-a team-a/pair", "uid-b team-b/pair"  # as each pair's session names it


@pytest.fixture
def lb1(lab: Lab) -> Iterator[NodeClient]:
    connections = NodeConnections()
    client = PairSession(connections.client(target(lab, "lb1")), PAIR_A)
    try:
        yield client
    finally:
        # Leave the node as the lab built it: the node's own files back, nginx on them.
        uninstall_managed(client)
        apply_reload(client, ["nginx"])
        connections.close_all()


def roll_out(client: NodeClient, files: list[ManagedFile]) -> None:
    push_bundle(client, files)
    validate_staged(client, CONFIG_PATHS, ROOTS)
    apply_staged(client)
    apply_reload(client, ["nginx"])


def assert_serves(client: NodeClient, marker: str) -> None:
    """nginx reloads asynchronously: poll its status endpoint until it serves `marker` (fails after 10 s)."""
    wait_for(
        lambda: observe_served_hash(client, STATUS_PORT) == marker,
        timeout=10,
        interval=0.05,
        what=f"nginx serving {marker}",
    )


SSHD_LOG = "/var/log/sshd.log"  # the lab's nodes run sshd with LogLevel DEBUG1 into this file
CONNECTION_OPENED = re.compile(r"Connection from (?P<client>\S+) port (?P<port>[0-9]+) on ")
# sshd logs `userauth-request ... method X` for every SSH_MSG_USERAUTH_REQUEST it reads (any method, even
# "none"), then the verdict (Accepted/Failed/Postponed/Partial) and "authenticated" once a user is in.
AUTHENTICATION = re.compile(r"userauth|Accepted|Failed|Postponed|Partial|authenticated")


class SshdLog:
    """What a node's sshd logs from now on."""

    def __init__(self, lab: Lab, node: str) -> None:
        self._lab = lab
        self._node = node
        self._start = len(self._text())

    def _text(self) -> str:
        return self._lab.exec(self._node, "cat", SSHD_LOG).stdout

    def one_connection(self) -> list[str]:
        """The lines logged for the one connection made since, once sshd has logged its end.

        sshd reads a connection's messages in order, so anything the client sent before closing (a userauth
        request above all) is logged before the line that ends the connection: the first later line that
        names the client's address and port again ("Connection closed by", "Read error from", ...). Fails if
        another connection reached the node meanwhile, whose lines would be mixed in."""

        def ended() -> list[str] | None:
            lines = self._text()[self._start :].splitlines()
            opened = [
                (index, match)
                for index, line in enumerate(lines)
                if (match := CONNECTION_OPENED.search(line))
            ]
            assert len(opened) <= 1, f"more than one connection reached {self._node}'s sshd: {lines}"
            if not opened:
                return None
            ((first, match),) = opened
            client = re.compile(rf"\b{re.escape(match['client'])} port {match['port']}\b")
            if not any(client.search(line) for line in lines[first + 1 :]):
                return None
            return lines

        lines: list[str] = wait_for(
            ended, timeout=10, interval=0.05, what=f"{self._node}'s sshd logging the end of a connection"
        )
        return lines


def authentication_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if AUTHENTICATION.search(line)]


def authenticate_then_check_host_key(lab: Lab, node: str, pinned: str) -> None:
    """The wrong order, for the control below: log in first, compare the host key afterwards."""
    transport = paramiko.Transport((str(lab.mgmt_address(node)), SSH_PORT))
    try:
        transport.start_client(timeout=5)
        transport.auth_publickey("root", paramiko.Ed25519Key.from_private_key_file(str(lab.ssh_key_path)))
        presented = transport.get_remote_server_key()
        if f"{presented.get_name()} {presented.get_base64()}" != pinned:
            raise HostKeyMismatchError(f"{node} presented another host key (after authenticating)")
    finally:
        transport.close()


def test_wrong_pinned_host_key_is_refused_before_authenticating(lab: Lab) -> None:
    impostor = SSHNodeClient(target(lab, "lb1", host_key=lab.host_key("lb2")))
    sshd_log = SshdLog(lab, "lb1")

    with pytest.raises(HostKeyMismatchError, match="refusing to connect"):
        impostor.run("true")

    connection = sshd_log.one_connection()
    # The node got as far as presenting its host key (key exchange done) and then saw no userauth request
    # at all: no key was offered, let alone a signature.
    assert any("KEX done" in line for line in connection), connection
    assert authentication_lines(connection) == [], connection


def connect_as_operator(lab: Lab) -> None:
    client = SSHNodeClient(target(lab, "lb1"))
    try:
        client.run("true")
    finally:
        client.close()


def authenticate_before_checking(lab: Lab) -> None:
    with pytest.raises(HostKeyMismatchError):
        authenticate_then_check_host_key(lab, "lb1", pinned=lab.host_key("lb2"))


@pytest.mark.parametrize(
    "connect",
    [connect_as_operator, authenticate_before_checking],
    ids=["operator-client-with-the-right-key", "client-that-authenticates-before-checking-the-key"],
)
def test_sshd_log_shows_authentication_when_a_client_authenticates(
    lab: Lab, connect: Callable[[Lab], None]
) -> None:
    """Control for the test above: the same check on the same log sees a client that does authenticate."""
    sshd_log = SshdLog(lab, "lb1")

    connect(lab)

    lines = authentication_lines(sshd_log.one_connection())
    assert any("userauth-request for user root" in line for line in lines), lines
    assert any(line.startswith("Accepted publickey for root") for line in lines), lines


def test_rollout_goes_live_and_probe_reports_the_applied_files(lab: Lab, lb1: NodeClient) -> None:
    stock_nginx_conf = lab.exec("lb1", "cat", "/etc/nginx/nginx.conf").stdout

    roll_out(lb1, bundle("generation-1"))

    observation = observe_node(lb1)
    assert_serves(lb1, "generation-1")
    assert observation.hostname == "lb1"
    assert observation.running("nginx")
    assert observation.managed_files["/etc/nginx/nginx.conf"].actual_sha256 == (
        hashlib.sha256(nginx_conf("generation-1").encode()).hexdigest()
    )
    assert not any(state.drifted for state in observation.managed_files.values())
    # The node's own file was kept, so removing the operator can give it back.
    assert lab.exec("lb1", "cat", "/var/lib/lbpair/original/files/etc/nginx/nginx.conf").stdout == (
        stock_nginx_conf
    )


def test_invalid_config_is_rejected_with_nginx_message_and_nothing_live_changes(
    lab: Lab, lb1: NodeClient
) -> None:
    roll_out(lb1, bundle("good"))
    assert_serves(lb1, "good")
    broken = [ManagedFile("/etc/nginx/nginx.conf", "events {}\nhttp { server { listen 80 } }\n")]
    broken.append(bundle("good")[1])

    push_bundle(lb1, broken)
    with pytest.raises(ValidationFailedError, match=r"nginx.conf:2"):
        validate_staged(lb1, CONFIG_PATHS, ROOTS)

    assert lab.exec("lb1", "cat", "/etc/nginx/nginx.conf").stdout == nginx_conf("good")
    assert observe_served_hash(lb1, STATUS_PORT) == "good"  # nothing was reloaded: no wait needed


def test_hand_edit_shows_as_drift_and_restore_brings_back_last_good(lab: Lab, lb1: NodeClient) -> None:
    roll_out(lb1, bundle("first"))
    roll_out(lb1, bundle("second"))
    assert_serves(lb1, "second")
    lab.exec("lb1", "sh", "-c", "echo '# edited by hand' >> /etc/nginx/nginx.conf")

    drifted = [path for path, state in observe_node(lb1).managed_files.items() if state.drifted]
    restore_last_good(lb1)
    apply_reload(lb1, ["nginx"])

    assert drifted == ["/etc/nginx/nginx.conf"]
    assert_serves(lb1, "first")
    assert not any(state.drifted for state in observe_node(lb1).managed_files.values())


def test_a_node_another_pair_has_is_refused_to_a_second_pair_and_left_as_it_is(
    lab: Lab, lb1: NodeClient
) -> None:
    roll_out(lb1, bundle("pair-a"))
    connections = NodeConnections()
    second_pair = PairSession(connections.client(target(lab, "lb1")), PAIR_B)
    try:
        with pytest.raises(NodeOwnedElsewhereError, match="belongs to LoadBalancerPair team-a/pair"):
            push_bundle(second_pair, bundle("pair-b"))
        with pytest.raises(NodeOwnedElsewhereError):
            uninstall_managed(second_pair)
        assert observe_node(second_pair).owner == PAIR_A  # reading is answered
    finally:
        connections.close_all()
    assert_serves(lb1, "pair-a")
