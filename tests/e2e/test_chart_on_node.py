"""The chart the way users deploy it: `helm install` onto a real kubelet node (testbed/kubenode.py).

A fresh control plane with kube-controller-manager and kube-scheduler, a kubelet on containerd + runc,
the operator image `make image` builds (imported: no registry is reachable) and the lab's LB pair. The
Deployment goes the whole way: ReplicaSet, Pod scheduled onto the node, the container run by the kubelet
with the chart's ServiceAccount token, securityContext and liveness probe, on the host network (the chart's
option for bare-metal clusters whose nodes reach the LB management network). The operator in that pod makes
the seed pair Ready and serves traffic through the VIP; a deleted pod is replaced by the ReplicaSet and the
replacement takes over (an edit goes live).

The tests run in file order on one installation. Step times are printed (`make node-e2e` shows them).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.cluster import REPO_ROOT, ControlPlane, free_port, throwaway_run_dir, tools_bin_dir
from testbed.images import build_operator_image, build_pause_archive, export_operator_archive
from testbed.kubenode import MGMT_LABEL, NODE_NAME, KubeNode
from testbed.lab import Lab
from testbed.operator import OPERATOR_NAMESPACE, RELEASE, load_sample_on_lab, ssh_key_secret, wait_for
from tests.e2e.lab_fixtures import require_root

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-node"
PAIR = "seed"
CHART = REPO_ROOT / "charts" / "lbpair-operator"
POD_SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path


def report(step: str, seconds: float) -> None:
    print(f"[chart-on-node] {step}: {seconds:.1f} s", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def node_plane() -> Iterator[ControlPlane]:
    """A control plane of its own that serves kubelets (ServiceAccount admission, kubelet client cert)."""
    plane = ControlPlane(run_dir=throwaway_run_dir(), bin_dir=tools_bin_dir(), with_nodes=True)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def operator_image() -> str:
    return build_operator_image()


@pytest.fixture(scope="module")
def node(node_plane: ControlPlane, lab: Lab, operator_image: str) -> Iterator[KubeNode]:
    require_root()
    kube_node = KubeNode(node_plane)
    with tempfile.TemporaryDirectory(prefix="lbpair-node-images-") as scratch:
        started = time.monotonic()
        archives = [
            build_pause_archive(Path(scratch)),
            export_operator_archive(operator_image, Path(scratch)),
        ]
        report("images built and exported", time.monotonic() - started)
        try:
            kube_node.start(archives, lab.plan)
            for step, seconds in kube_node.timings.items():
                report(step, seconds)
            yield kube_node
        finally:
            kube_node.stop()


class Installation:
    """The chart installed on the node and the seed sample applied; read as a user would (kubectl)."""

    def __init__(self, plane: ControlPlane, lab: Lab, node: KubeNode) -> None:
        self.plane, self.lab, self.node = plane, lab, node
        self.vip = str(lab.plan.vip_primary)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        """kubectl as admin; a failure shows kubectl's own message."""
        result = self.plane.kubectl(*args, input=input, check=False)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr.strip()}"
        return result.stdout

    def pods(self) -> list[dict[str, Any]]:
        listed = self.plane.kubectl("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", POD_SELECTOR, "-o", "json")
        pods: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
        return pods

    def ready_pod(self, not_named: str = "") -> dict[str, Any] | None:
        """The operator pod that is Running and Ready (and not `not_named`), if there is one."""
        for pod in self.pods():
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            deleting = "deletionTimestamp" in pod["metadata"]
            if pod["metadata"]["name"] != not_named and conditions.get("Ready") == "True" and not deleting:
                return pod
        return None

    def pair_conditions(self) -> dict[str, str]:
        document = json.loads(self.plane.kubectl("-n", NAMESPACE, "get", "lbpair", PAIR, "-o", "json").stdout)
        return {c["type"]: c["status"] for c in document.get("status", {}).get("conditions", [])}

    def pair_ready(self) -> bool:
        conditions = self.pair_conditions()
        return conditions.get("Ready") == "True" and conditions.get("Programmed") == "True"

    def served(self, host: str) -> bool:
        return self.lab.http_get_via(self.vip, host, "/").succeeded


def chart_values(plane: ControlPlane, node: KubeNode, image: str) -> dict[str, Any]:
    """The chart's values for this cluster: the local image, never pulled; the host network (the LB
    management network is reached from the node); the API server directly (no kube-proxy on the node, so
    the `kubernetes` Service's ClusterIP leads nowhere); ports free on the node; pinned to nodes with the
    management-network label."""
    repository, tag = image.rsplit(":", 1)
    api_host, api_port = plane.server.removeprefix("https://").rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "hostNetwork": True,
        "healthPort": free_port(),
        "metrics": {"port": free_port()},
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": api_host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
        ],
        "nodeSelector": {MGMT_LABEL: "true"},
        "livenessProbe": {
            "initialDelaySeconds": 10,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }


