"""Configuration of the test bed's kubelet node (testbed/kubenode.py): pure functions of its paths and
address, written to files or command lines by KubeNode.

What this machine kind needs is commented where it is set: `restrict_oom_score_adj` (the VM lacks
CAP_SYS_RESOURCE), the cgroupfs driver with `failCgroupV1: false` (cgroup v1, no systemd).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUNC = "/usr/sbin/runc"


@dataclass(frozen=True)
class NodePaths:
    """Where everything of the node lives, under one directory."""

    node_dir: Path

    @property
    def containerd_root(self) -> Path:
        return self.node_dir / "containerd"

    @property
    def socket(self) -> Path:
        return self.containerd_root / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.node_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.node_dir / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.node_dir / "kubelet"

    @property
    def logs(self) -> Path:
        return self.node_dir / "logs"

    @property
    def pod_logs(self) -> Path:
        return self.node_dir / "pod-logs"


def containerd_config(paths: NodePaths, cni_bin_dir: Path, sandbox_image: str) -> str:
    """containerd's config.toml (version 2): its own root, state and socket; the CRI plugin on runc."""
    root = paths.containerd_root
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
[grpc]
  address = "{paths.socket}"
[ttrpc]
  address = "{paths.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{sandbox_image}"
  # The VM drops CAP_SYS_RESOURCE: runc cannot lower oom_score_adj, so never ask it to.
  restrict_oom_score_adj = true
  enable_cdi = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
        Root = "{root / "runc"}"
  [{cri}.cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{paths.cni_conf_dir}"
"""


@dataclass(frozen=True)
class KubeletEndpoints:
    address: str  # the node's address: the API server reaches the kubelet there (logs, exec)
    port: int
    healthz_port: int


def kubelet_config(paths: NodePaths, endpoints: KubeletEndpoints, client_ca: Path) -> dict[str, object]:
    """The KubeletConfiguration (JSON is YAML)."""
    socket = f"unix://{paths.socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # this kernel mounts cgroup v1 (deprecated, still supported)
        "cgroupDriver": "cgroupfs",  # no systemd here
        "containerRuntimeEndpoint": socket,
        "imageServiceEndpoint": socket,
        "address": endpoints.address,
        "port": endpoints.port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": endpoints.healthz_port,
        # The API server's client certificate (system:masters) for logs/exec, checked against its CA.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(paths.pod_logs),
        "failSwapOn": False,
        "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s",
        # Disk-pressure eviction would evict the operator on a busy shared disk; images are imported once
        # and must never be collected (nothing could pull them back).
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
    }


def controller_manager_flags(kubeconfig: Path, pki_dir: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--secure-port=0",  # nothing here scrapes it
        f"--root-ca-file={pki_dir / 'ca.crt'}",  # published to pods as the kube-root-ca.crt ConfigMap
        f"--service-account-private-key-file={pki_dir / 'sa.key'}",
        "--use-service-account-credentials=false",
    ]


def scheduler_flags(kubeconfig: Path) -> list[str]:
    return [f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--secure-port=0"]
