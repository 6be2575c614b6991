#!/usr/bin/python3
"""lbpair nginx watcher: tells keepalived within tens of milliseconds that nginx is gone or deaf.

Shipped to each node as a managed file (beside keepalived.conf) with its JSON config, and started by the
health-check script keepalived runs every second (so it comes back after a crash, a reboot or an update).
It writes 0 (nginx serves) or 1 (nginx is gone or refuses connections) to a keepalived `track_file`, which
keepalived watches with inotify: with weight 0 a 1 puts the VRRP instances into FAULT at once, so the peer
takes the VIPs after its skew time (RFC 5798 6.4.2), not after the next run of the 1 s check script.

Why this shape (measured in the lab; see the README's failover section):
- nginx's exit is seen through a pidfd of the master (poll wakes the instant it exits; no fork, no /proc
  scan). keepalived's vrrp_track_process would do the same through the kernel's proc connector, which
  answers only in the initial network namespace.
- a deaf nginx (a graceful stop closes the listeners first, a crashed master leaves none) is seen by a
  non-blocking connect to each of the pair's listeners on this node's address every interval: no fork,
  a few syscalls, closed with a reset so no TIME_WAIT piles up.
- a hung nginx that still completes handshakes is left to the check script (the backstop).

Standard library only; stdlib of Debian 12's python3 (3.11). It runs as root, single-threaded.
Usage: nginx_watch.py CONFIG_JSON. It exits when its own file or its config is removed (uninstall, or the
pair stops using it) and re-executes itself when either changes (an update), so the check script never
has to stop it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HEALTHY, UNHEALTHY = "0", "1"
CONNECT_TIMEOUT_SECONDS = 0.02


@dataclass(frozen=True)
class WatchConfig:
    pid_file: Path
    track_file: Path
    state_dir: Path
    listeners: tuple[tuple[str, int], ...]
    interval_milliseconds: int

    @classmethod
    def load(cls, path: Path) -> WatchConfig:
        data = json.loads(path.read_text())
        return cls(
            pid_file=Path(data["pidFile"]),
            track_file=Path(data["trackFile"]),
            state_dir=Path(data["stateDir"]),
            listeners=tuple((address, int(port)) for address, port in data["listeners"]),
            interval_milliseconds=int(data["intervalMilliseconds"]),
        )


def files_signature(*paths: Path) -> tuple[tuple[int, int, int], ...] | None:
    """(inode, size, mtime) of each file; None once one is gone."""
    try:
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in (path.stat() for path in paths))
    except FileNotFoundError:
        return None


def files_hash(*paths: Path) -> str:
    """What the node runs: sha256 over the watcher's file then its config (the status reports it)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def accepts(address: str, port: int) -> bool:
    """A TCP handshake with the listener completes (non-blocking connect, closed with a reset)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        result = probe.connect_ex((address, port))
        if result == errno.EINPROGRESS:
            _, writable, _ = select.select([], [probe], [], CONNECT_TIMEOUT_SECONDS)
            if not writable:
                return False
            result = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return result == 0


def master_pid(pid_file: Path) -> int | None:
    """The pid in nginx's pid file if that process is a live nginx (not a zombie: its pidfd would read
    as exited at once, and the watcher would spin on it)."""
    try:
        pid = int(pid_file.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return pid if name == "nginx" and rest.split()[:1] != ["Z"] else None


def write_atomically(path: Path, text: str) -> None:
    """Write then rename: keepalived (inotify, IN_MOVED_TO) and the probe never read a torn file."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    temporary.replace(path)


class Watcher:
    def __init__(self, script: Path, config_path: Path) -> None:
        self.sources = (script, config_path)
        self.signature = files_signature(*self.sources)
        self.config = WatchConfig.load(config_path)
        self.hash = files_hash(*self.sources)
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.verdict: str | None = None

    def run(self) -> None:
        interval = self.config.interval_milliseconds
        while True:
            signature = files_signature(*self.sources)
            if signature is None:
                return  # uninstalled: keepalived no longer tracks the file (or is being stopped)
            if signature != self.signature:
                os.execv(sys.executable, [sys.executable, *map(str, self.sources)])  # noqa: S606 - our own file
            self.publish(UNHEALTHY if not self.follow_master() else self.listening())
            poller = select.poll()
            if self.pidfd is not None:
                poller.register(self.pidfd, select.POLLIN)
            poller.poll(interval)  # wakes at once when the master exits

    def follow_master(self) -> bool:
        """Keep a pidfd on the current master; False while there is none."""
        if self.pidfd is not None and select.select([self.pidfd], [], [], 0)[0]:
            os.close(self.pidfd)
            self.pid = self.pidfd = None
        pid = master_pid(self.config.pid_file)
        if pid != self.pid:
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None
            self.pid = pid
            if pid is not None:
                try:
                    self.pidfd = os.pidfd_open(pid)
                except ProcessLookupError:
                    self.pid = None
        return self.pidfd is not None

    def listening(self) -> str:
        every = all(accepts(address, port) for address, port in self.config.listeners)
        return HEALTHY if every else UNHEALTHY

    def publish(self, verdict: str) -> None:
        if verdict == self.verdict:
            return
        self.verdict = verdict
        write_atomically(self.config.track_file, verdict + "\n")
        status = f"{os.getpid()} {self.hash} {'up' if verdict == HEALTHY else 'down'} {time.time():.3f}\n"
        write_atomically(self.config.state_dir / "status", status)


def main(argv: list[str]) -> int:
    script, config_path = Path(argv[0]).resolve(), Path(argv[1])
    config = WatchConfig.load(config_path)
    config.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    config.track_file.parent.mkdir(mode=0o755, parents=True, exist_ok=True)  # the agent makes it too
    lock = os.open(config.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # One watcher per node. The lock closes on execv (an update), and the new image takes it again.
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    write_atomically(config.state_dir / "pid", f"{os.getpid()}\n")
    with contextlib.suppress(KeyboardInterrupt):
        Watcher(script, config_path).run()
    # Uninstalled: the probe must not report a watcher that has gone.
    for name in ("status", "pid"):
        (config.state_dir / name).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
