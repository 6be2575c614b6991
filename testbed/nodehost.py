"""What the test bed's kubelet node (testbed/kubenode.py) changes on the machine, recorded before it
starts and restored afterwards, including after a crash (`python -m testbed cleanup`).

kubelet and containerd touch machine-wide state that no flag moves into a run directory: sysctls
(vm.overcommit_memory, kernel.panic, kernel.panic_on_oops), `kubepods` cgroups in every hierarchy, fixed
paths (/var/lib/kubelet, /var/log/containers, /run/containerd, /var/lib/cni), CNI network namespaces and
the bridge, mounts (pod volumes, sandbox /dev/shm). The node's own links and its address range are chosen
here too: a /24 of the benchmarking range that overlaps nothing the machine routes or must reach and no
lab network, taken from the top of the range so the lab's own choice (from the bottom) never meets it.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed import machine
from testbed.addressing import (
    BENCHMARKING_RANGE,
    DOCUMENTATION_PLAN,
    MAX_PREFIX_LENGTH,
    SERVICE_CLUSTER_NETWORK,
    conflicts,
)
from testbed.lab import Progress

# Changed by kubelet at start (it sets what it needs; protectKernelDefaults would make it refuse instead).
KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
# kubelet's iptables chains: KUBE-FIREWALL (drops packets to 127.0.0.0/8 from other sources, hooked into
# INPUT and OUTPUT), KUBE-KUBELET-CANARY and KUBE-IPTABLES-HINT, in the ip and ip6 filter/nat/mangle
# tables it creates when they are missing (iptables-nft: nftables tables of those names).
KUBELET_CHAIN_PREFIX = "KUBE-"
IPTABLES_FAMILIES = {"ip": "iptables", "ip6": "ip6tables"}
IPTABLES_TABLES = ("filter", "nat", "mangle")
# Fixed paths kubelet, containerd and libcni use whatever their configured directories are.
FIXED_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/run/containerd"),
    Path("/var/lib/cni"),
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS_CGROUP = "kubepods"
NETNS_DIR = Path("/run/netns")
CNI_NETNS_PREFIX = "cni-"
# Not "lbp-": the lab's cleanup owns that prefix, and machine.gather() leaves lbp-* links out, so the
# lab sees these links and keeps clear of the node's range.
NODE_LINK = "lbpn-node"  # a port-less bridge holding the node's address
CNI_BRIDGE = "lbpn-cni0"
NODE_HOST_NUMBER = 1
POD_RANGE_START, POD_RANGE_END = 128, 254


class NodeHostError(RuntimeError):
    pass


def _sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def _set_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise NodeHostError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def choose_node_network(
    lab_networks: Iterable[ipaddress.IPv4Network], facts: machine.Machine | None = None
) -> ipaddress.IPv4Network:
    """The highest /24 of the benchmarking range clear of the machine's routes, interface addresses and
    protected addresses (as the lab judges them, testbed/addressing.py), of the running lab's networks and
    of the documentation plan and the control plane's ClusterIP range."""
    facts = facts or machine.gather()
    taken = [*lab_networks, *DOCUMENTATION_PLAN.networks.values(), SERVICE_CLUSTER_NETWORK]
    for network in reversed(list(BENCHMARKING_RANGE.subnets(new_prefix=MAX_PREFIX_LENGTH))):
        if any(network.overlaps(other) for other in taken):
            continue
        if not conflicts(network, facts.routes, facts.interface_addresses, facts.protected):
            return network
    raise NodeHostError(f"no free /24 in {BENCHMARKING_RANGE} for the kubelet node")


