"""`make demo`: the operator's main job on the local control plane and lab, narrated step by step.

Starts what is missing (control plane, lab), installs the CRDs and the chart's RBAC, runs the operator as
the chart's ServiceAccount in the background, applies the seed tutorial as resources, shows
`kubectl get lbpairs`, sends traffic through the VIP, stops nginx on the VIP holder and shows the failover
in status, then brings nginx back. Everything stays running for a look around; `make demo-down` stops it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from testbed.cluster import CLI_RUN_DIR, ControlPlane, tools_bin_dir
from testbed.lab import Lab, LabError, cleanup
from testbed.operator import OperatorProcess, deploy_sample, wait_for

DEMO_DIR = Path("/run/lbpair-demo")
OPERATOR_PID_FILE = DEMO_DIR / "operator.pid"
OPERATOR_LOG = DEMO_DIR / "operator.log"
NAMESPACE = "lb-demo"
PAIR = "seed"
HOSTS = ("www.example.com", "oa.example.com", "dev.example.com")


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


class DemoPair:
    """The seed pair in NAMESPACE, read through kubectl as a user would."""

    def __init__(self, cluster: ControlPlane) -> None:
        self.cluster = cluster

    def status(self) -> dict[str, object]:
        document = json.loads(
            self.cluster.kubectl("-n", NAMESPACE, "get", "lbpair", PAIR, "-o", "json").stdout
        )
        status: dict[str, object] = document.get("status", {})
        return status

    def holders(self) -> str:
        return str(self.status().get("vipHolders", ""))

    def ready(self) -> bool:
        conditions = self.status().get("conditions", [])
        states = {c["type"]: c["status"] for c in conditions} if isinstance(conditions, list) else {}
        return states.get("Ready") == "True" and states.get("Programmed") == "True"


def demo_up() -> int:
    cluster, lab = start_bed()
    step(
        f"CRDs, the chart's ServiceAccount and RBAC (the operator runs with exactly these rights), and the "
        f"seed tutorial as resources in namespace {NAMESPACE} (config/samples/seed-tutorial.yaml, its "
        f"documentation addresses moved onto the lab's: {plan_summary(lab)})"
    )
    start_operator(deploy_sample(cluster, lab, NAMESPACE))
    pair = DemoPair(cluster)
    step("waiting for the pair to be Ready (config rendered, validated and live on both nodes)")
    started = time.monotonic()
    wait_for(pair.ready, timeout=120, what="pair Ready")
    print(f"Ready after {time.monotonic() - started:.1f} s")
    show(cluster, "get", "lbpairs")
    show(cluster, "get", "virtualhosts,upstreams")
    show_traffic(lab)
    show_failover(cluster, lab, pair)
    print_instructions(cluster, lab)
    return 0


def start_bed() -> tuple[ControlPlane, Lab]:
    step("control plane (etcd + kube-apiserver)")
    cluster = ControlPlane(run_dir=CLI_RUN_DIR, bin_dir=tools_bin_dir())
    cluster.start()
    step(
        "LB lab (two nodes with sshd/nginx/keepalived, two backends, a client) on address ranges chosen "
        "clear of this machine's routes, resolvers, /etc/hosts and package registries"
    )
    lab = Lab.up()
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    return cluster, lab


def plan_summary(lab: Lab) -> str:
    return ", ".join(f"{segment} {network}" for segment, network in lab.plan.networks.items())


def start_operator(operator_kubeconfig: Path) -> None:
    stop_operator()
    operator = OperatorProcess(operator_kubeconfig, OPERATOR_LOG)
    operator.start()
    assert operator.process is not None  # noqa: S101 - start() sets it
    OPERATOR_PID_FILE.write_text(str(operator.process.pid))
    print(f"operator running as PID {operator.process.pid}, log {OPERATOR_LOG}")


def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def show_traffic(lab: Lab) -> None:
    vip = lab.plan.vip_primary
    step(f"traffic from the client through the VIP {vip}")
    for host in HOSTS:
        for path in ("/", "/svn/"):
            response = lab.http_get_via(vip, host, path)
            print(f"  {host}{path:<6} -> HTTP {response.status} {first_line(response.body)}")


def show_failover(cluster: ControlPlane, lab: Lab, pair: DemoPair) -> None:
    vip = lab.plan.vip_primary
    holder = pair.holders().split("=")[-1]
    step(
        "failover: the seed's check script restarts a dead nginx, so first turn that off, then stop nginx "
        f"on the holder ({holder})"
    )
    patch = '{"spec":{"healthCheck":{"restartNginx":false}}}'
    cluster.kubectl("-n", NAMESPACE, "patch", "lbpair", PAIR, "--type=merge", "-p", patch)
    wait_for(
        lambda: (
            "systemctl start" not in lab.exec(holder, "cat", "/etc/keepalived/lbpair-check-nginx.sh").stdout
        ),
        timeout=60,
        what="new check script on the nodes",
    )
    wait_for(pair.ready, timeout=60, what="pair Ready")
    lab.exec(holder, "systemctl", "stop", "nginx")
    stopped = time.monotonic()
    moved = wait_for(
        lambda: (holders := pair.holders()) not in (f"{vip}={holder}", f"{vip}=none") and holders,
        timeout=30,
        what="VIP holder change in status",
    )
    print(f"status shows {moved} {time.monotonic() - stopped:.1f} s after nginx stopped on {holder}")
    show(cluster, "get", "lbpairs")
    response = lab.http_get_via(vip, "www.example.com", "/")
    print(f"  www.example.com/ -> HTTP {response.status} {first_line(response.body)}")
    show(cluster, "get", "events", "--field-selector", "reason=FailoverDetected")

    step(f"nginx back on {holder}: with preempt (the seed's default) it takes the VIP back")
    lab.exec(holder, "systemctl", "start", "nginx")
    wait_for(lambda: pair.holders() == f"{vip}={holder}", timeout=30, what="failback")
    show(cluster, "get", "lbpairs")


def print_instructions(cluster: ControlPlane, lab: Lab) -> None:
    kubectl = tools_bin_dir() / "kubectl"
    ssh_options = f"-i {lab.ssh_key_path} -o UserKnownHostsFile={lab.known_hosts_path}"
    print(
        f"""
