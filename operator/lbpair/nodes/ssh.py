"""The NodeClient over SSH (paramiko). The only module that imports paramiko.

Host keys are pinned: the key the node presents must equal the one in the pair's spec, compared
before authentication, so no credential is ever offered to an impostor. Connections are kept open
and reused across reconciles (a command on an open session costs ~5 ms; a new connection ~85 ms).

Every command is bounded at both ends. Here, one deadline covers connecting, starting the command,
sending its stdin and reading its output, and the output is capped. On the node, the command runs in
its own session and process group under coreutils `timeout`, set to expire just before the deadline
here: a command the operator gives up on is dead on the node too, children included, and a command
whose output passes the cap is killed by its process group at once. Any failure of the session closes
the connection, so nothing half-open is carried into the next pass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field

import paramiko

from lbpair.nodes.client import (
    CommandResult,
    HostKeyMismatchError,
    InvalidHostKeyError,
    NodeError,
    NodeUnreachableError,
)

_READ_CHUNK = 65536
STDOUT_LIMIT_BYTES = 4 * 1024 * 1024
STDERR_LIMIT_BYTES = 1024 * 1024
# The node's `timeout` fires this much before the operator's deadline, so its verdict (and the exit
# status) arrives while the operator still listens; TERM first, KILL to the group if anything lingers.
REMOTE_MARGIN_SECONDS = 1.0
REMOTE_KILL_AFTER_SECONDS = 0.5
# Killing a command's process group after its output passed the cap: one short extra round trip.
KILL_TIMEOUT_SECONDS = 2.0
# The first line a bounded command writes to stderr: its process group, for the kill above.
_PGID_PREFIX = b"lbpair-pgid "
HOST_KEY_TYPES = frozenset(
    {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"}
)


def parse_host_key(openssh_key_line: str) -> tuple[str, bytes]:
    """`TYPE BASE64 [COMMENT]` -> (type, key blob), checked: a known type, strict base64, and a blob that
    is a key of that type (a key cut short fails here, not half-way through a connection)."""
    words = openssh_key_line.split()
    if len(words) < 2:  # noqa: PLR2004 - type and key
        raise InvalidHostKeyError("host key must be an OpenSSH public key line: 'TYPE BASE64'")
    key_type, encoded = words[0], words[1]
    if key_type not in HOST_KEY_TYPES:
        raise InvalidHostKeyError(
            f"host key type {key_type!r} is not one of {', '.join(sorted(HOST_KEY_TYPES))}"
        )
    try:
        blob = base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise InvalidHostKeyError(f"host key is not valid base64 (cut short?): {error}") from error
    try:
        key = paramiko.PKey.from_type_string(key_type, blob)
    except (paramiko.SSHException, ValueError, TypeError, IndexError, OverflowError) as error:
        raise InvalidHostKeyError(f"host key is not a valid {key_type} key (cut short?): {error}") from error
    if key.get_name() != key_type:
        raise InvalidHostKeyError(f"host key says {key_type} but holds a {key.get_name()} key")
    return key_type, blob


@dataclass(frozen=True)
class SSHTarget:
    """Everything needed to open a session to one node; `host_key` is an OpenSSH public key line,
    checked here (InvalidHostKeyError) so a bad one never reaches a connection."""

    name: str
    address: str
    port: int
    user: str
    host_key: str
    private_key_pem: str = field(repr=False)
    sudo: bool = False
    connect_timeout: float = 5.0
    pair: str = ""
    """The pair this session works for, "UID NAMESPACE/NAME": sessions are never shared between pairs, so
    one pair's bad key or host key cannot break another's sessions to the same address."""

    def __post_init__(self) -> None:
        parse_host_key(self.host_key)

    @property
    def identity(self) -> str:
        """Connections are reused only while every field that shapes them stays the same."""
        key_digest = hashlib.sha256(self.private_key_pem.encode()).hexdigest()[:16]
        return f"{self.user}@{self.address}:{self.port}/{self.host_key}/{key_digest}/{self.sudo}"


def host_key_fingerprint(openssh_key_line: str) -> str:
    """SHA256 fingerprint in OpenSSH's format, for messages a human compares with ssh-keygen -l."""
    _, blob = parse_host_key(openssh_key_line)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def bounded_command(command: str, seconds: float) -> str:
    """`command` in a session and process group of its own, TERMed after `seconds` and KILLed shortly
    after if anything in the group is left. Its first line on stderr is `lbpair-pgid PGID`."""
    wrapper = (
        f'printf "lbpair-pgid %s\\n" "$$" >&2 && exec timeout -k {REMOTE_KILL_AFTER_SECONDS} "$1" sh -c "$2"'
    )
    return f"setsid -w sh -c {shlex.quote(wrapper)} lbpair {seconds:.1f} {shlex.quote(command)}"


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


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