@pytest.fixture(scope="module")
def installation(
    node_plane: ControlPlane, lab: Lab, node: KubeNode, operator_image: str
) -> Iterator[Installation]:
    started = time.monotonic()
    values = Path(node_plane.run_dir) / "node-values.json"
    values.write_text(json.dumps(chart_values(node_plane, node, operator_image)))
    node_plane.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "-f",
        str(values),
    )
    installed = Installation(node_plane, lab, node)
    try:
        wait_for(installed.ready_pod, timeout=180, interval=0.5, what="operator pod Running and Ready")
        report("helm install to operator pod Ready", time.monotonic() - started)
        yield installed
    finally:
        # The lab's nodes are shared with other modules: the pod's operator puts them back (deletion
        # policy Restore) before the node goes.
        node_plane.kubectl("-n", NAMESPACE, "delete", "lbpair", PAIR, "--timeout=90s", check=False)


def test_helm_install_runs_the_operator_pod_on_the_node(installation: Installation) -> None:
    pod = installation.ready_pod()
    assert pod is not None
    assert pod["spec"]["nodeName"] == NODE_NAME  # placed by kube-scheduler (the chart sets no nodeName)
    assert pod["spec"]["hostNetwork"] is True
    assert pod["status"]["podIP"] == installation.node.address
    owner = pod["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet"
    deployment = json.loads(
        installation.kubectl("-n", OPERATOR_NAMESPACE, "get", "deployment", RELEASE, "-o", "json")
    )
    assert deployment["status"]["readyReplicas"] == 1
    # The chart's securityContext, as the kubelet ran it: the image's non-root user, no capabilities.
    name = pod["metadata"]["name"]
    exec_in_pod = ("-n", OPERATOR_NAMESPACE, "exec", name, "--")
    status = installation.kubectl(*exec_in_pod, "cat", "/proc/self/status")
    assert "Uid:\t65532\t65532\t65532\t65532" in status
    assert "CapEff:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    # The ServiceAccount token the kubelet mounted is the chart's ServiceAccount.
    token = installation.kubectl(*exec_in_pod, "cat", SERVICE_ACCOUNT_TOKEN)
    token_review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    review = installation.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(token_review))
    assert json.loads(review)["status"]["user"]["username"] == (
        f"system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}"
    )
    # kubectl logs works (the node has a real address): the operator is kopf running lbpair.handlers.
    logs = installation.kubectl("-n", OPERATOR_NAMESPACE, "logs", name)
    assert "lbpair" in logs


def test_the_pod_makes_the_seed_pair_ready_with_traffic_through_the_vip(installation: Installation) -> None:
    lab = installation.lab
    installation.kubectl("create", "namespace", NAMESPACE)
    documents = [ssh_key_secret(lab, NAMESPACE), *load_sample_on_lab(lab)]
    started = time.monotonic()
    installation.kubectl(
        "-n",
        NAMESPACE,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}),
    )
    wait_for(installation.pair_ready, timeout=120, interval=0.5, what="seed pair Ready and Programmed")
    report("seed applied to pair Ready", time.monotonic() - started)
    for host, path in (("www.example.com", "/"), ("oa.example.com", "/"), ("dev.example.com", "/svn/")):
        response = lab.http_get_via(installation.vip, host, path)
        assert response.succeeded, f"{host}{path} through {installation.vip}: {response}"
    printed = installation.kubectl("-n", NAMESPACE, "get", "lbpair", PAIR)
    assert "True" in printed.splitlines()[1]


def test_a_deleted_pod_is_replaced_and_the_new_one_serves_edits(installation: Installation) -> None:
    old = installation.ready_pod()
    assert old is not None
    old_name = old["metadata"]["name"]
    started = time.monotonic()
    installation.kubectl("-n", OPERATOR_NAMESPACE, "delete", "pod", old_name, "--wait=false")
    new = wait_for(
        lambda: installation.ready_pod(not_named=old_name),
        timeout=120,
        interval=0.5,
        what="replacement pod Ready",
    )
    report("pod deleted to replacement Ready", time.monotonic() - started)
    assert new["metadata"]["ownerReferences"][0]["name"] == old["metadata"]["ownerReferences"][0]["name"]
    assert new["spec"]["nodeName"] == NODE_NAME
    assert installation.pair_ready()
    assert installation.served("www.example.com")
    edited = "www-node.example.com"
    assert not installation.served(edited)
    started = time.monotonic()
    installation.kubectl(
        "-n", NAMESPACE, "patch", "virtualhost", "www", "--type=json",
        "-p", json.dumps([{"op": "add", "path": "/spec/serverNames/-", "value": edited}]),
    )  # fmt: skip
    wait_for(
        lambda: installation.served(edited), timeout=60, interval=0.5, what=f"{edited} served through the VIP"
    )
    report("edit applied by the replacement pod to served", time.monotonic() - started)
    assert installation.pair_ready()
