"""A real Kubernetes worker node for the local control plane: containerd + runc, kubelet,
kube-controller-manager and kube-scheduler, so a Deployment goes the whole way (ReplicaSet, scheduling,
a container started by the kubelet with its ServiceAccount token, probes).

Built on a spike on this machine kind (kubelet v1.37 on Debian's containerd 1.6 and runc, cgroup v1):
- containerd's CRI plugin needs `restrict_oom_score_adj`: the VM lacks CAP_SYS_RESOURCE, so runc cannot
  set the negative oom_score_adj containerd asks for ("can't get final child's PID from pipe: EOF");
- kubelet needs `failCgroupV1: false` and the cgroupfs driver (no systemd);
- no registry is reachable: the pause and operator images are imported (testbed/images.py);
- the node needs a non-loopback address (kubelet refuses a loopback --node-ip) and a CNI config to be
  Ready; both come from testbed/nodehost.py, which also records and restores what kubelet changes on the
  machine. One node per machine: kubelet uses fixed paths, so the node's directory is fixed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed import nodehost
from testbed.addressing import AddressPlan
from testbed.cluster import (
    ControlPlane,
    command_line,
    free_port,
    pid_alive,
    spawn_logged,
    terminate,
    tools_bin_dir,
)
from testbed.images import PAUSE_IMAGE
from testbed.lab import Progress
from testbed.nodeconfig import (
    RUNC,
    KubeletEndpoints,
    NodePaths,
    containerd_config,
    controller_manager_flags,
    kubelet_config,
    scheduler_flags,
)

NODE_DIR = Path("/var/lib/lbpair-node")
# The logs of the last node stopped (kubelet, containerd, controllers, pods), kept for a look afterwards.
LAST_LOGS = Path(tempfile.gettempdir()) / "lbpair-node-last-logs"
NODE_NAME = "lbpair-node"
# The label the node registers with; a Deployment pins itself to nodes that reach the LB management
# network through it (the chart's nodeSelector).
MGMT_LABEL = "lbpair.dev/lb-management"
STATE_FILE = "node.json"
CONTAINERD_NAMESPACE = "k8s.io"  # the CRI plugin's
READY_TIMEOUT_SECONDS = 120.0
CONTAINERD_START_TIMEOUT_SECONDS = 30.0
NODE_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler")


def cni_bin_dir() -> Path:
    """Where hack/install-deps.sh unpacked Debian's CNI plugins (next to the tools' bin directory)."""
    return tools_bin_dir().parent / "cni-bin"


def node_progress(message: str) -> None:
    print(f"[kubenode] {message}", file=sys.stderr, flush=True)


@dataclass
class NodeState:
    """The node's state file: the machine as it was before (to restore) and the PIDs it started."""

    host: nodehost.HostRecord
    pids: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"host": json.loads(self.host.to_json()), "pids": self.pids})

    @classmethod
    def from_json(cls, text: str) -> NodeState:
        recorded = json.loads(text)
        pids = {str(name): int(pid) for name, pid in recorded["pids"].items()}
        return cls(nodehost.HostRecord.from_json(json.dumps(recorded["host"])), pids)