class _OutputLimitError(Exception):
    def __init__(self, stream: str, limit: int) -> None:
        super().__init__(f"its {stream} passed the {limit // (1024 * 1024)} MiB cap")


class _Output:
    """What a bounded command wrote, capped; the `lbpair-pgid` line is taken off stderr."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.pgid: int | None = None
        self._header_done = False

    def drain(self, channel: paramiko.Channel) -> None:
        while channel.recv_ready():
            self.stdout += channel.recv(_READ_CHUNK)
            if len(self.stdout) > STDOUT_LIMIT_BYTES:
                raise _OutputLimitError("stdout", STDOUT_LIMIT_BYTES)
        while channel.recv_stderr_ready():
            self.stderr += channel.recv_stderr(_READ_CHUNK)
            self._take_header()
            if len(self.stderr) > STDERR_LIMIT_BYTES:
                raise _OutputLimitError("stderr", STDERR_LIMIT_BYTES)

    def _take_header(self) -> None:
        if self._header_done:
            return
        line, newline, rest = bytes(self.stderr).partition(b"\n")
        if not newline and len(line) <= len(_PGID_PREFIX) + 10:
            return  # the line is not complete yet
        self._header_done = True
        number = line.removeprefix(_PGID_PREFIX)
        if newline and number != line and number.isdigit():
            self.pgid = int(number)
            self.stderr = bytearray(rest)


class _Watchdog:
    """Closes the transport when time is up. paramiko waits for the server's reply to exec_command with no
    timeout of its own; closing the transport wakes every call blocked on it."""

    def __init__(self, transport: paramiko.Transport, seconds: float) -> None:
        self.fired = threading.Event()
        self._transport = transport
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired.set()
        self._transport.close()

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()


def _exchange(channel: paramiko.Channel, command: str, stdin: bytes, deadline: float, output: _Output) -> int:
    """Start `command`, send `stdin`, collect its output until it exits; returns the exit status. Blocking
    paramiko calls are cut short by the caller's watchdog closing the transport at the deadline."""
    channel.exec_command(command)
    sent = 0
    while sent < len(stdin):
        remaining = _remaining(deadline)
        if remaining <= 0:
            raise TimeoutError("stdin not taken before the deadline")
        channel.settimeout(remaining)
        sent += channel.send(stdin[sent : sent + _READ_CHUNK])
    channel.shutdown_write()
    # Drain both streams as data arrives so a chatty stderr cannot stall stdout on a full window.
    while not (channel.exit_status_ready() and channel.eof_received):
        remaining = _remaining(deadline)
        if remaining <= 0:
            raise TimeoutError("no exit status before the deadline")
        if channel.closed and not channel.eof_received:
            raise EOFError("the session closed without an answer")
        # The channel's pipe wakes select on data, EOF and close; the cap covers an exit status that
        # arrives after EOF without further traffic.
        select.select([channel], [], [], min(remaining, 0.05))
        output.drain(channel)
    output.drain(channel)
    return channel.recv_exit_status()


