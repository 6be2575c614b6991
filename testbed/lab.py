"""A network-namespace lab that behaves like two LB servers, two backends and a client.

Topology (see testbed/addressing.py for the address plan, chosen at every start so that it shadows
nothing the machine routes or must reach; the chosen plan is recorded in STATE_FILE):

    root namespace --lbp-mgmt-- [br-mgmt]  --mgmt0-- lb1, lb2 (sshd)
    client         --eth0------ [br-front] --eth0--- lb1, lb2 (nginx, keepalived; VRRP and VIPs here)
    be1, be2       --eth0------ [br-back]  --eth1--- lb1, lb2
                                 (bridges live in the switch namespace lbp-sw)

More pairs of LB nodes (lb3 and lb4, ...) can be asked for at start (`Lab.up(pairs=N)`, LBPAIR_LAB_PAIRS)
or racked into and out of a running lab (`Lab.resize()`); they sit on the same three bridges with host
numbers and VIPs of their own.

Each LB node runs as `unshare --pid --mount --uts ... tini -s -- node-init` inside its network namespace,
so it has its own PID 1, process table, hostname, /run, /var/log, /root and /tmp, and its own
/etc/{nginx,keepalived,ssh} via `ip netns exec`'s /etc/netns mechanism: the operator reaches it over SSH
exactly as it would reach a real server. Everything the lab creates is named `lbp-*` or lives under
STATE_DIR, so `cleanup()` can remove the remains of a crashed run without a state file.

Processes the lab starts are recorded by PID in STATE_DIR/lab.json and only those (plus whatever runs
inside a lab namespace) are ever killed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from testbed import machine
from testbed.addressing import (
    BACKEND_PORTS,
    CLIENT,
    NAME_PREFIX,
    ROOT_MGMT_LINK,
    ROOT_MGMT_PEER,
    SSH_PORT,
    SWITCH_NAMESPACE,
    AddressPlan,
    AddressPlanError,
    Host,
    Protected,
    Role,
    Segment,
    choose_plan,
    conflicts,
    explain_plan,
    pairs_from_environment,
    pin_variable,
    pins_from_environment,
)

STATE_DIR = Path("/run/lbpair-lab")
STATE_FILE = STATE_DIR / "lab.json"
CLIENT_KEY = STATE_DIR / "id_ed25519"
KNOWN_HOSTS = STATE_DIR / "known_hosts"
ETC_NETNS = Path("/etc/netns")
NODE_SCRIPTS = Path(__file__).resolve().parent / "node"
# Per-node private directories under nodes/<node>/ and their modes; node-init mounts each over its
# system path (var-log over /var/log, ...).
NODE_PRIVATE_DIRS = {
    "var-log": 0o755,
    "var-cache": 0o755,
    "root": 0o700,
    "tmp": 0o1777,
    "var-lib-changes": 0o755,  # overlayfs upper layer of /var/lib
    "var-lib-work": 0o700,  # overlayfs work directory
    "run": 0o755,
}
# Commands inside the lab get a fixed environment, like a login on a server, not the caller's venv.
NODE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
VRRP_PROTOCOL = 112
PARTITION_TABLE = "lbp_vrrp_partition"
BLACKHOLE_TABLE = "lbp_mgmt_blackhole"
# What the lab runs itself, and what its nodes run.
REQUIRED_TOOLS = ("ip", "ss", "nft", "nsenter", "unshare", "tini", "ssh-keygen", "curl")
REQUIRED_DAEMONS = ("nginx", "keepalived", "sshd")
BOOT_TIMEOUT_S = 20.0
KILL_TIMEOUT_S = 5.0

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(f"[lab] {message}", file=sys.stderr, flush=True)


class LabError(RuntimeError):
    """The lab cannot be brought up or used as asked; the message says why."""


class LabCommandError(subprocess.CalledProcessError):
    """A command failed; unlike CalledProcessError its message carries the command's stderr."""

    def __str__(self) -> str:
        stderr = self.stderr.strip() if isinstance(self.stderr, str) else ""
        return f"{super().__str__()}: {stderr}" if stderr else super().__str__()


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    stdin_text: str | None = None,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        list(argv), input=stdin_text, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and completed.returncode != 0:
        raise LabCommandError(completed.returncode, list(argv), completed.stdout, completed.stderr)
    return completed


