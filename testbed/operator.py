"""Run the operator against the local control plane the way a cluster would: CRDs applied, the chart's
RBAC installed, and the operator process authenticated as the chart's ServiceAccount (so a verb missing
from the ClusterRole fails here rather than in production). Used by the e2e tests and `make demo`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lbpair.model import API_VERSION
from testbed.cluster import REPO_ROOT, ControlPlane
from testbed.lab import Lab, LabError

OPERATOR_NAMESPACE = "lbpair-system"
RELEASE = "lbpair-operator"
SERVICE_ACCOUNT = "lbpair-operator"
# What the samples' spec.ssh.privateKeySecretRef names.
SSH_KEY_SECRET = "lb-ssh"  # noqa: S105 - a Secret's name, not a credential
SSH_KEY_SECRET_KEY = "ssh-privatekey"  # noqa: S105 - a key name inside the Secret
STOP_TIMEOUT_SECONDS = 20.0


def install_crds(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO_ROOT / "crds"))


def install_chart_rbac(cluster: ControlPlane) -> Path:
    """Apply the chart's ServiceAccount and RBAC (rendered by helm); returns the SA's kubeconfig.

    The Deployment is left out: there is no kubelet here, the operator runs as a local process instead.
    """
    rendered = cluster.helm(
        "template", RELEASE, str(REPO_ROOT / "charts" / "lbpair-operator"), "--namespace", OPERATOR_NAMESPACE
    ).stdout
    rbac = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] != "Deployment"]
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac}))
    return cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, SERVICE_ACCOUNT)


def ssh_key_secret(lab: Lab, namespace: str) -> dict[str, Any]:
    """The Secret holding the lab's client key, as a pair's spec.ssh.privateKeySecretRef expects."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SSH_KEY_SECRET, "namespace": namespace},
        "type": "Opaque",
        "data": {SSH_KEY_SECRET_KEY: base64.b64encode(lab.ssh_key_path.read_bytes()).decode()},
    }


def pin_lab_host_keys(documents: list[dict[str, Any]], lab: Lab) -> list[dict[str, Any]]:
    """Samples carry placeholder host keys; the lab's nodes get fresh keys at every boot."""
    for document in documents:
        if document.get("kind") == "LoadBalancerPair":
            for node in document["spec"]["nodes"]:
                node["hostKey"] = lab.host_key(node["name"])
    return documents


def on_lab(documents: list[dict[str, Any]], lab: Lab) -> list[dict[str, Any]]:
    """Documents written for the documentation address plan (the samples), as they must be applied to
    this lab: every address moved onto the lab's chosen plan (same host numbers), host keys pinned.

    Refuses a pair whose node addresses then are not the lab's nodes (a sample written for other
    addresses would otherwise send the operator somewhere else)."""
    translated = pin_lab_host_keys(lab.plan.translate_documents(documents), lab)
    for document in translated:
        if document.get("kind") != "LoadBalancerPair":
            continue
        for node in document["spec"]["nodes"]:
            if node["address"] != str(lab.mgmt_address(node["name"])):
                raise LabError(
                    f"{document['metadata']['name']}: node {node['name']} address {node['address']} is not "
                    f"the lab's {lab.mgmt_address(node['name'])}; samples use the documentation plan"
                )
    return translated


def attached_object(kind: str, namespace: str, name: str, pair: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An Upstream or VirtualHost of `pair`, as kubectl would apply it."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pairRef": {"name": pair}, **spec},
    }


def load_manifests(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


SEED_SAMPLE = REPO_ROOT / "config" / "samples" / "seed-tutorial.yaml"


def load_sample_on_lab(lab: Lab, sample: Path = SEED_SAMPLE) -> list[dict[str, Any]]:
    """`sample` (written for the documentation plan) as it is applied to `lab`; see on_lab()."""
    return on_lab(load_manifests(sample), lab)


def deploy_sample(cluster: ControlPlane, lab: Lab, namespace: str, sample: Path = SEED_SAMPLE) -> Path:
    """CRDs, the chart's RBAC, and `sample` applied in `namespace` on the lab's addresses (the sample's
    documentation addresses translated onto the lab's plan) with the lab's SSH key and host keys.

    Returns the kubeconfig of the chart's ServiceAccount, for the operator to run with.
    """
    install_crds(cluster)
    operator_kubeconfig = install_chart_rbac(cluster)
    cluster.kubectl("create", "namespace", namespace, check=False)
    documents = [ssh_key_secret(lab, namespace), *load_sample_on_lab(lab, sample)]
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    print(cluster.kubectl("-n", namespace, "apply", "-f", "-", input=listed).stdout.rstrip(), file=sys.stderr)
    return operator_kubeconfig


@dataclass
class OperatorProcess:
    """The operator (`kopf run -m lbpair.handlers`) as a child process with its own log file."""

    kubeconfig: Path
    log_path: Path
    probe_interval_seconds: float = 1.0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": f"{REPO_ROOT / 'operator'}",
            "LBPAIR_PROBE_INTERVAL_SECONDS": str(self.probe_interval_seconds),
        }
        command = [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--all-namespaces",
            "--standalone",
            "-m",
            "lbpair.handlers",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGTERM and wait (kopf finishes in-flight handlers), SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines_since(self, offset: int) -> str:
        return self.log()[offset:]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:  # noqa: ANN401
    """Poll `predicate` until it returns something truthy; bounded, never a bare sleep in a test."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s (last: {last!r})")