class SSHNodeClient:
    """A NodeClient over one paramiko Transport, reopened transparently when it has dropped."""

    def __init__(self, target: SSHTarget) -> None:
        self.name = target.name
        self._target = target
        self._transport: paramiko.Transport | None = None
        # Reconciles run in worker threads; one session setup at a time per node.
        self._lock = threading.Lock()

    def _connect(self, deadline: float) -> paramiko.Transport:
        target = self._target
        private_key = _load_private_key(target.private_key_pem)  # before any socket exists to leak
        step_timeout = max(min(target.connect_timeout, _remaining(deadline)), 0.1)
        try:
            sock = socket.create_connection((target.address, target.port), timeout=step_timeout)
        except OSError as error:
            raise NodeUnreachableError(f"{target.address}:{target.port}: {error}") from error
        try:
            # Without TCP_NODELAY every command waits ~40 ms for delayed ACKs.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = paramiko.Transport(sock)
        except BaseException:
            sock.close()
            raise
        try:
            transport.banner_timeout = transport.handshake_timeout = step_timeout
            # Negotiate the pinned key's type, so a node with several host keys presents the pinned one.
            transport.get_security_options().key_types = _host_key_algorithms(target.host_key)
            transport.start_client(timeout=max(_remaining(deadline), 0.1))
            _check_pinned_host_key(target, transport.get_remote_server_key())
            transport.auth_timeout = max(_remaining(deadline), 0.1)
            transport.auth_publickey(target.user, private_key)
        except HostKeyMismatchError:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as error:
            transport.close()
            raise NodeUnreachableError(f"{target.address}:{target.port}: {error}") from error
        except BaseException:
            transport.close()  # whatever went wrong, no connection outlives the attempt
            raise
        transport.set_keepalive(15)
        return transport

    def _session_transport(self, deadline: float) -> paramiko.Transport:
        with self._lock:
            if self._transport is None or not self._transport.is_active():
                if self._transport is not None:
                    self._transport.close()
                self._transport = self._connect(deadline)
            return self._transport

    def _sudo(self, command: str) -> str:
        return f"sudo -n {command}" if self._target.sudo else command

    def run(self, command: str, *, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        deadline = time.monotonic() + timeout
        address = self._target.address
        transport = self._session_transport(deadline)
        try:
            channel = transport.open_session(timeout=max(_remaining(deadline), 0.1))
        except (paramiko.SSHException, OSError, EOFError) as error:
            self.close()
            raise NodeUnreachableError(f"{address}: cannot open a session: {error}") from error
        # In tenths, as the node's timeout gets it: the node kills no earlier than this after `started`.
        remote_seconds = max(math.floor((_remaining(deadline) - REMOTE_MARGIN_SECONDS) * 10), 1) / 10
        bounded = self._sudo(bounded_command(command, remote_seconds))
        started = time.monotonic()
        output = _Output()
        try:
            with _Watchdog(transport, _remaining(deadline)) as watchdog:
                status = _exchange(channel, bounded, stdin, deadline, output)
        except _OutputLimitError as error:
            self._kill(transport, output.pgid)
            self.close()
            raise NodeError(f"{address}: {error}; the command was killed on the node") from error
        except (paramiko.SSHException, OSError, EOFError) as error:  # TimeoutError is an OSError
            self.close()
            if watchdog.fired.is_set() or _remaining(deadline) <= 0:
                raise NodeUnreachableError(f"{address}: no answer within {timeout:.0f} s") from error
            raise NodeUnreachableError(f"{address}: session failed: {error}") from error
        finally:
            channel.close()
        if status != 0 and time.monotonic() - started >= remote_seconds:
            raise NodeError(
                f"{address}: the command ran past its {remote_seconds:.1f} s on the node and was killed "
                f"with its process group (exit {status})"
            )
        return CommandResult(
            exit_status=status,
            stdout=output.stdout.decode(errors="replace"),
            stderr=output.stderr.decode(errors="replace"),
        )

    def _kill(self, transport: paramiko.Transport, pgid: int | None) -> None:
        """Best effort: kill a command's process group right away (its own timeout is the backstop)."""
        if pgid is None:
            return
        deadline = time.monotonic() + KILL_TIMEOUT_SECONDS
        try:
            with _Watchdog(transport, KILL_TIMEOUT_SECONDS):
                channel = transport.open_session(timeout=KILL_TIMEOUT_SECONDS)
                try:
                    _exchange(channel, self._sudo(f"kill -s KILL -- -{pgid}"), b"", deadline, _Output())
                finally:
                    channel.close()
        except (paramiko.SSHException, OSError, EOFError, _OutputLimitError):
            pass  # the transport is closed next; the node's timeout still ends the command

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None


class NodeConnections:
    """Persistent clients shared by every reconcile of the process: one per pair and node endpoint,
    replaced (and the old session closed) when anything that shapes the session changes, e.g. a rotated
    key."""

    def __init__(self) -> None:
        self._clients: dict[str, tuple[str, SSHNodeClient]] = {}  # pair|address:port -> (identity, client)
        self._lock = threading.Lock()

    def client(self, target: SSHTarget) -> SSHNodeClient:
        endpoint = f"{target.pair}|{target.address}:{target.port}"
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