Everything is still running. Look around:
  export KUBECONFIG={cluster.kubeconfig}
  {kubectl} -n {NAMESPACE} get lbpairs,virtualhosts,upstreams
  {kubectl} -n {NAMESPACE} describe lbpair {PAIR}
  {kubectl} -n {NAMESPACE} get events
  ip netns exec lbp-client curl -H 'Host: www.example.com' http://{lab.plan.vip_primary}/
  ssh {ssh_options} root@{lab.mgmt_address("lb1")}
  operator log: {OPERATOR_LOG}
Stop it all with: make demo-down"""
    )


def show(cluster: ControlPlane, *args: str) -> None:
    print(f"$ kubectl -n {NAMESPACE} {' '.join(args)}")
    print(cluster.kubectl("-n", NAMESPACE, *args).stdout.rstrip())


def stop_operator() -> None:
    """Stop the demo's operator, by the PID it recorded, and only if that PID still runs our operator."""
    try:
        pid = int(OPERATOR_PID_FILE.read_text())
    except (FileNotFoundError, ValueError):
        return
    command_line = Path(f"/proc/{pid}/cmdline")
    if command_line.exists() and b"lbpair.handlers" in command_line.read_bytes():
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, command_line.exists)
    OPERATOR_PID_FILE.unlink(missing_ok=True)


def _wait_gone(pid: int, alive: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive():
        os.kill(pid, signal.SIGKILL)


def demo_down() -> int:
    step("stopping the operator, the lab and the control plane")
    stop_operator()
    try:
        Lab.attach().down()
    except LabError:  # no lab state: remove whatever a crashed run left
        cleanup()
    ControlPlane(run_dir=CLI_RUN_DIR, bin_dir=tools_bin_dir()).stop()
    if DEMO_DIR.exists():
        for leftover in DEMO_DIR.iterdir():
            leftover.unlink()
        DEMO_DIR.rmdir()
    print("demo stopped")
    return 0
