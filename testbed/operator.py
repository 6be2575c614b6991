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
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lbpair.model import API_VERSION, SECRET_LABEL
from lbpair.nodes.operations import DEFAULT_STATE_DIR
from testbed.addressing import Segment
from testbed.cluster import REPO_ROOT, ControlPlane
from testbed.lab import Lab, LabCommandError, LabError

OPERATOR_NAMESPACE = "lbpair-system"
RELEASE = "lbpair-operator"
SERVICE_ACCOUNT = "lbpair-operator"
# What the samples' spec.ssh.privateKeySecretRef names.
SSH_KEY_SECRET = "lb-ssh"  # noqa: S105 - a Secret's name, not a credential
SSH_KEY_SECRET_KEY = "ssh-privatekey"  # noqa: S105 - a key name inside the Secret
STOP_TIMEOUT_SECONDS = 20.0
# The node agent's lock (lbpair/nodes/agent.sh): every agent command but served-hash holds it.
AGENT_LOCK = f"{DEFAULT_STATE_DIR}/lock"


def install_crds(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO_ROOT / "crds"))


def install_chart_rbac(cluster: ControlPlane, chart_values: Sequence[str] = ()) -> Path:
    """Apply the chart's ServiceAccount and RBAC (rendered by helm with `chart_values`, each a `--set`
    argument); returns the SA's kubeconfig.

    The Deployment is left out: there is no kubelet here, the operator runs as a local process instead.
    A Role the values put in a namespace needs the namespace: it is created first.
    """
    chart = str(REPO_ROOT / "charts" / "lbpair-operator")
    sets = [argument for value in chart_values for argument in ("--set", value)]
    rendered = cluster.helm("template", RELEASE, chart, "--namespace", OPERATOR_NAMESPACE, *sets).stdout
    rbac = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] != "Deployment"]
    for namespace in {OPERATOR_NAMESPACE} | {doc["metadata"].get("namespace", "") for doc in rbac} - {""}:
        cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac}))
    return cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, SERVICE_ACCOUNT)


def ssh_key_secret(lab: Lab, namespace: str) -> dict[str, Any]:
    """The Secret holding the lab's client key, as a pair's spec.ssh.privateKeySecretRef expects."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SSH_KEY_SECRET, "namespace": namespace, "labels": {SECRET_LABEL: "true"}},
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


def weak_tls_secret(namespace: str, name: str) -> dict[str, Any]:
    """A kubernetes.io/tls Secret (labelled for the operator) that every check of the model passes and nginx
    -t refuses: a certificate with a 1024-bit RSA key, too small for OpenSSL 3's default security level
    ("ee key too small"), as a long-lived legacy certificate would be."""
    with tempfile.TemporaryDirectory(prefix="lbpair-weak-tls-") as scratch:
        key, certificate = Path(scratch) / "tls.key", Path(scratch) / "tls.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "30",
             "-subj", "/CN=legacy.example.com", "-keyout", str(key), "-out", str(certificate)],
            check=True, capture_output=True,
        )  # fmt: skip
        data = {"tls.crt": certificate.read_text(), "tls.key": key.read_text()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {SECRET_LABEL: "true"}},
        "type": "kubernetes.io/tls",
        "stringData": data,
    }


def attached_object(kind: str, namespace: str, name: str, pair: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An Upstream or VirtualHost of `pair`, as kubectl would apply it."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pairRef": {"name": pair}, **spec},
    }


# A pair on the lab's pair P (testbed.addressing): VRRP router id 50 + P, so pairs never share one (the seed
# sample, on pair 1, has 51).
VRRP_ROUTER_ID_BASE = 50


def lab_pair(
    lab: Lab, pair: int, name: str, namespace: str, *, deletion_policy: str = "Restore"
) -> dict[str, Any]:
    """A LoadBalancerPair on the lab's LB node pair `pair` (lb3+lb4 for 2, ...), with that pair's first VIP:
    the first node has the higher priority, VRRPv3 unicast, the SSH key Secret of ssh_key_secret()."""
    nodes = lab.plan.pair_nodes(pair)
    front = lab.plan.front.prefixlen
    return {
        "apiVersion": API_VERSION,
        "kind": "LoadBalancerPair",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodes": [
                {
                    "name": node,
                    "address": str(lab.mgmt_address(node)),
                    "hostKey": lab.host_key(node),
                    "interface": "eth0",
                    "vrrpAddress": str(lab.plan.hosts[node].address(Segment.FRONT)),
                    "priority": priority,
                }
                for node, priority in zip(nodes, (150, 100), strict=True)
            ],
            "ssh": {
                "user": "root",
                "privateKeySecretRef": {"name": SSH_KEY_SECRET, "key": SSH_KEY_SECRET_KEY},
            },
            "vips": [{"address": f"{lab.plan.pair_vips(pair)[0]}/{front}"}],
            "vrrp": {"virtualRouterId": VRRP_ROUTER_ID_BASE + pair},
            "deletionPolicy": deletion_policy,
        },
    }


def web_objects(
    lab: Lab, namespace: str, pair: str, host: str, *, backend: str = "be1", port: int = 80
) -> list[dict[str, Any]]:
    """An Upstream `<pair>-web` with one lab backend and a VirtualHost `<pair>-web` serving `host` from it."""
    address = str(lab.plan.hosts[backend].address(Segment.BACK))
    upstream = attached_object(
        "Upstream", namespace, f"{pair}-web", pair, {"servers": [{"address": address, "port": port}]}
    )
    location = {"path": "/", "upstreamRef": {"name": f"{pair}-web"}}
    virtual_host = attached_object(
        "VirtualHost", namespace, f"{pair}-web", pair, {"serverNames": [host], "locations": [location]}
    )
    return [upstream, virtual_host]


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
    return deploy_documents(cluster, lab, namespace, load_sample_on_lab(lab, sample))


def deploy_documents(
    cluster: ControlPlane,
    lab: Lab,
    namespace: str,
    documents: list[dict[str, Any]],
    chart_values: Sequence[str] = (),
) -> Path:
    """CRDs, the chart's RBAC (with `chart_values`, see install_chart_rbac), the lab's SSH key Secret and
    `documents` (already on the lab's addresses) applied in `namespace`. Returns the kubeconfig of the
    chart's ServiceAccount."""
    install_crds(cluster)
    operator_kubeconfig = install_chart_rbac(cluster, chart_values)
    cluster.kubectl("create", "namespace", namespace, check=False)
    listed = json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [ssh_key_secret(lab, namespace), *documents]}
    )
    print(cluster.kubectl("-n", namespace, "apply", "-f", "-", input=listed).stdout.rstrip(), file=sys.stderr)
    return operator_kubeconfig