@dataclass
class KubeNode:
    """The node, its processes and its files (under `node_dir`); `plane` must run with `with_nodes`."""

    plane: ControlPlane
    node_dir: Path = NODE_DIR
    progress: Progress = node_progress
    # Seconds each start step took, e.g. {"containerd": 0.2, "images": 4.1, "node Ready": 6.3}.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def paths(self) -> NodePaths:
        return NodePaths(self.node_dir)

    @property
    def socket(self) -> Path:
        return self.paths.socket

    @property
    def address(self) -> str:
        return str(self._state().host.node_address)

    def start(self, image_archives: Sequence[Path], lab_plan: AddressPlan | None) -> None:
        """Start the node with these docker-archives imported and wait until it is Ready; anything an
        earlier run left is removed first. Stops what it started if a step fails."""
        self._require_tools()
        self.stop()
        lab_networks = lab_plan.networks.values() if lab_plan else ()
        record = nodehost.HostRecord.take(nodehost.choose_node_network(lab_networks))
        self.node_dir.mkdir(parents=True)
        self.paths.logs.mkdir()
        self._save(NodeState(record))
        self.progress(f"node {NODE_NAME} at {record.node_address} (range {record.network})")
        try:
            nodehost.add_node_link(record.node_address)
            self._timed("containerd", self._start_containerd)
            self._timed("images", lambda: self._import(image_archives))
            self._timed("controllers", self._start_controllers)
            self._timed("node Ready", lambda: self._start_kubelet(record))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """See remove_node()."""
        remove_node(self.node_dir, self.progress)

    # --- start steps

    def _require_tools(self) -> None:
        missing = [
            str(self.plane.bin_dir / name)
            for name in NODE_BINARIES
            if not (self.plane.bin_dir / name).exists()
        ]
        missing += [tool for tool in ("/usr/bin/containerd", "/usr/bin/ctr", RUNC) if not Path(tool).exists()]
        missing += [] if (cni_bin_dir() / "bridge").exists() else [str(cni_bin_dir() / "bridge")]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} missing: run hack/install-deps.sh")

    def _timed(self, step: str, action: Callable[[], None]) -> None:
        started = time.monotonic()
        action()
        self.timings[step] = round(time.monotonic() - started, 2)
        self.progress(f"{step}: {self.timings[step]:.1f} s")

    def _start_containerd(self) -> None:
        self.paths.containerd_root.mkdir()
        self.paths.cni_conf_dir.mkdir(parents=True)
        config = self.paths.containerd_root / "config.toml"
        config.write_text(containerd_config(self.paths, cni_bin_dir(), PAUSE_IMAGE))
        self._spawn("containerd", ["/usr/bin/containerd", f"--config={config}"])
        deadline = time.monotonic() + CONTAINERD_START_TIMEOUT_SECONDS
        while self._ctr("version", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"containerd did not answer on {self.socket}: {self._log_tail('containerd')}"
                )
            time.sleep(0.2)

    def _import(self, archives: Iterable[Path]) -> None:
        for archive in archives:
            self._ctr("images", "import", str(archive), timeout=600)

    def _start_controllers(self) -> None:
        bin_dir, kubeconfig = self.plane.bin_dir, self.plane.kubeconfig
        manager = controller_manager_flags(kubeconfig, self.plane.pki_dir)
        self._spawn("kube-controller-manager", [str(bin_dir / "kube-controller-manager"), *manager])
        self._spawn("kube-scheduler", [str(bin_dir / "kube-scheduler"), *scheduler_flags(kubeconfig)])

    def _start_kubelet(self, record: nodehost.HostRecord) -> None:
        conflist = self.paths.cni_conf_dir / "10-lbpair-node.conflist"
        conflist.write_text(nodehost.cni_conflist(record, self.paths.cni_ipam_dir))
        endpoints = KubeletEndpoints(str(record.node_address), free_port(), free_port())
        config = self.node_dir / "kubelet-config.json"
        config.write_text(json.dumps(kubelet_config(self.paths, endpoints, self.plane.pki_dir / "ca.crt")))
        self._spawn(
            "kubelet",
            [
                str(self.plane.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--root-dir={self.paths.kubelet_dir}",
                f"--cert-dir={self.paths.kubelet_dir / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={record.node_address}",
                f"--node-labels={MGMT_LABEL}=true",
            ],
        )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{NODE_NAME} not Ready in {READY_TIMEOUT_SECONDS:.0f} s:\n{self._log_tail('kubelet')}"
                )
            time.sleep(0.5)

    # --- status

    def ready(self) -> bool:
        result = self.plane.kubectl(
            "get",
            "node",
            NODE_NAME,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return result.stdout.strip() == "True"

    # --- processes and state

    def _spawn(self, name: str, argv: list[str]) -> None:
        state = self._state()
        state.pids[name] = spawn_logged(argv, self.paths.logs / f"{name}.log")
        self._save(state)

    def _ctr(self, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        command = ["/usr/bin/ctr", f"--address={self.socket}", f"--namespace={CONTAINERD_NAMESPACE}", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
        return result

    def _log_tail(self, name: str, lines: int = 20) -> str:
        log = self.paths.logs / f"{name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _state_path(self) -> Path:
        return self.node_dir / STATE_FILE

    def _load(self) -> NodeState | None:
        return load_state(self.node_dir)

    def _save(self, state: NodeState) -> None:
        self._state_path().write_text(state.to_json())

    def _state(self) -> NodeState:
        state = self._load()
        if state is None:
            raise RuntimeError(f"the node is not running ({self._state_path()} missing)")
        return state


def load_state(node_dir: Path) -> NodeState | None:
    try:
        return NodeState.from_json((node_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def remove_node(node_dir: Path = NODE_DIR, progress: Progress = node_progress) -> None:
    """Stop every process of the node in `node_dir` (by the PIDs its state file records) and its
    containers, restore the machine (testbed/nodehost.py) and remove the directory. Idempotent; works from
    the state file alone, so `python -m testbed cleanup` removes what a crashed run left."""
    state = load_state(node_dir)
    if state is None and not node_dir.exists():
        nodehost.restore(None, node_dir, progress)
        return
    pids = state.pids if state else {}
    _stop_recorded(pids.get("kubelet"), "kubelet")
    # The containers: every process in the kubepods cgroups, which only the node's kubelet creates.
    for pid in nodehost.kubepods_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _stop_recorded(pids.get("containerd"), "containerd")
    for pid in _shim_pids(NodePaths(node_dir).socket):
        terminate(pid)
    for name in ("kube-scheduler", "kube-controller-manager"):
        _stop_recorded(pids.get(name), name)
    nodehost.restore(state.host if state else None, node_dir, progress)
    shutil.rmtree(LAST_LOGS, ignore_errors=True)
    for logs in (NodePaths(node_dir).logs, NodePaths(node_dir).pod_logs):
        if logs.is_dir():
            shutil.copytree(logs, LAST_LOGS / logs.name, symlinks=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(node_dir)], check=True, timeout=120)
    progress(f"node {NODE_NAME} stopped, machine restored; its logs are in {LAST_LOGS}")


def _stop_recorded(pid: int | None, name: str) -> None:
    # A stale state file may name a PID the kernel has since reused: check it is still ours.
    if pid is not None and pid_alive(pid) and name in command_line(pid):
        terminate(pid)


def _shim_pids(socket: Path) -> list[int]:
    """containerd's runc shims outlive containerd (they are reparented); ours name our socket."""
    ours = f"-address {socket} "
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and "containerd-shim" in (line := command_line(int(entry.name)) + " ")
        and ours in line
    ]