@dataclass
class HostRecord:
    """The machine's state before the node started, and what the node created; JSON in the node's state
    file so a later process (cleanup after a crash) can restore it."""

    network: str
    sysctls: dict[str, str] = field(default_factory=dict)
    # FIXED_PATHS that did not exist before: only those are removed again.
    created_paths: list[str] = field(default_factory=list)
    # nftables tables ("ip filter", ...) that existed before: kubelet's chains are removed from those,
    # the others are deleted once empty.
    nft_tables: list[str] = field(default_factory=list)

    @classmethod
    def take(cls, network: ipaddress.IPv4Network) -> HostRecord:
        return cls(
            network=str(network),
            sysctls={name: _sysctl(name) for name in KUBELET_SYSCTLS},
            created_paths=[str(path) for path in FIXED_PATHS if not path.exists()],
            nft_tables=_nft_tables(),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> HostRecord:
        recorded = json.loads(text)
        return cls(
            str(recorded["network"]),
            dict(recorded["sysctls"]),
            list(recorded["created_paths"]),
            list(recorded["nft_tables"]),
        )

    @property
    def node_address(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Network(self.network)[NODE_HOST_NUMBER]

    def pod_range(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        network = ipaddress.IPv4Network(self.network)
        return network[POD_RANGE_START], network[POD_RANGE_END]


def add_node_link(address: ipaddress.IPv4Address) -> None:
    """The node's address as a /32 on a link of its own: a local address, no route to anywhere. A bridge
    without ports, as this kernel has no dummy links ("Unknown device type")."""
    _ip("link", "add", NODE_LINK, "type", "bridge")
    _ip("addr", "add", f"{address}/32", "dev", NODE_LINK)
    _ip("link", "set", NODE_LINK, "up")


def cni_conflist(record: HostRecord, ipam_dir: Path) -> str:
    """A bridge network for pods that are not on the host network (the node is NotReady without one);
    no gateway and no masquerading, so nothing is routed or rewritten in the root namespace."""
    first, last = record.pod_range()
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": record.network, "rangeStart": str(first), "rangeEnd": str(last)}]],
        "dataDir": str(ipam_dir),
    }
    bridge = {"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": False, "ipMasq": False, "ipam": ipam}
    return json.dumps(
        {"cniVersion": "1.0.0", "name": "lbpair-node", "plugins": [bridge, {"type": "loopback"}]}, indent=2
    )


def _nft_tables() -> list[str]:
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30, check=True)
    return [
        line.removeprefix("table ").strip()
        for line in listed.stdout.splitlines()
        if line.startswith("table ")
    ]


def remove_kubelet_chains(tables_before: Iterable[str]) -> list[str]:
    """Delete kubelet's KUBE-* chains and the rules that jump to them; then delete the iptables tables
    kubelet created if nothing else has put rules in them since. Returns what was removed."""
    removed = []
    for family, command in IPTABLES_FAMILIES.items():
        for table in IPTABLES_TABLES:
            if f"{family} {table}" not in _nft_tables():
                continue
            saved = subprocess.run(
                [f"{command}-save", "-t", table], capture_output=True, text=True, timeout=30, check=True
            )
            chains = [
                line[1:].split()[0]
                for line in saved.stdout.splitlines()
                if line.startswith(f":{KUBELET_CHAIN_PREFIX}")
            ]
            jumps = [
                line.split()
                for line in saved.stdout.splitlines()
                if line.startswith("-A ") and f"-j {KUBELET_CHAIN_PREFIX}" in line
            ]
            for rule in jumps:
                if rule[1] not in chains:  # a built-in chain's hook into kubelet's chains
                    subprocess.run(
                        [command, "-t", table, "-D", *rule[1:]], capture_output=True, timeout=30, check=True
                    )
            for chain in chains:
                subprocess.run(
                    [command, "-t", table, "-F", chain], capture_output=True, timeout=30, check=True
                )
            for chain in chains:
                subprocess.run(
                    [command, "-t", table, "-X", chain], capture_output=True, timeout=30, check=True
                )
            removed += [f"{family} {table} {chain}" for chain in chains]
            if f"{family} {table}" not in tables_before and not _has_rules(family, table):
                subprocess.run(
                    ["nft", "delete", "table", family, table], capture_output=True, timeout=30, check=True
                )
                removed.append(f"table {family} {table}")
    return removed


def _has_rules(family: str, table: str) -> bool:
    listed = subprocess.run(
        ["nft", "-j", "list", "table", family, table], capture_output=True, text=True, timeout=30, check=True
    )
    return any("rule" in entry for entry in json.loads(listed.stdout)["nftables"])


def kubepods_pids() -> list[int]:
    """Processes of every container the node ran (in the kubepods cgroups, which only kubelet creates)."""
    pids: set[int] = set()
    for procs in CGROUP_ROOT.glob(f"*/{KUBEPODS_CGROUP}/**/cgroup.procs"):
        pids.update(int(line) for line in procs.read_text().split())
    return sorted(pids)


def _mount_points() -> list[str]:
    lines = Path("/proc/self/mounts").read_text().splitlines()
    # Octal escapes (\040 for a space) as the kernel writes them.
    return [line.split()[1].encode().decode("unicode_escape") for line in lines]


def unmount_under(roots: Sequence[Path]) -> list[str]:
    """Lazily unmount everything mounted at or below `roots`, deepest first."""
    prefixes = [str(root) for root in roots]
    found = [
        point
        for point in _mount_points()
        if any(point == prefix or point.startswith(prefix + "/") for prefix in prefixes)
    ]
    for point in sorted(set(found), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)
    return found


def remove_cgroups() -> None:
    """rmdir the kubepods tree in every hierarchy, leaves first (a cgroup directory goes with rmdir)."""
    for top in CGROUP_ROOT.glob(f"*/{KUBEPODS_CGROUP}"):
        for directory in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            directory.rmdir()
        top.rmdir()


def restore(record: HostRecord | None, node_dir: Path, progress: Progress) -> None:
    """Undo what the node changed; idempotent. Processes must be gone already (kubenode.py stops them).
    Mounts under `node_dir` (kubelet's pod volumes, containerd's sandbox /dev/shm) go too."""
    unmounted = unmount_under([*FIXED_PATHS, node_dir])
    if unmounted:
        progress(f"unmounted {len(unmounted)} mounts of the node")
    namespaces = sorted(NETNS_DIR.glob(f"{CNI_NETNS_PREFIX}*")) if NETNS_DIR.is_dir() else []
    for namespace in namespaces:
        _ip("netns", "delete", namespace.name, check=False)
    for link in (CNI_BRIDGE, NODE_LINK):
        if _ip("link", "show", link, check=False).returncode == 0:
            _ip("link", "delete", link)
    remove_cgroups()
    if record is None:
        return
    removed = remove_kubelet_chains(record.nft_tables)
    if removed:
        progress(f"removed kubelet's iptables state: {', '.join(removed)}")
    for name, value in record.sysctls.items():
        if _sysctl(name) != value:
            _set_sysctl(name, value)
            progress(f"restored {name}={value}")
    for path in record.created_paths:
        subprocess.run(["rm", "-rf", "--one-file-system", path], check=True, timeout=60)