def ip_in(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`ip -n NAMESPACE ARGS...`: iproute2 acting inside a namespace, without entering it."""
    return run(["ip", "-n", namespace, *args])


# --- processes -----------------------------------------------------------------------------------

# Processes started by this Python process. A killed child stays a zombie (and looks alive in /proc)
# until its parent waits for it, so this process reaps its own children when it checks on them.
_spawned: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(argv: Sequence[str], log_path: Path) -> int:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=NODE_ENV,
            # Own session: a Ctrl-C aimed at pytest must not reach the nodes half-way through a test;
            # teardown (or `lab cleanup`) stops them deliberately.
            start_new_session=True,
        )
    _spawned[process.pid] = process
    return process.pid


def _process_alive(pid: int) -> bool:
    spawned = _spawned.get(pid)
    if spawned is not None and spawned.poll() is not None:
        del _spawned[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the command name, which is in parentheses and may contain spaces.
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def _child_pids(parent_pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent_pid:
            children.append(int(entry.name))
    return children


def _kill_and_wait(pids: Iterable[int], timeout: float = KILL_TIMEOUT_S) -> None:
    pids = list(pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    while any(_process_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} survived SIGKILL for {timeout:.0f}s")
        time.sleep(0.02)


def _netns_inode(namespace: str) -> int | None:
    try:
        return (Path("/run/netns") / namespace).stat().st_ino
    except FileNotFoundError:
        return None


def _in_netns(pid: int, namespace: str) -> bool:
    expected = _netns_inode(namespace)
    try:
        return expected is not None and Path(f"/proc/{pid}/ns/net").stat().st_ino == expected
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def _netns_pids(namespace: str) -> list[int]:
    listed = run(["ip", "netns", "pids", namespace], check=False).stdout.split()
    return [int(pid) for pid in listed]


def _kill_namespace_processes(namespace: str) -> None:
    """SIGKILL everything whose network namespace is `namespace`, until nothing is left."""
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while pids := [pid for pid in _netns_pids(namespace) if _process_alive(pid)]:
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} in {namespace} survived SIGKILL")
        _kill_and_wait(pids)


# --- machine-level helpers -----------------------------------------------------------------------


def lab_namespaces() -> list[str]:
    listed = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    names = [entry["name"] for entry in json.loads(listed)] if listed else []
    return sorted(name for name in names if name.startswith(NAME_PREFIX))


def _root_link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


@dataclass(frozen=True)
class PlanChoice:
    """The plan the lab takes on this machine now, what it was chosen against, and why."""

    plan: AddressPlan
    facts: machine.Machine
    explanation: list[str]

    def report(self) -> list[str]:
        lines = [f"address plan: {line}" for line in self.explanation]
        protected = ", ".join(sorted({str(entry.network) for entry in self.facts.protected}))
        lines.append(f"kept clear of routes, interface addresses and protected {protected or '(none)'}")
        lines += [f"warning: could not resolve {name}" for name in self.facts.unresolved]
        return lines


def choose_address_plan(environment: dict[str, str] | None = None) -> PlanChoice:
    """Choose the lab's ranges for this machine (routes, interface addresses, resolvers, /etc/hosts, the
    package registries, LBPAIR_LAB_PROTECT) honouring LBPAIR_LAB_*_CIDR pins; refuse with a LabError
    naming every overlap if no safe plan exists."""
    environment = dict(os.environ) if environment is None else environment
    try:
        pins = pins_from_environment(environment)
        found = machine.gather(environment)
        plan = choose_plan(found.routes, found.interface_addresses, found.protected, pins)
    except AddressPlanError as error:
        raise LabError(f"refusing to create the lab: {error}") from None
    explanation = explain_plan(plan, found.routes, found.interface_addresses, found.protected, pins)
    return PlanChoice(plan, found, explanation)


def _recorded_plan() -> AddressPlan | None:
    try:
        return AddressPlan.from_dict(json.loads(STATE_FILE.read_text())["plan"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def cleanup(progress: Progress = stderr_progress) -> None:
    """Remove every remain of a lab, including one whose state file is gone (crashed run).

    Kills every process whose network namespace is a lab namespace (as `ip netns pids` reports), deletes
    the namespaces, the root management link, /etc/netns/lbp-* and the state directory.
    """
    recorded = _recorded_plan()
    if recorded is not None:
        progress(f"releasing lab ranges {', '.join(f'{s} {n}' for s, n in recorded.networks.items())}")
    namespaces = lab_namespaces()
    for namespace in namespaces:
        _kill_namespace_processes(namespace)
    for namespace in namespaces:
        run(["ip", "netns", "delete", namespace])
    if namespaces:
        progress(f"deleted namespaces {' '.join(namespaces)}")
    # Deleting lbp-sw removes the veth pair; this covers a root link left without its switch. The kernel
    # tears a deleted namespace down in the background (longer with more nodes), so the link may vanish
    # between the check and the delete: only a link that is still there afterwards is an error.
    if _root_link_exists(ROOT_MGMT_LINK):
        deleted = run(["ip", "link", "delete", "dev", ROOT_MGMT_LINK], check=False)
        if deleted.returncode != 0 and _root_link_exists(ROOT_MGMT_LINK):
            raise LabCommandError(deleted.returncode, deleted.args, deleted.stdout, deleted.stderr)
        progress(f"deleted root link {ROOT_MGMT_LINK}")
    etc_dirs = sorted(ETC_NETNS.glob(f"{NAME_PREFIX}*")) if ETC_NETNS.is_dir() else []
    for etc_dir in etc_dirs:
        shutil.rmtree(etc_dir)
    if etc_dirs:
        progress(f"removed {' '.join(str(path) for path in etc_dirs)}")
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
        progress(f"removed {STATE_DIR}")


def leftovers_exist() -> bool:
    return bool(
        lab_namespaces()
        or _root_link_exists(ROOT_MGMT_LINK)
        or STATE_DIR.exists()
        or (ETC_NETNS.is_dir() and any(ETC_NETNS.glob(f"{NAME_PREFIX}*")))
    )


def _ssh_banner_ready(address: ipaddress.IPv4Address) -> bool:
    try:
        with socket.create_connection((str(address), SSH_PORT), timeout=0.5) as connection:
            return connection.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _listening_ports(namespace: str) -> set[int]:
    listed = run(["ss", "-N", namespace, "-H", "-l", "-t", "-n"], check=False).stdout
    # Columns: State Recv-Q Send-Q Local-Address:Port Peer-Address:Port
    return {int(line.split()[3].rpartition(":")[2]) for line in listed.splitlines() if line.strip()}


# --- the lab ---------------------------------------------------------------------------------------


@dataclass
class HostState:
    """What the lab changed about one host at run time (its addresses are in the lab's AddressPlan)."""

    powered: bool = True
    # Processes the lab started for this host, in the root PID namespace: an LB node's `unshare`, a
    # backend's HTTP server.
    pids: list[int] = field(default_factory=list)
    # An LB node's PID 1 (tini): the target for nsenter.
    init_pid: int | None = None
    # Segments whose cable (switch port) is pulled by link_down().
    cut_segments: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HttpResponse:
    status: int  # 0 when no HTTP response arrived
    body: str
    error: str  # curl's message when the request failed
    seconds: float  # wall time of the request, including starting curl in the client namespace

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300  # noqa: PLR2004 - the 2xx class


@dataclass(frozen=True)
class HostHealth:
    host: Host
    powered: bool
    running: bool
    services: dict[str, str]
    held: list[ipaddress.IPv4Interface]
    faults: list[str]

    @property
    def healthy(self) -> bool:
        return self.powered and self.running and not self.faults and "down" not in self.services.values()


class Lab:
    """Handle on a running lab. Build one with `Lab.up()` or attach to a running one with `Lab.attach()`."""

    def __init__(
        self,
        plan: AddressPlan,
        protected: Sequence[Protected],
        hosts: dict[str, HostState],
        partitioned: list[str],
        progress: Progress,
        *,
        blackholed: list[str] | None = None,
    ) -> None:
        self._plan = plan
        self._protected = tuple(protected)
        self._hosts = hosts
        self._partitioned = partitioned
        self._blackholed = blackholed if blackholed is not None else []
        self._progress = progress

    # -- lifecycle --

    @classmethod
    def up(cls, *, reuse: bool = True, pairs: int | None = None, progress: Progress = stderr_progress) -> Lab:
        """Bring the lab up with `pairs` pairs of LB nodes (default: LBPAIR_LAB_PAIRS, else 1); idempotent.

        With `reuse`, a running lab without faults whose ranges are still safe (and match any pins) is
        returned as it is, resized to `pairs`. Otherwise every leftover is removed first, the address plan
        is chosen for the machine as it is now (see choose_address_plan) and printed, and a fresh lab is
        booted on it.
        """
        _require_root_and_tools()
        if pairs is None:
            try:
                pairs = pairs_from_environment(os.environ)
            except AddressPlanError as error:
                raise LabError(str(error)) from None
        if reuse and STATE_FILE.exists():
            try:
                existing = cls.attach(progress=progress)
            except LabError as error:
                progress(f"{error}: rebuilding")
            else:
                unsafe = existing._unsafe_now()
                if unsafe is None and all(health.healthy for health in existing.status()):
                    progress(f"lab already up and healthy: reusing it ({existing._plan_summary()})")
                    existing.resize(pairs)
                    return existing
                progress(f"{unsafe}: rebuilding" if unsafe else "lab is partial or faulty: rebuilding")
        if leftovers_exist():
            progress("removing leftovers of an earlier lab")
            cleanup(progress)
        started = time.monotonic()
        progress("choosing address ranges clear of routes, interface addresses and protected addresses")
        choice = choose_address_plan()
        for line in choice.report():
            progress(line)
        try:
            plan = replace(choice.plan, pairs=pairs)
        except ValueError as error:
            raise LabError(str(error)) from None
        hosts = {name: HostState() for name in plan.hosts}
        lab = cls(plan, choice.facts.protected, hosts, [], progress)
        try:
            lab._build()
        except BaseException:
            progress("bring-up failed: removing what was created")
            cleanup(progress)
            raise
        progress(f"lab up in {time.monotonic() - started:.1f}s")
        return lab

    @classmethod
    def attach(cls, *, progress: Progress = stderr_progress) -> Lab:
        """Handle on the lab a (possibly other) process brought up, from STATE_FILE."""
        try:
            recorded = json.loads(STATE_FILE.read_text())
            plan = AddressPlan.from_dict(recorded["plan"])
            protected = [
                Protected(ipaddress.IPv4Network(entry["network"]), entry["source"])
                for entry in recorded["protected"]
            ]
            hosts = {name: HostState(**recorded["hosts"][name]["state"]) for name in plan.hosts}
            partitioned = list(recorded["vrrp_partitioned"])
            blackholed = list(recorded.get("mgmt_blackholed", []))
        except FileNotFoundError:
            raise LabError(f"no lab is up ({STATE_FILE} does not exist)") from None
        except (ValueError, KeyError, TypeError) as error:
            raise LabError(f"{STATE_FILE} is unreadable ({error!r}); run `lab cleanup`") from None
        return cls(plan, protected, hosts, partitioned, progress, blackholed=blackholed)

    def down(self) -> None:
        """Stop everything the lab started and remove all it created; idempotent."""
        _kill_and_wait(pid for name in self._plan.hosts for pid in self._started_pids(name))
        for state in self._hosts.values():
            state.pids, state.init_pid = [], None
        cleanup(self._progress)
        self._progress("lab down")

    # -- running commands --

    def exec(
        self,
        host: str,
        *argv: str,
        check: bool = True,
        stdin_text: str | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on a host. On LB nodes it runs inside the node (PID, mount, UTS and network
        namespaces), so systemctl, pidof and /run are the node's own."""
        target = self._host(host)
        if target.role is Role.LB:
            init_pid = self._hosts[host].init_pid
            if not self._hosts[host].powered or init_pid is None:
                raise LabError(f"{host} is powered off")
            prefix = ["nsenter", f"--target={init_pid}", "--mount", "--uts", "--net", "--pid", "--wd=/", "--"]
        else:
            prefix = ["ip", "netns", "exec", target.namespace]
        return run([*prefix, *argv], check=check, stdin_text=stdin_text, timeout=timeout, env=NODE_ENV)

    def http_get_via(
        self,
        vip: str | ipaddress.IPv4Address,
        host_header: str,
        path: str = "/",
        *,
        port: int = 80,
        timeout: float = 2.0,
    ) -> HttpResponse:
        """GET http://vip:port/path from the client namespace with the given Host header."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        started = time.monotonic()
        completed = self.exec(
            CLIENT,
            "curl", "--silent", "--show-error", "--max-time", f"{timeout:g}",
            "--header", f"Host: {host_header}",
            "--write-out", "\n%{http_code}",
            f"http://{vip}:{port}{path}",
            check=False,
            timeout=timeout + 5,
        )  # fmt: skip
        body, _, status = completed.stdout.rpartition("\n")
        return HttpResponse(
            status=int(status or 0),
            body=body,
            error=completed.stderr.strip(),
            seconds=time.monotonic() - started,
        )

    def held_addresses(self, host: str) -> list[ipaddress.IPv4Interface]:
        """IPv4 addresses configured on the host's interfaces (loopback excluded), from `ip -o -4 addr
        show`: the ground truth for who holds a VIP, even for a node whose keepalived died."""
        listed = ip_in(self._host(host).namespace, "-o", "-4", "addr", "show").stdout
        held = []
        for line in listed.splitlines():
            words = line.split()
            if words[1] != "lo":
                held.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]))
        return held

    def vip_holders(self, vip: str | ipaddress.IPv4Address) -> list[str]:
        """The LB nodes that have `vip` configured: exactly one is normal, two is split brain."""
        wanted = ipaddress.IPv4Address(vip)
        return [
            node
            for node in self._plan.lb_nodes
            if any(held.ip == wanted for held in self.held_addresses(node))
        ]

    # -- faults --

    def power_off(self, host: str) -> None:
        """Pull the plug: SIGKILL every process of the host and take its switch ports down, so it stops
        answering (a live namespace without processes would still answer with RSTs)."""
        target, state = self._host(host), self._hosts[host]
        if target.role is Role.CLIENT:
            raise LabError("the client has no power switch; use link_down")
        _kill_and_wait(self._started_pids(host))
        _kill_namespace_processes(target.namespace)
        state.powered, state.pids, state.init_pid = False, [], None
        self._apply_switch_ports(host)
        self._save()
        self._progress(f"{host} powered off")

    def power_on(self, host: str) -> None:
        """Boot a powered-off host with the /etc it had; its kernel network state starts fresh as after a
        real reboot (no leftover VIPs, neighbours or firewall rules)."""
        target, state = self._host(host), self._hosts[host]
        if state.powered:
            raise LabError(f"{host} is already powered on")
        self._reset_network_state(target)
        state.powered = True
        self._apply_switch_ports(host)
        self._start_host(target)
        self._wait_ready([target])
        self._save()
        self._progress(f"{host} powered on")

    def link_down(self, host: str, segment: Segment | str = Segment.FRONT) -> None:
        """Pull the host's cable on one network: its switch port goes down, the host sees no carrier."""
        self._set_cut(host, Segment(segment), cut=True)

    def link_up(self, host: str, segment: Segment | str = Segment.FRONT) -> None:
        self._set_cut(host, Segment(segment), cut=False)

    def vrrp_partition(self, node: str) -> None:
        """Drop VRRP (IP protocol 112) to and from the node's front port in the switch: both nodes then
        believe the peer is gone and both become MASTER (split brain). All other traffic still flows."""
        if self._host(node).role is not Role.LB:
            raise LabError(f"{node} is not an LB node")
        if node not in self._partitioned:
            self._partitioned.append(node)
        self._apply_partition()
        self._progress(f"VRRP partitioned: {' '.join(self._partitioned)}")

    def heal_partition(self) -> None:
        self._partitioned.clear()
        self._apply_partition()
        self._progress("VRRP partition healed")

    def mgmt_blackhole(self, node: str) -> None:
        """Drop every frame to and from the node's management port in the switch, silently: to the
        operator the node hangs (connections stall, new ones time out, nothing is refused) while it keeps
        running and serving on its other networks. `lab.exec` still reaches it (not over the network)."""
        if self._host(node).role is not Role.LB:
            raise LabError(f"{node} is not an LB node")
        if node not in self._blackholed:
            self._blackholed.append(node)
        self._apply_blackhole()
        self._progress(f"management blackholed: {' '.join(self._blackholed)}")

    def heal_mgmt(self, node: str | None = None) -> None:
        """End the management blackhole of `node` (of every node if None)."""
        self._blackholed[:] = [] if node is None else [held for held in self._blackholed if held != node]
        self._apply_blackhole()
        self._progress(f"management blackhole healed{'' if node is None else ' for ' + node}")

    def resize(self, pairs: int) -> None:
        """Rack or unrack pairs of LB nodes on the running lab until it has `pairs` pairs: new nodes boot
        fresh (stock /etc, new host keys, pinned in known_hosts); removed ones are powered off and every
        trace of them (namespace, cables, /etc/netns, state) goes. Pair 1 is always there."""
        try:
            planned = replace(self._plan, pairs=pairs)
        except ValueError as error:
            raise LabError(str(error)) from None
        if pairs < self._plan.pairs:
            self._unrack(planned)
        elif pairs > self._plan.pairs:
            self._rack(planned)
        else:
            return
        self._progress(f"lab resized to {pairs} pair(s) of LB nodes: {' '.join(self._plan.lb_nodes)}")

    def _rack(self, planned: AddressPlan) -> None:
        """Boot the hosts `planned` has and this lab has not; on failure, remove them again."""
        previous = self._plan
        added = [host for name, host in planned.hosts.items() if name not in previous.hosts]
        self._plan = planned
        self._hosts.update((host.name, HostState()) for host in added)
        try:
            self._save()
            for host in added:
                self._progress(f"racking {host.name}")
                self._cable_host(host)
                _prepare_lb_node(host)
            self._write_known_hosts()
            for host in added:
                self._start_host(host)
            self._save()
            self._wait_ready(added)
        except BaseException:
            self._progress("racking failed: removing the new nodes")
            self._unrack(previous)
            raise

    def _unrack(self, planned: AddressPlan) -> None:
        """Power off for good and remove the hosts this lab has and `planned` has not."""
        removed = [host for name, host in self._plan.hosts.items() if name not in planned.hosts]
        for host in removed:
            self._progress(f"unracking {host.name}")
            state = self._hosts.pop(host.name, HostState())
            recorded = [*state.pids, *([state.init_pid] if state.init_pid else [])]
            _kill_and_wait(pid for pid in recorded if _in_netns(pid, host.namespace))
            _kill_namespace_processes(host.namespace)
            if _netns_inode(host.namespace) is not None:
                run(["ip", "netns", "delete", host.namespace])  # its cables (veth pairs) go with it
            shutil.rmtree(ETC_NETNS / host.namespace, ignore_errors=True)
            shutil.rmtree(STATE_DIR / "nodes" / host.name, ignore_errors=True)
        # The new veths of a host racked again later get new MAC addresses: forget the old ones now, or
        # traffic to the host would go to a MAC that no longer exists until the neighbour entry expires.
        for host in removed:
            for interface in host.interfaces:
                address = str(interface.address.ip)
                if interface.segment is Segment.MGMT:
                    run(["ip", "neigh", "flush", "to", address, "dev", ROOT_MGMT_LINK], check=False)
                for other in planned.hosts.values():
                    if other.has_segment(interface.segment):
                        run(["ip", "-n", other.namespace, "neigh", "flush", "to", address], check=False)
        gone = {host.name for host in removed}
        self._partitioned[:] = [node for node in self._partitioned if node not in gone]
        self._blackholed[:] = [node for node in self._blackholed if node not in gone]
        self._plan = planned
        self._apply_partition()
        self._apply_blackhole()
        self._write_known_hosts()
        self._save()

    # -- inspection --

    @property
    def plan(self) -> AddressPlan:
        """The address plan this lab was built on (chosen for the machine at `Lab.up()`)."""
        return self._plan

    @property
    def protected(self) -> tuple[Protected, ...]:
        """What the plan was chosen to keep clear of: resolvers, /etc/hosts, package registries, ..."""
        return self._protected

    @property
    def ssh_key_path(self) -> Path:
        return CLIENT_KEY

    @property
    def known_hosts_path(self) -> Path:
        return KNOWN_HOSTS

    def mgmt_address(self, node: str) -> ipaddress.IPv4Address:
        return self._host(node).mgmt_address

    def host_key(self, node: str) -> str:
        """The node's SSH host key as an OpenSSH public key line ("ssh-ed25519 AAAA..."), for pinning."""
        address = str(self.mgmt_address(node))
        for line in KNOWN_HOSTS.read_text().splitlines():
            host, _, key = line.partition(" ")
            if address in host.split(","):
                return key.strip()
        raise LabError(f"no host key for {node} ({address}) in {KNOWN_HOSTS}")

    def status(self) -> list[HostHealth]:
        return [self._health(host) for host in self._plan.hosts.values()]

    def describe(self) -> dict[str, Any]:
        """Everything another process needs to use the lab; written to STATE_FILE."""
        return {
            "state_dir": str(STATE_DIR),
            "ssh_key": str(CLIENT_KEY),
            "known_hosts": str(KNOWN_HOSTS),
            "switch_namespace": SWITCH_NAMESPACE,
            "root_mgmt_link": {"name": ROOT_MGMT_LINK, "address": str(self._plan.root_mgmt_address)},
            "plan": self._plan.as_dict(),
            "vips": [str(vip) for vip in self._plan.vips],
            "pairs": [
                {
                    "nodes": list(self._plan.pair_nodes(pair)),
                    "vips": [str(vip) for vip in self._plan.pair_vips(pair)],
                }
                for pair in range(1, self._plan.pairs + 1)
            ],
            "protected": [
                {"network": str(entry.network), "source": entry.source} for entry in self._protected
            ],
            "hosts": {
                name: {
                    "role": str(host.role),
                    "namespace": host.namespace,
                    "interfaces": {
                        interface.name: {"segment": str(interface.segment), "address": str(interface.address)}
                        for interface in host.interfaces
                    },
                    "state": asdict(self._hosts[name]),
                }
                for name, host in self._plan.hosts.items()
            },
            "vrrp_partitioned": list(self._partitioned),
            "mgmt_blackholed": list(self._blackholed),
        }

    # -- internals --

    def _host(self, name: str) -> Host:
        try:
            return self._plan.hosts[name]
        except KeyError:
            raise LabError(f"unknown host {name!r}; the lab has {', '.join(self._plan.hosts)}") from None

    def _plan_summary(self) -> str:
        return ", ".join(f"{segment} {network}" for segment, network in self._plan.networks.items())

    def _unsafe_now(self) -> str | None:
        """Why this running lab may not be reused as it is (a pin changed, or one of its ranges now
        overlaps something of the machine's, e.g. a registry that moved), or None."""
        try:
            pins = pins_from_environment(os.environ)
        except AddressPlanError as error:
            raise LabError(str(error)) from None
        for segment, network in pins.items():
            if self._plan.network(segment) != network:
                return f"{pin_variable(segment)}={network} but the running lab's {segment} network is " + str(
                    self._plan.network(segment)
                )
        found = machine.gather()
        for segment, network in self._plan.networks.items():
            overlaps = conflicts(network, found.routes, found.interface_addresses, found.protected)
            if overlaps:
                return f"the running lab's {segment} network {network} now overlaps {'; '.join(overlaps)}"
        return None

    def _started_pids(self, host: str) -> list[int]:
        """The recorded PIDs of the host that still belong to it: a PID found in another network
        namespace has been reused by an unrelated process (stale state file) and must not be killed."""
        state = self._hosts[host]
        recorded = [*state.pids, *([state.init_pid] if state.init_pid else [])]
        return [pid for pid in recorded if _in_netns(pid, self._host(host).namespace)]

    def _save(self) -> None:
        STATE_FILE.write_text(json.dumps(self.describe(), indent=2) + "\n")

    def _build(self) -> None:
        STATE_DIR.mkdir(mode=0o700, parents=True)
        bin_dir = STATE_DIR / "bin"
        # Nodes run copies, so editing the repo (or a read-only checkout) never affects a running lab.
        shutil.copytree(NODE_SCRIPTS, bin_dir)
        self._progress(f"creating switch namespace {SWITCH_NAMESPACE} with bridges")
        _create_namespace(SWITCH_NAMESPACE)
        for segment in Segment:
            # No STP and no forwarding delay: ports forward as soon as they are up. No multicast snooping:
            # VRRP adverts to 224.0.0.18 must reach every port.
            bridge_options = ("stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
            ip_in(SWITCH_NAMESPACE, "link", "add", f"br-{segment}", "type", "bridge", *bridge_options)
            ip_in(SWITCH_NAMESPACE, "link", "set", f"br-{segment}", "up")
        self._progress("creating host namespaces and cabling them to the switch")
        for host in self._plan.hosts.values():
            self._cable_host(host)
        root_address = self._plan.root_mgmt_address
        self._progress(f"root management link {ROOT_MGMT_LINK} {root_address}")
        run(["ip", "link", "add", ROOT_MGMT_LINK, "type", "veth", "peer", "name", ROOT_MGMT_PEER,
             "netns", SWITCH_NAMESPACE])  # fmt: skip
        # Before the link comes up, so it never sends IPv6 router solicitations or MLD reports.
        Path(f"/proc/sys/net/ipv6/conf/{ROOT_MGMT_LINK}/disable_ipv6").write_text("1\n")
        run(["ip", "addr", "add", str(root_address), "dev", ROOT_MGMT_LINK])
        run(["ip", "link", "set", ROOT_MGMT_LINK, "up"])
        ip_in(SWITCH_NAMESPACE, "link", "set", ROOT_MGMT_PEER, "master", f"br-{Segment.MGMT}", "up")
        self._progress("generating the client key and per-node /etc (stock nginx, keepalived, fresh ssh)")
        _generate_key(CLIENT_KEY, comment="lbpair-lab-client")
        for node in self._plan.lb_nodes:
            _prepare_lb_node(self._host(node))
        self._write_known_hosts()
        self._save()
        for host in self._plan.hosts.values():
            self._start_host(host)
        self._save()
        self._wait_ready(list(self._plan.hosts.values()))

    def _cable_host(self, host: Host) -> None:
        """The host's namespace, and one veth per interface whose peer is a port of the segment's bridge."""
        _create_namespace(host.namespace)
        for interface in host.interfaces:
            port = host.switch_port(interface.segment)
            run([
                "ip", "link", "add", interface.name, "netns", host.namespace, "type", "veth",
                "peer", "name", port, "netns", SWITCH_NAMESPACE,
            ])  # fmt: skip
            ip_in(SWITCH_NAMESPACE, "link", "set", port, "master", f"br-{interface.segment}")
        self._reset_network_state(host)
        self._apply_switch_ports(host.name)

    def _write_known_hosts(self) -> None:
        KNOWN_HOSTS.write_text(
            "".join(
                f"{self._host(node).mgmt_address} {_host_public_key(self._host(node))}\n"
                for node in self._plan.lb_nodes
            )
        )

    def _reset_network_state(self, host: Host) -> None:
        """Give the host's namespace the state of a freshly booted machine: only static addresses."""
        for interface in host.interfaces:
            ip_in(host.namespace, "addr", "flush", "dev", interface.name)
            ip_in(host.namespace, "addr", "add", str(interface.address), "dev", interface.name)
            ip_in(host.namespace, "link", "set", interface.name, "up")
        ip_in(host.namespace, "neigh", "flush", "all")
        run(["ip", "netns", "exec", host.namespace, "nft", "flush", "ruleset"])

    def _apply_switch_ports(self, host: str) -> None:
        """A host's switch port is up only while the host is powered and that cable is not pulled."""
        state = self._hosts[host]
        for interface in self._host(host).interfaces:
            up = state.powered and str(interface.segment) not in state.cut_segments
            port = self._host(host).switch_port(interface.segment)
            ip_in(SWITCH_NAMESPACE, "link", "set", port, "up" if up else "down")

    def _set_cut(self, host: str, segment: Segment, *, cut: bool) -> None:
        target, state = self._host(host), self._hosts[host]
        if not target.has_segment(segment):
            raise LabError(f"{host} has no {segment} link")
        if cut and str(segment) not in state.cut_segments:
            state.cut_segments.append(str(segment))
        if not cut and str(segment) in state.cut_segments:
            state.cut_segments.remove(str(segment))
        self._apply_switch_ports(host)
        self._save()
        self._progress(f"{host} {segment} link {'down' if cut else 'up'}")

    def _apply_partition(self) -> None:
        rules = "".join(
            f'    iifname "{port}" ip protocol {VRRP_PROTOCOL} drop\n'
            f'    oifname "{port}" ip protocol {VRRP_PROTOCOL} drop\n'
            for port in (self._host(node).switch_port(Segment.FRONT) for node in self._partitioned)
        )
        _set_switch_filter(PARTITION_TABLE, rules)
        self._save()

    def _apply_blackhole(self) -> None:
        rules = "".join(
            f'    iifname "{port}" drop\n    oifname "{port}" drop\n'
            for port in (self._host(node).switch_port(Segment.MGMT) for node in self._blackholed)
        )
        _set_switch_filter(BLACKHOLE_TABLE, rules)
        self._save()

    def _start_host(self, host: Host) -> None:
        state = self._hosts[host.name]
        if host.role is Role.LB:
            self._progress(f"booting {host.name}")
            node_dir = STATE_DIR / "nodes" / host.name
            unshare_pid = _spawn(
                [
                    "ip", "netns", "exec", host.namespace,
                    "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--uts", "--mount",
                    "tini", "-s", "--",
                    str(STATE_DIR / "bin" / "node-init"), host.name, str(node_dir),
                    str(STATE_DIR / "bin" / "systemctl"),
                ],
                node_dir / "console.log",
            )  # fmt: skip
            state.pids = [unshare_pid]
            state.init_pid = _wait_for_child(unshare_pid, host)
        elif host.role is Role.BACKEND:
            self._progress(f"starting HTTP backend {host.name} on ports {', '.join(map(str, BACKEND_PORTS))}")
            port_args = [arg for port in BACKEND_PORTS for arg in ("--port", str(port))]
            server = STATE_DIR / "bin" / "http-backend.py"
            state.pids = [
                _spawn(
                    ["ip", "netns", "exec", host.namespace, sys.executable, str(server), "--name", host.name,
                     *port_args],
                    STATE_DIR / f"{host.name}.log",
                )
            ]  # fmt: skip

    def _wait_ready(self, hosts: Sequence[Host]) -> None:
        waiting = {host.name for host in hosts if host.role is not Role.CLIENT}
        self._progress(f"waiting for {', '.join(sorted(waiting))}")
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while waiting:
            for name in sorted(waiting):
                host = self._host(name)
                if not all(_process_alive(pid) for pid in self._hosts[name].pids):
                    raise LabError(
                        f"{name} died while booting; see {_log_path(host)}:\n{_tail(_log_path(host))}"
                    )
                if host.role is Role.LB:
                    ready = _ssh_banner_ready(host.mgmt_address)
                else:
                    ready = set(BACKEND_PORTS) <= _listening_ports(host.namespace)
                if ready:
                    waiting.discard(name)
            if waiting and time.monotonic() > deadline:
                logs = "\n".join(
                    f"{_log_path(self._host(name))}:\n{_tail(_log_path(self._host(name)))}"
                    for name in waiting
                )
                raise LabError(f"not ready after {BOOT_TIMEOUT_S:.0f}s: {', '.join(sorted(waiting))}\n{logs}")
            if waiting:
                time.sleep(0.05)

    def _health(self, host: Host) -> HostHealth:
        state = self._hosts[host.name]
        namespace_exists = _netns_inode(host.namespace) is not None
        # The client runs nothing of its own; every other host is running only while its processes live.
        if host.role is Role.CLIENT:
            running = namespace_exists
        else:
            running = namespace_exists and bool(state.pids) and all(_process_alive(pid) for pid in state.pids)
        services: dict[str, str] = {}
        if host.role is Role.LB and running and state.powered:
            services["sshd"] = "up" if _ssh_banner_ready(host.mgmt_address) else "down"
            for unit in ("nginx", "keepalived"):
                services[unit] = self.exec(
                    host.name, "systemctl", "is-active", unit, check=False
                ).stdout.strip()
        elif host.role is Role.BACKEND and running and state.powered:
            listening = _listening_ports(host.namespace)
            for port in BACKEND_PORTS:
                services[f"http:{port}"] = "up" if port in listening else "down"
        faults = [f"{segment} link down" for segment in state.cut_segments]
        if host.name in self._partitioned:
            faults.append("VRRP partitioned")
        if host.name in self._blackholed:
            faults.append("management blackholed")
        if not state.powered:
            faults.append("powered off")
        held = self.held_addresses(host.name) if namespace_exists else []
        return HostHealth(host, state.powered, running, services, held, faults)


def _set_switch_filter(table: str, rules: str) -> None:
    """Replace the switch's bridge table `table` with one forward chain holding `rules` (none: no table)."""
    # add+delete makes the delete valid whether or not the table exists; all in one transaction.
    ruleset = f"add table bridge {table}\ndelete table bridge {table}\n"
    if rules:
        ruleset += (
            f"table bridge {table} {{\n  chain forward {{\n"
            f"    type filter hook forward priority filter; policy accept;\n{rules}  }}\n}}\n"
        )
    run(["ip", "netns", "exec", SWITCH_NAMESPACE, "nft", "-f", "-"], stdin_text=ruleset)


def _require_root_and_tools() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, bind mounts)")
    tools = (*REQUIRED_TOOLS, *REQUIRED_DAEMONS)
    missing = [tool for tool in tools if shutil.which(tool, path=NODE_ENV["PATH"]) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (hack/install-deps.sh installs them)")


def _create_namespace(namespace: str) -> None:
    run(["ip", "netns", "add", namespace])
    # Interfaces created from now on inherit this: the lab is IPv4-only, and IPv6 on its links would only
    # add router solicitations and MLD chatter. Loopback exists already and keeps ::1, which the stock
    # nginx site needs for `listen [::]:80`.
    run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
    ip_in(namespace, "link", "set", "lo", "up")


def _generate_key(path: Path, *, comment: str) -> None:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _host_public_key(host: Host) -> str:
    """'ssh-ed25519 AAAA...' without the comment, as known_hosts wants it."""
    public_key = (ETC_NETNS / host.namespace / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
    return " ".join(public_key[:2])


def _prepare_lb_node(host: Host) -> None:
    """Give the node its own /etc/{nginx,keepalived,ssh} (ip netns exec mounts /etc/netns/<ns>/* over
    /etc) and its private directories, with root's authorized_keys holding the lab's client key."""
    etc = ETC_NETNS / host.namespace
    etc.mkdir(parents=True)
    # Stock configs, like a freshly installed server; keepalived's directory holds only the sample.
    for name in ("nginx", "keepalived"):
        shutil.copytree(Path("/etc") / name, etc / name, symlinks=True)
    ssh_dir = etc / "ssh"
    ssh_dir.mkdir(mode=0o755)
    shutil.copy2("/etc/ssh/moduli", ssh_dir / "moduli")
    _generate_key(ssh_dir / "ssh_host_ed25519_key", comment=f"root@{host.name}")
    (ssh_dir / "sshd_config").write_text(
        f"# Lab node {host.name}: sshd on the management network only, root by key only.\n"
        f"ListenAddress {host.mgmt_address}:{SSH_PORT}\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        # No PAM stack is configured for a namespace node, and key auth needs none.
        "UsePAM no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "Subsystem sftp internal-sftp\n"
        # Every authentication attempt in the node's /var/log/sshd.log (node-init): the e2e tests prove
        # from it that a refused host key ended the connection before any userauth request reached sshd.
        "LogLevel DEBUG1\n"
    )
    node_dir = STATE_DIR / "nodes" / host.name
    for name, mode in NODE_PRIVATE_DIRS.items():
        (node_dir / name).mkdir(parents=True)
        (node_dir / name).chmod(mode)  # mkdir's mode is filtered by the umask; these must be exact
    ssh_home = node_dir / "root" / ".ssh"
    ssh_home.mkdir(mode=0o700)
    authorized_keys = ssh_home / "authorized_keys"
    authorized_keys.write_text(CLIENT_KEY.with_suffix(".pub").read_text())
    authorized_keys.chmod(0o600)


def _wait_for_child(parent_pid: int, host: Host) -> int:
    """PID of the single child of `parent_pid` (an LB node's tini, forked by unshare)."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while not (children := _child_pids(parent_pid)):
        if not _process_alive(parent_pid) or time.monotonic() > deadline:
            raise LabError(f"{host.name}: unshare did not start the node's init:\n{_tail(_log_path(host))}")
        time.sleep(0.01)
    return children[0]


def _log_path(host: Host) -> Path:
    if host.role is Role.LB:
        return STATE_DIR / "nodes" / host.name / "console.log"
    return STATE_DIR / f"{host.name}.log"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except (FileNotFoundError, IsADirectoryError):
        return f"({path} is not readable)"
