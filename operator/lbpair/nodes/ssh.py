"""The NodeClient over SSH (paramiko). The only module that imports paramiko.

Host keys are pinned: the key the node presents must equal the one in the pair's spec, compared
before authentication, so no credential is ever offered to an impostor. Connections are kept open
and reused across reconciles (a command on an open session costs ~5 ms; a new connection ~85 ms).
"""

from __future__ import annotations

import base64
import hashlib
import io
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field

import paramiko

from lbpair.nodes.client import CommandResult, HostKeyMismatchError, NodeUnreachableError

_READ_CHUNK = 65536


@dataclass(frozen=True)
class SSHTarget:
    """Everything needed to open a session to one node; `host_key` is an OpenSSH public key line."""

    name: str
    address: str
    port: int
    user: str
    host_key: str
    private_key_pem: str = field(repr=False)
    sudo: bool = False
    connect_timeout: float = 5.0

    @property
    def identity(self) -> str:
        """Connections are reused only while every field that shapes them stays the same."""
        key_digest = hashlib.sha256(self.private_key_pem.encode()).hexdigest()[:16]
        return f"{self.user}@{self.address}:{self.port}/{self.host_key}/{key_digest}/{self.sudo}"


def host_key_fingerprint(openssh_key_line: str) -> str:
    """SHA256 fingerprint in OpenSSH's format, for messages a human compares with ssh-keygen -l."""
    blob = base64.b64decode(openssh_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _load_private_key(pem: str) -> paramiko.PKey:
    errors = []
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(pem))
        except (paramiko.SSHException, ValueError) as error:
            errors.append(f"{key_class.__name__}: {error}")
    raise NodeUnreachableError("private key is not a usable Ed25519, ECDSA or RSA key: " + "; ".join(errors))


def _host_key_algorithms(openssh_key_line: str) -> tuple[str, ...]:
    key_type = openssh_key_line.split(maxsplit=1)[0]
    # An RSA key signs with SHA-2 algorithms that carry their own names.
    return ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa") if key_type == "ssh-rsa" else (key_type,)


def _check_pinned_host_key(target: SSHTarget, presented: paramiko.PKey) -> None:
    """Compare before authenticating, so no credential is ever offered to an impostor."""
    presented_line = f"{presented.get_name()} {presented.get_base64()}"
    # The base64 blob encodes the key type as well as the key.
    if target.host_key.split()[1] != presented.get_base64():
        raise HostKeyMismatchError(
            f"{target.address}:{target.port} presented host key {host_key_fingerprint(presented_line)}, "
            f"but {host_key_fingerprint(target.host_key)} is pinned; refusing to connect"
        )


class SSHNodeClient:
    """A NodeClient over one paramiko Transport, reopened transparently when it has dropped."""

    def __init__(self, target: SSHTarget) -> None:
        self.name = target.name
        self._target = target
        self._transport: paramiko.Transport | None = None
        # Reconciles run in worker threads; one session setup at a time per node.
        self._lock = threading.Lock()

    def _connect(self) -> paramiko.Transport:
        target = self._target
        private_key = _load_private_key(target.private_key_pem)  # before any socket exists to leak
        try:
            sock = socket.create_connection((target.address, target.port), timeout=target.connect_timeout)
        except OSError as error:
            raise NodeUnreachableError(f"{target.address}:{target.port}: {error}") from error
        # Without TCP_NODELAY every command waits ~40 ms for delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        # Negotiate the pinned key's type, so a node with several host keys presents the pinned one.
        transport.get_security_options().key_types = _host_key_algorithms(target.host_key)
        try:
            transport.start_client(timeout=target.connect_timeout)
            _check_pinned_host_key(target, transport.get_remote_server_key())
            transport.auth_publickey(target.user, private_key)
        except HostKeyMismatchError:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as error:
            transport.close()
            raise NodeUnreachableError(f"{target.address}:{target.port}: {error}") from error
        transport.set_keepalive(15)
        return transport

    def _session_transport(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is None or not self._transport.is_active():
                self._transport = self._connect()
            return self._transport

    def run(self, command: str, *, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        if self._target.sudo:
            command = "sudo -n sh -c " + shlex.quote(command)
        transport = self._session_transport()
        try:
            channel = transport.open_session(timeout=self._target.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as error:
            self.close()
            raise NodeUnreachableError(f"{self._target.address}: cannot open a session: {error}") from error
        try:
            return _run_on_channel(channel, command, stdin, timeout)
        except (paramiko.SSHException, OSError, EOFError) as error:  # TimeoutError is an OSError
            self.close()
            raise NodeUnreachableError(f"{self._target.address}: session failed: {error}") from error
        finally:
            channel.close()

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None


def _run_on_channel(channel: paramiko.Channel, command: str, stdin: bytes, timeout: float) -> CommandResult:
    deadline = time.monotonic() + timeout
    channel.exec_command(command)
    if stdin:
        channel.sendall(stdin)
    channel.shutdown_write()
    stdout, stderr = bytearray(), bytearray()
    # Drain both streams as data arrives so a chatty stderr cannot stall stdout on a full window.
    while not (channel.exit_status_ready() and channel.eof_received):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer within {timeout:.0f} s")
        # The channel's pipe wakes select on data, EOF and close; the cap covers an exit status that
        # arrives after EOF without further traffic.
        select.select([channel], [], [], min(remaining, 0.05))
        while channel.recv_ready():
            stdout += channel.recv(_READ_CHUNK)
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(_READ_CHUNK)
    while channel.recv_ready():
        stdout += channel.recv(_READ_CHUNK)
    while channel.recv_stderr_ready():
        stderr += channel.recv_stderr(_READ_CHUNK)
    return CommandResult(
        exit_status=channel.recv_exit_status(),
        stdout=stdout.decode(errors="replace"),
        stderr=stderr.decode(errors="replace"),
    )


class NodeConnections:
    """Persistent clients shared by every reconcile of the process: one per node endpoint, replaced (and
    the old session closed) when anything that shapes the session changes, e.g. a rotated key."""

    def __init__(self) -> None:
        self._clients: dict[str, tuple[str, SSHNodeClient]] = {}  # address:port -> (identity, client)
        self._lock = threading.Lock()

    def client(self, target: SSHTarget) -> SSHNodeClient:
        endpoint = f"{target.address}:{target.port}"
        with self._lock:
            identity, existing = self._clients.get(endpoint, ("", None))
            if existing is not None and identity == target.identity:
                return existing
            replaced = existing
            client = SSHNodeClient(target)
            self._clients[endpoint] = (target.identity, client)
        if replaced is not None:
            replaced.close()
        return client

    def close_all(self) -> None:
        with self._lock:
            clients, self._clients = [client for _, client in self._clients.values()], {}
        for client in clients:
            client.close()
