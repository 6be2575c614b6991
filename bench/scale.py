"""Scale benchmark (issue 9): `make bench-scale` (root; meant to stay within ~20 minutes at 1/500/5,000).

On a fresh control plane and a lab of ten pairs of LB nodes (20 nodes), with the operator running as the
chart's ServiceAccount at its default probe interval:

1. the lab: seconds to bring up ten pairs, hosts healthy, summed VmRSS of everything in the lab;
2. ten pairs on one operator: pair 1's one-VirtualHost edit -> served through its VIP, with every pair
   healthy and while pair 2's backup hangs mid-probe (management network blackholed); the ratio;
3. then, on pair 1 only (pairs 2-10 deleted), for each size in --sizes (VirtualHosts on the pair):
   - bulk create (`kubectl apply --server-side`, each VirtualHost one location proxying to an Upstream)
     -> a sample of them and the last one served through the VIP;
   - one VirtualHost edited --edits times -> served by both nodes (each node's own front address), with
     the operator's pass and per-node rollout seconds from its log;
   - the same change by Ansible (bench/ansible/edit-vhost.yml) --edits times, the operator paused
     (SIGSTOP) meanwhile so it does not revert the playbook's file; the ratio operator/Ansible;
   - operator RSS, and its CPU over --idle-seconds with nothing changing (probes go on);
4. at the largest size: the API writes one edit causes (watches on every kind the operator writes).

Medians, p99 and min-max (bench/stats.py) go to stdout and are merged into bench/results.json under
"scale" (other keys are kept). Every load is bounded and only ever targets the lab's addresses.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ansible import AnsiblePush, install_ansible
from bench.scale_measure import (
    ApiWriteWatch,
    ProcessStats,
    edit_breakdown,
    lab_rss_mib,
    log_timings,
    pass_outcomes,
)
from bench.stats import summary
from testbed.addressing import Segment
from testbed.cluster import REPO_ROOT, ControlPlane, throwaway_run_dir, tools_bin_dir
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    attached_object,
    blackhole_mid_probe,
    deploy_documents,
    lab_pair,
    wait_for,
    web_objects,
)

NAMESPACE = "lb-scale"
PAIRS = 10
PAIR = "p1"  # on the lab's pair 1 (lb1, lb2)
EDITED = "edit"  # the VirtualHost every edit changes
FILL_LABEL = "bench.lbpair.dev/fill"
APPLY_CHUNK = 500  # VirtualHosts per `kubectl apply` (one request each; chunks keep each call bounded)
SAMPLE = 20  # filled VirtualHosts probed through the VIP, evenly spread, plus the last one
MANAGED_DIR = "/etc/nginx/lbpair"  # the node profile's default nginxManagedDir
EDITED_HOST = "edit.example.com"


def pair_name(pair: int) -> str:
    return f"p{pair}"


@dataclass
class Scale:
    cluster: ControlPlane
    lab: Lab
    operator: OperatorProcess
    workdir: Path
    edits_done: int = 0

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 600) -> str:
        command = [str(self.cluster.bin_dir / "kubectl"), f"--kubeconfig={self.cluster.kubeconfig}"]
        completed = subprocess.run(
            [*command, "-n", NAMESPACE, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {completed.stderr.strip()}")
        return completed.stdout

    def apply(self, documents: list[dict[str, Any]]) -> None:
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        self.kubectl("apply", "--server-side", "--field-manager=bench", "-f", "-", input=listed)

    def ready(self, pair: str, *, all_reachable: bool = False) -> bool:
        status = json.loads(self.kubectl("get", "lbpair", pair, "-o", "json")).get("status", {})
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        reachable = all(node.get("reachable") for node in status.get("nodes", [])) or not all_reachable
        return conditions.get("Ready") == "True" and conditions.get("Programmed") == "True" and reachable

    def vip(self, pair: int) -> str:
        return str(self.lab.plan.pair_vips(pair)[0])

    def served_via(self, address: str, host: str, expected: str) -> bool:
        return expected in self.lab.http_get_via(address, host, "/", timeout=1).body

    def nodes_serve(self, path: str) -> bool:
        """Both of pair 1's nodes (each at its own front address) serve `path` for the edited host."""
        return all(
            self.served_via(
                str(self.lab.plan.hosts[node].address(Segment.FRONT)), EDITED_HOST, f"path={path}"
            )
            for node in self.lab.plan.pair_nodes(1)
        )

    # -- one VirtualHost edited --

    def edit(self, *, check_nodes: bool = True, pair: int = 1) -> float:
        """The edited VirtualHost's location moved to a new backend path; seconds until it is served."""
        self.edits_done += 1
        path = f"/edit-{self.edits_done}/"
        backend = str(self.lab.plan.hosts["be2"].address(Segment.BACK))
        spec = {
            "serverNames": [EDITED_HOST],
            "locations": [{"path": "/", "url": f"http://{backend}:8080{path}"}],
        }
        started = time.monotonic()
        self.apply([attached_object("VirtualHost", NAMESPACE, EDITED, pair_name(pair), spec)])
        if check_nodes:
            live = lambda: self.nodes_serve(path)  # noqa: E731
        else:
            live = lambda: self.served_via(self.vip(pair), EDITED_HOST, f"path={path}")  # noqa: E731
        wait_for(live, timeout=600, interval=0.05, what=f"{path} served")
        return time.monotonic() - started

    @property
    def operator_pid(self) -> int:
        if self.operator.process is None:
            raise RuntimeError("the operator is not running")
        return self.operator.process.pid

    def current_path(self) -> str:
        return f"/edit-{self.edits_done}/"

    def wait_idle(self) -> None:
        """Until a pass of pair 1 finds nothing to do. A change is served before the pass that put it live
        has written its statuses (thousands after a bulk create at 5,000): an edit timed, or an idle window
        measured, before then would take in the rest of that pass."""
        offset = len(self.operator.log())
        idle = f"pass pair={NAMESPACE}/{PAIR} outcome=unchanged"
        wait_for(lambda: idle in self.operator.log()[offset:], timeout=900, interval=1, what="pair 1 idle")

    # -- filling the pair --

    def fill(self, count: int) -> float:
        """`count` VirtualHosts created in bulk on pair 1 (after deleting earlier ones); seconds until a
        sample and the last are served through the VIP."""
        self.kubectl("delete", "virtualhosts", "-l", f"{FILL_LABEL}=true", "--wait=true", timeout=900)
        wait_for(lambda: self.ready(PAIR), timeout=900, interval=1, what="pair 1 Ready after emptying")
        names = [f"vh-{number:05d}" for number in range(count)]
        location = {"path": "/", "upstreamRef": {"name": f"{PAIR}-web"}}
        documents = [
            attached_object(
                "VirtualHost",
                NAMESPACE,
                name,
                PAIR,
                {"serverNames": [f"{name}.example.com"], "locations": [location]},
            )
            for name in names
        ]
        for document in documents:
            document["metadata"]["labels"] = {FILL_LABEL: "true"}
        if not names:
            return 0.0
        started = time.monotonic()
        for first in range(0, len(documents), APPLY_CHUNK):
            self.apply(documents[first : first + APPLY_CHUNK])
        probed = sorted({*names[:: max(len(names) // SAMPLE, 1)], names[-1]})
        vip = self.vip(1)
        for name in probed:
            wait_for(
                lambda name=name: self.served_via(vip, f"{name}.example.com", "backend=be1"),
                timeout=1800,
                interval=0.2,
                what=f"{name} served",
            )
        return time.monotonic() - started


def ten_pairs(scale: Scale, edits: int) -> dict[str, Any]:
    """Pair 1's edit -> served through its VIP with every pair healthy, then with pair 2's backup hung."""
    lab, hung_node = scale.lab, scale.lab.plan.pair_nodes(2)[1]
    healthy = [scale.edit(check_nodes=False) for _ in range(edits)]
    hung = []
    for _ in range(edits):
        wait_for(
            lambda: scale.ready(pair_name(2), all_reachable=True), timeout=120, what="pair 2 with both nodes"
        )
        blackhole_mid_probe(lab, hung_node)
        try:
            hung.append(scale.edit(check_nodes=False))
        finally:
            lab.heal_mgmt(hung_node)
    healthy_summary, hung_summary = summary(healthy), summary(hung)
    return {
        "pairs": PAIRS,
        "hung_node": hung_node,
        "edit_to_vip_seconds_all_healthy": healthy_summary,
        "edit_to_vip_seconds_other_pair_hung": hung_summary,
        "hung_over_healthy_median_ratio": round(hung_summary["median"] / healthy_summary["median"], 2),
    }


def ansible_side(scale: Scale, push: AnsiblePush, edits: int) -> dict[str, float]:
    """The same change by the playbook, --edits times, with the operator paused; then the operator is
    resumed and puts its own file back."""
    lab = scale.lab
    node = lab.plan.pair_nodes(1)[0]
    vhost_path = lab.exec(node, "grep", "-rl", f"server_name {EDITED_HOST}", MANAGED_DIR).stdout.split()[0]
    template = push.write_template(lab.exec(node, "cat", vhost_path).stdout, scale.current_path())
    operator_pid = scale.operator_pid
    os.kill(operator_pid, signal.SIGSTOP)
    seconds = []
    try:
        for run in range(edits):
            path = f"/ansible-{scale.edits_done}-{run}/"
            started = time.monotonic()
            push.run(template, vhost_path, path)
            wait_for(
                lambda path=path: scale.nodes_serve(path), timeout=60, interval=0.05, what=f"{path} served"
            )
            seconds.append(time.monotonic() - started)
    finally:
        os.kill(operator_pid, signal.SIGCONT)
    wait_for(
        lambda: scale.nodes_serve(scale.current_path()),
        timeout=600,
        interval=0.5,
        what="operator's file back",
    )
    return summary(seconds)


def one_size(scale: Scale, push: AnsiblePush, size: int, args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"virtual_hosts": size}
    figures["bulk_create_seconds"] = round(scale.fill(size - 1), 3)  # the edited one is there already
    wait_for(lambda: scale.ready(PAIR), timeout=600, interval=1, what="pair 1 Ready")
    scale.wait_idle()
    offset = len(scale.operator.log())
    operator = [scale.edit() for _ in range(args.edits)]
    figures["edit_to_served_both_nodes_seconds"] = summary(operator)
    figures["operator_log_seconds"] = edit_timings(scale, offset, args.edits)
    nodes = tuple(scale.lab.plan.pair_nodes(1))
    figures["edit_breakdown_ms"] = edit_breakdown(scale.operator.log()[offset:], f"{NAMESPACE}/{PAIR}", nodes)
    # Idle before Ansible's turn: the operator then runs as it does between edits, never just after a pause.
    wait_for(lambda: scale.ready(PAIR), timeout=600, interval=1, what="pair 1 Ready")
    scale.wait_idle()
    stats, offset = ProcessStats(scale.operator_pid), len(scale.operator.log())
    figures["operator_rss_mib"] = stats.rss_mib()
    figures["operator_idle_cpu_percent_of_one_core"] = stats.cpu_percent(args.idle_seconds)
    figures["idle_seconds"] = args.idle_seconds
    figures["idle_passes"] = pass_outcomes(scale.operator.log()[offset:], f"{NAMESPACE}/{PAIR}")
    ansible = ansible_side(scale, push, args.edits)
    figures["ansible_edit_to_served_both_nodes_seconds"] = ansible
    figures["operator_over_ansible_median_ratio"] = round(summary(operator)["median"] / ansible["median"], 3)
    wait_for(lambda: scale.ready(PAIR), timeout=600, interval=1, what="pair 1 Ready after Ansible")
    return figures


def edit_timings(scale: Scale, offset: int, edits: int) -> dict[str, Any]:
    """The operator's log lines since `offset` for pair 1's applied passes: a pass logs its line after its
    status write, which may come after its edit is served, so the last one is waited for (briefly)."""
    pair = f"{NAMESPACE}/{PAIR}"

    def timings() -> dict[str, Any]:
        return log_timings(scale.operator.log()[offset:], pair)

    with suppress(TimeoutError):
        wait_for(lambda: timings().get("applied_pass", {}).get("runs", 0) >= edits, timeout=30, what="passes")
    return timings()


def api_writes(scale: Scale) -> dict[str, Any]:
    with ApiWriteWatch(scale.cluster, NAMESPACE) as watch:
        scale.edit()
        time.sleep(3 * 2.0)  # three probe intervals: a late status write still lands in the window
    return watch.report(user_writes=1)


@contextmanager
def deployed(workdir: Path) -> Iterator[tuple[Scale, dict[str, Any]]]:
    cluster = ControlPlane(run_dir=throwaway_run_dir(), bin_dir=tools_bin_dir())
    lab: Lab | None = None
    operator: OperatorProcess | None = None
    try:
        cluster.start()
        started = time.monotonic()
        lab = Lab.up(reuse=False, pairs=PAIRS)
        lab_figures = {
            "pairs": PAIRS,
            "up_seconds": round(time.monotonic() - started, 1),
            "hosts_healthy": sum(health.healthy for health in lab.status()),
            "hosts": len(lab.plan.hosts),
            "rss_mib_summed": lab_rss_mib(),
        }
        documents = []
        for pair in range(1, PAIRS + 1):
            documents += [
                lab_pair(lab, pair, pair_name(pair), NAMESPACE, deletion_policy="Retain"),
                *web_objects(lab, NAMESPACE, pair_name(pair), f"{pair_name(pair)}.example.com"),
            ]
        kubeconfig = deploy_documents(cluster, lab, NAMESPACE, documents)
        operator = OperatorProcess(kubeconfig, workdir / "operator.log", probe_interval_seconds=2.0)
        scale = Scale(cluster, lab, operator, workdir)
        operator.start()
        for pair in range(1, PAIRS + 1):
            wait_for(
                lambda pair=pair: scale.ready(pair_name(pair)), timeout=300, what=f"{pair_name(pair)} Ready"
            )
        yield scale, lab_figures
    except BaseException:
        if operator is not None:  # the log goes with the temporary directory: show its end first
            operator.stop_and_show_log(lines=200)
        raise
    finally:
        if lab is not None:
            lab.heal_mgmt()
        if operator is not None:
            operator.stop()
        if lab is not None:
            lab.down()
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1,500,5000", help="VirtualHosts on the pair, comma-separated")
    parser.add_argument("--edits", type=int, default=10, help="edits per size (operator and Ansible each)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="window of the idle CPU figure")
    parser.add_argument(
        "--skip-ten-pairs", action="store_true", help="no ten-pairs edits (a run of the sizes alone)"
    )
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results.json")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(",") if size.strip())
    if not sizes or sizes[0] < 1 or args.edits < 1:
        parser.error("--sizes must be positive counts and --edits at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a SIGTERM still runs the teardown
    bin_dir = install_ansible()
    started = time.monotonic()
    results: dict[str, Any] = {"edits": args.edits}
    with (
        tempfile.TemporaryDirectory(prefix="lbpair-bench-scale-") as directory,
        deployed(Path(directory)) as (scale, lab_figures),
    ):
        report("lab_ten_pairs", lab_figures, results)
        if not args.skip_ten_pairs:
            report("ten_pairs_one_hung", ten_pairs(scale, args.edits), results)
        others = [pair_name(pair) for pair in range(2, PAIRS + 1)]
        scale.kubectl("delete", "lbpair", *others, "--timeout=300s")
        scale.kubectl("delete", "virtualhosts,upstreams", *[f"{name}-web" for name in others])
        scale.lab.resize(1)
        holder = scale.lab.vip_holders(scale.vip(1))
        order = tuple(sorted(scale.lab.plan.pair_nodes(1), key=lambda node: node in holder))
        push = AnsiblePush(scale.lab, order, Path(directory) / "ansible", bin_dir)
        try:
            for size in sizes:
                report(f"one_pair_{size}_virtual_hosts", one_size(scale, push, size, args), results)
            report(f"api_writes_one_edit_at_{sizes[-1]}", api_writes(scale), results)
        finally:
            push.close()
    results["duration_seconds"] = round(time.monotonic() - started)
    merged = json.loads(args.output.read_text()) if args.output.exists() else {}
    merged["scale"] = results
    args.output.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def report(name: str, figures: dict[str, Any], results: dict[str, Any]) -> None:
    results[name] = figures
    print(f"[bench-scale] {name}: {json.dumps(figures)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
