"""The SSH client's deadline, output caps and connection hygiene, against an SSH server in this process.

The server is paramiko's own server side on loopback. It runs each command for real (sh -c, in a
session of its own, as sshd does), so the bounded command line the client sends is exercised too; it
can also stall where a broken network or node would: never answer an exec request, or never read stdin.
When the client goes away it just stops pumping, like a peer that vanished: it never closes the
command's pipes, so a command the client gives up on dies only if the client's measures kill it.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import paramiko
import pytest
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

from lbpair.nodes import ssh
from lbpair.nodes.client import HostKeyMismatchError, InvalidHostKeyError, NodeError, NodeUnreachableError
from lbpair.nodes.ssh import SSHNodeClient, SSHTarget, bounded_command, host_key_fingerprint

pytestmark = pytest.mark.timeout(120)  # a deadline that does not hold must fail, not hang

ServerTransport = paramiko.Transport  # before any test replaces paramiko.Transport for the client
STALL_EXEC = "stall-exec"  # the server never answers the exec request
STALL_STDIN = "stall-stdin"  # the server accepts the command but never reads its stdin
SILENT = "silent"  # the server accepts the command, then says nothing ever


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


@dataclass
class Server(paramiko.ServerInterface):
    host_key: paramiko.PKey
    client_key: paramiko.PKey
    commands: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    transports: list[paramiko.Transport] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED if kind == "session" else OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return AUTH_SUCCESSFUL if key == self.client_key else AUTH_FAILED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode()
        self.commands.append(text)
        if STALL_EXEC in text:
            self.released.wait()
            return False
        if STALL_STDIN not in text and SILENT not in text:
            threading.Thread(target=self._execute, args=(channel, text), daemon=True).start()
        return True

    def _execute(self, channel: paramiko.Channel, command: str) -> None:
        process = subprocess.Popen(
            ["sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.processes.append(process)
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        pumps = [
            threading.Thread(target=_pump_in, args=(channel, process.stdin), daemon=True),
            threading.Thread(target=_pump_out, args=(process.stdout, channel.sendall), daemon=True),
            threading.Thread(target=_pump_out, args=(process.stderr, channel.sendall_stderr), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        status = process.wait()
        for pump in pumps[1:]:
            pump.join()
        try:
            channel.send_exit_status(status if status >= 0 else 128 - status)  # killed by a signal
            channel.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass


def _pump_in(channel: paramiko.Channel, sink: IO[bytes]) -> None:
    try:
        while data := channel.recv(65536):
            sink.write(data)
            sink.flush()
        sink.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass


def _pump_out(source: IO[bytes], send: Callable[[bytes], None]) -> None:
    try:
        while data := os.read(source.fileno(), 65536):
            send(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the client is gone: stop pumping, leave the pipe open


@dataclass
class Endpoint:
    server: Server
    port: int

    def target(self, **changes: object) -> SSHTarget:
        fields: dict[str, object] = {
            "name": "node",
            "address": "127.0.0.1",
            "port": self.port,
            "user": "root",
            "host_key": key_line(self.server.host_key),
            "private_key_pem": _pem(self.server.client_key),
        }
        fields.update(changes)
        return SSHTarget(**fields)  # type: ignore[arg-type]


def _pem(key: paramiko.PKey) -> str:
    buffer = io.StringIO()
    key.write_private_key(buffer)
    return buffer.getvalue()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Server(paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate())
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            transport = ServerTransport(connection)
            transport.add_server_key(server.host_key)
            server.transports.append(transport)
            try:
                transport.start_server(server=server)
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()  # a client that went away during the handshake

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield Endpoint(server, listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        server.released.set()
        for transport in server.transports:
            transport.close()
        for process in server.processes:
            _kill_group(process.pid)
            process.wait()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies have ended)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pgid: int, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_command_runs_and_its_output_and_exit_status_come_back(endpoint: Endpoint) -> None:
    client = SSHNodeClient(endpoint.target())
    try:
        result = client.run("cat; echo err >&2; exit 3", stdin=b"in\n", timeout=10)
    finally:
        client.close()

    assert (result.exit_status, result.stdout, result.stderr) == (3, "in\n", "err\n")
    assert endpoint.server.commands[0].startswith("setsid -w sh -c ")  # bounded on the node


def test_stdout_past_its_cap_fails_and_the_command_is_killed_on_the_node(endpoint: Endpoint) -> None:
    client = SSHNodeClient(endpoint.target())
    started = time.monotonic()

    with pytest.raises(NodeError, match=r"stdout passed the 4 MiB cap; the command was killed") as raised:
        client.run("exec yes", timeout=30)

    assert type(raised.value) is NodeError
    assert time.monotonic() - started < 10
    assert client._transport is None  # the connection went with the failure
    # The process group the command reported, killed at once (the server no longer reads its output,
    # so without the kill `yes` would sit blocked until the node's timeout).
    kills = [command for command in endpoint.server.commands if "kill -s KILL -- -" in command]
    assert len(kills) == 1
    assert wait_until_gone(int(kills[0].rsplit("-", 1)[1]))


def test_stderr_past_its_cap_fails_too(endpoint: Endpoint) -> None:
    client = SSHNodeClient(endpoint.target())

    with pytest.raises(NodeError, match=r"stderr passed the 1 MiB cap"):
        client.run("exec yes >&2", timeout=30)

    kills = [command for command in endpoint.server.commands if "kill -s KILL -- -" in command]
    assert len(kills) == 1
    assert wait_until_gone(int(kills[0].rsplit("-", 1)[1]))


def test_the_deadline_covers_an_exec_request_the_node_never_answers(endpoint: Endpoint) -> None:
    client = SSHNodeClient(endpoint.target())
    started = time.monotonic()

    with pytest.raises(NodeUnreachableError, match="no answer within 2 s"):
        client.run(f"true {STALL_EXEC}", timeout=2)

    assert time.monotonic() - started < 3.5
    assert client._transport is None


def test_the_deadline_covers_stdin_the_node_never_reads(endpoint: Endpoint) -> None:
    client = SSHNodeClient(endpoint.target())
    started = time.monotonic()

    with pytest.raises(NodeUnreachableError, match="no answer within 2 s"):
        client.run(f"true {STALL_STDIN}", stdin=b"x" * (16 * 1024 * 1024), timeout=2)

    assert time.monotonic() - started < 3.5
    assert client._transport is None


def test_the_deadline_covers_a_command_that_never_answers(endpoint: Endpoint) -> None:
    client = SSHNodeClient(endpoint.target())

    with pytest.raises(NodeUnreachableError, match="no answer within 2 s"):
        client.run(f"true {SILENT}", timeout=2)

    assert client._transport is None


def test_a_command_past_its_time_is_killed_by_the_node_before_the_deadline(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    client = SSHNodeClient(endpoint.target())
    pids = tmp_path / "pids"
    started = time.monotonic()

    with pytest.raises(NodeError, match=r"ran past its 1\.\d s on the node and was killed") as raised:
        client.run(f"sleep 300 & echo $! >>{pids}; echo $$ >>{pids}; exec sleep 300", timeout=2.5)

    assert not isinstance(raised.value, NodeUnreachableError)  # the node answered: it killed the command
    assert time.monotonic() - started < 2.5
    children = [int(pid) for pid in pids.read_text().split()]
    assert len(children) == 2
    deadline = time.monotonic() + 3
    while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in children if alive(pid)]
    client.close()


def test_the_bounded_command_reports_its_process_group_first() -> None:
    result = subprocess.run(
        ["sh", "-c", bounded_command("echo out; echo err >&2", 5)],
        capture_output=True,
        start_new_session=True,
        check=True,
    )

    first, rest = result.stderr.decode().split("\n", 1)
    assert first.startswith("lbpair-pgid ")
    assert first.removeprefix("lbpair-pgid ").isdigit()
    assert (result.stdout, rest) == (b"out\n", "err\n")


def test_sudo_wraps_the_bounded_command(endpoint: Endpoint) -> None:
    client = SSHNodeClient(endpoint.target(sudo=True))
    try:
        client.run("true", timeout=5)
    finally:
        client.close()

    assert endpoint.server.commands[0].startswith("sudo -n setsid -w sh -c ")


# -- host keys and connection hygiene --


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda line: line[:-1], "not valid base64"),
        (lambda line: line[:-4], "not a valid ecdsa-sha2-nistp256 key"),
        (lambda line: line.replace("ecdsa-sha2-nistp256", "ssh-ed25519"), "not a valid ssh-ed25519 key"),
        (lambda line: "ssh-dss " + line.split()[1], "host key type 'ssh-dss' is not one of"),
        (lambda line: line.split()[1], "OpenSSH public key line"),
        (lambda line: line[:20] + "!" + line[21:], "not valid base64"),
    ],
)
def test_a_malformed_pinned_host_key_is_refused_when_the_target_is_built(
    endpoint: Endpoint, mangle: Callable[[str], str], message: str
) -> None:
    good = key_line(endpoint.server.host_key)

    with pytest.raises(InvalidHostKeyError, match=message) as raised:
        endpoint.target(host_key=mangle(good))

    assert raised.value.reason == "InvalidHostKey"
    assert endpoint.server.transports == []  # no connection was attempted


def test_fingerprint_matches_openssh(endpoint: Endpoint, tmp_path: Path) -> None:
    line = key_line(endpoint.server.host_key)
    (tmp_path / "key.pub").write_text(line + "\n")

    listed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "key.pub")], capture_output=True, check=True)

    assert listed.stdout.decode().split()[1] == host_key_fingerprint(line)


class RecordingTransport(paramiko.Transport):
    made: list[RecordingTransport] = []  # noqa: RUF012 - a test's record

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        RecordingTransport.made.append(self)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[RecordingTransport]:
    RecordingTransport.made = []
    monkeypatch.setattr(paramiko, "Transport", RecordingTransport)
    return RecordingTransport.made


def test_a_host_key_mismatch_closes_the_connection(
    endpoint: Endpoint, recorded: list[RecordingTransport]
) -> None:
    impostor = paramiko.ECDSAKey.generate()
    client = SSHNodeClient(endpoint.target(host_key=key_line(impostor)))

    with pytest.raises(HostKeyMismatchError, match="refusing to connect"):
        client.run("true", timeout=5)

    assert [transport.is_active() for transport in recorded] == [False]


def test_a_refused_login_closes_the_connection(
    endpoint: Endpoint, recorded: list[RecordingTransport]
) -> None:
    client = SSHNodeClient(endpoint.target(private_key_pem=_pem(paramiko.ECDSAKey.generate())))

    with pytest.raises(NodeUnreachableError):
        client.run("true", timeout=5)

    assert [transport.is_active() for transport in recorded] == [False]


def test_an_unexpected_error_while_connecting_closes_the_connection(
    endpoint: Endpoint, recorded: list[RecordingTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ssh, "_check_pinned_host_key", broken)
    client = SSHNodeClient(endpoint.target())

    with pytest.raises(RuntimeError, match="bug"):
        client.run("true", timeout=5)

    assert [transport.is_active() for transport in recorded] == [False]


def test_each_node_error_carries_its_event_reason() -> None:
    assert NodeError.reason == "NodeError"
    assert NodeUnreachableError.reason == "NodeUnreachable"
    assert HostKeyMismatchError.reason == "HostKeyMismatch"
    assert InvalidHostKeyError.reason == "InvalidHostKey"