def blackhole_mid_probe(lab: Lab, node: str, timeout: float = 10.0) -> float:
    """Cut `node`'s management network while the operator's probe of it runs on the node.

    The node's agent lock is taken first, so the operator's next probe waits on the node (for its lock
    wait, over a second); once it does, the blackhole goes up, and the lock is let go: the probe finishes
    on the node, but its answer never reaches the operator. Returns time.monotonic() of the blackhole.
    Raises LabCommandError if no probe came within `timeout` seconds (the operator is not probing `node`).
    """
    # flock -o: the lock is flock's own (not sleep's), so killing the session releases it at once.
    polls = int(timeout / 0.01)
    script = f"""
        setsid flock -o {AGENT_LOCK} sleep {timeout + 5:g} </dev/null >/dev/null 2>&1 &
        holder=$!
        echo "$holder"
        i=0
        until pgrep -P "$holder" -x sleep >/dev/null; do  # flock starts sleep once it holds the lock
            i=$((i + 1)); [ "$i" -le {polls} ] || exit 3; sleep 0.01
        done
        i=0
        until pgrep -f '^sh -s -- prob[e] ' >/dev/null; do  # the agent's probe, waiting for the lock
            i=$((i + 1)); [ "$i" -le {polls} ] || exit 4; sleep 0.01
        done
    """
    waited = lab.exec(node, "sh", "-c", script, check=False, timeout=3 * timeout)
    holder = waited.stdout.strip()
    try:
        if waited.returncode != 0:
            raise LabCommandError(
                waited.returncode, ["blackhole_mid_probe", node], waited.stdout, waited.stderr
            )
        lab.mgmt_blackhole(node)
        return time.monotonic()
    finally:
        if holder.isdigit():
            lab.exec(node, "kill", "--", f"-{holder}", check=False)


@dataclass
class OperatorProcess:
    """The operator (`kopf run -m lbpair.handlers`) as a child process with its own log file."""

    kubeconfig: Path
    log_path: Path
    probe_interval_seconds: float = 1.0
    settings: dict[str, str] = field(default_factory=dict)
    """More LBPAIR_* variables for the operator (lbpair.config), e.g. {"LBPAIR_RETRY_SECONDS": "5"}."""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": f"{REPO_ROOT / 'operator'}",
            "LBPAIR_PROBE_INTERVAL_SECONDS": str(self.probe_interval_seconds),
            # No metrics endpoint unless a test asks for one (on a port of its own): operators started
            # side by side would contend for the default port.
            "LBPAIR_METRICS_PORT": "0",
            **self.settings,
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

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it: no handler runs, connections just drop."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop_and_show_log(self, lines: int = 40) -> None:
        """Stop, and print the end of the log (pytest shows it with a failing test's output)."""
        self.stop()
        print(f"--- operator log (last {lines} lines)\n{''.join(self.log().splitlines(True)[-lines:])}")

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


def tear_down_on_shared_nodes(
    cluster: ControlPlane, operator: OperatorProcess, namespaces: Sequence[str], pairs: Sequence[str]
) -> None:
    """The end of an e2e module whose pairs (in namespaces[0], deletion policy Restore) run on the lab nodes
    other modules share: the pairs go first, so the operator puts the nodes back (their Secrets must
    outlive that cleanup), then the namespaces, then the operator."""
    cluster.kubectl("-n", namespaces[0], "delete", "lbpair", *pairs, "--timeout=90s", check=False)
    for namespace in namespaces:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    operator.stop_and_show_log()
