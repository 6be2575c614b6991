"""A paused pair (spec.paused) end to end: an edit is staged and validated on the backup node while the VIP
keeps serving the old config; status.preview and the <pair>-preview ConfigMap say what would change, and
`python -m lbpair diff --against-node` prints the same diff; unpausing puts exactly that config live.

One pair on the lab's lb1+lb2 (deletion policy Restore: the nodes are put back for the other modules), the
operator running as the chart's ServiceAccount.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.addressing import Segment
from testbed.cluster import REPO_ROOT, ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    attached_object,
    deploy_documents,
    lab_pair,
    tear_down_on_shared_nodes,
    wait_for,
    weak_tls_secret,
    web_objects,
)

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-preview"
PAIR = "preview"
HOST = "preview.example.com"
CONFIG_MAP = f"{PAIR}-preview"
UPSTREAM_FILE = f"/etc/nginx/lbpair/upstream_{NAMESPACE}_{PAIR}-web.conf"
MANIFEST = "/var/lib/lbpair/manifest"


class PausedPair:
    """The pair on the lab, its manifests as the user keeps them (edited by the tests), and what users see."""

    def __init__(self, cluster: ControlPlane, lab: Lab, documents: list[dict[str, Any]]) -> None:
        self.cluster, self.lab, self.documents = cluster, lab, documents
        self.vip = str(lab.plan.pair_vips(1)[0])

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args, input=input).stdout

    def apply(self, documents: list[dict[str, Any]]) -> None:
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        )

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "lbpair", PAIR, "-o", "json")).get("status", {}))

    def condition(self, condition_type: str) -> dict[str, Any]:
        return next((c for c in self.status().get("conditions", []) if c["type"] == condition_type), {})

    def programmed(self) -> bool:
        return self.condition("Programmed").get("status") == "True"

    def set_paused(self, paused: bool) -> None:
        self.kubectl("patch", "lbpair", PAIR, "--type=merge", "-p", json.dumps({"spec": {"paused": paused}}))
        self.documents[0]["spec"]["paused"] = paused

    def served_by(self) -> str:
        response = self.lab.http_get_via(self.vip, HOST, "/", timeout=1.0)
        words = dict(word.split("=", 1) for word in response.body.split() if "=" in word)
        return words.get("backend", "") if response.succeeded else ""

    def config_map(self) -> dict[str, str]:
        return dict(json.loads(self.kubectl("get", "configmap", CONFIG_MAP, "-o", "json"))["data"])

    def events(self, reason: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={PAIR},reason={reason}"
        return list(
            json.loads(self.kubectl("get", "events", "--field-selector", selector, "-o", "json"))["items"]
        )

    def live_files(self) -> dict[str, str]:
        """The manifest of what the operator has live on each node (hash per file)."""
        return {node: self.lab.exec(node, "cat", MANIFEST).stdout for node in ("lb1", "lb2")}

    def wait_preview(self, predicate: Callable[[dict[str, Any]], object], what: str) -> dict[str, Any]:
        preview: dict[str, Any] = wait_for(
            lambda: (found := self.status().get("preview")) and predicate(found) and found,
            timeout=30,
            what=what,
        )
        return preview


@pytest.fixture(scope="module")
def paused(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PausedPair]:
    operator: OperatorProcess | None = None
    try:
        documents = [lab_pair(lab, 1, PAIR, NAMESPACE), *web_objects(lab, NAMESPACE, PAIR, HOST)]
        kubeconfig = deploy_documents(cluster, lab, NAMESPACE, documents)
        operator = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
        deployed = PausedPair(cluster, lab, documents)
        operator.start()
        wait_for(deployed.programmed, timeout=60, what="Programmed")
        wait_for(lambda: deployed.served_by() == "be1", timeout=20, what="be1 served through the VIP")
        yield deployed
    finally:
        if operator is not None:
            tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])


def run_diff_cli(paused: PausedPair, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`python -m lbpair diff` on the manifests as a GitOps repo holds them, against lb2 over SSH."""
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(yaml.safe_dump_all(paused.documents))
    return subprocess.run(
        [
            sys.executable, "-m", "lbpair", "diff", "-f", str(manifests), "--against-node",
            "--ssh-key", str(paused.lab.ssh_key_path), "--node", "lb2",
        ],
        env={"PYTHONPATH": str(REPO_ROOT / "operator"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_an_edit_of_a_paused_pair_is_previewed_not_served_until_unpaused(
    paused: PausedPair, tmp_path: Path
) -> None:
    be1 = str(paused.lab.plan.hosts["be1"].address(Segment.BACK))
    be2 = str(paused.lab.plan.hosts["be2"].address(Segment.BACK))
    paused.set_paused(True)
    paused.wait_preview(lambda p: p["validated"] and p["configHash"], "a preview of the unchanged config")
    live = paused.live_files()

    upstream = paused.documents[1]
    upstream["spec"]["servers"] = [{"address": be2, "port": 80}]
    paused.apply([upstream])
    preview = paused.wait_preview(lambda p: p.get("filesChanged", 0) >= 1, "the edit previewed")

    assert (preview["node"], preview["validated"], preview["configMap"]) == ("lb2", True, CONFIG_MAP)
    assert preview.get("filesAdded", 0) == preview.get("filesRemoved", 0) == 0
    assert paused.condition("Programmed")["reason"] == "Paused"
    assert [paused.served_by() for _ in range(5)] == ["be1"] * 5  # the old config, on the VIP
    assert paused.live_files() == live  # nothing swapped on either node
    data = paused.config_map()
    assert f"M {UPSTREAM_FILE}" in data["files"].splitlines()
    assert f"-    server {be1}:80" in data["diff"]
    assert f"+    server {be2}:80" in data["diff"]
    assert paused.events("Previewed")

    cli = run_diff_cli(paused, tmp_path)
    assert cli.returncode == 1, cli.stderr
    assert cli.stdout == data["diff"]  # the node's files, read the same way: the same diff

    paused.set_paused(False)
    wait_for(lambda: paused.served_by() == "be2", timeout=30, what="be2 served through the VIP")
    wait_for(paused.programmed, timeout=30, what="Programmed")
    status = paused.status()
    assert "preview" not in status
    assert {n["name"]: n["appliedConfigHash"] for n in status["nodes"]}["lb2"] == preview["configHash"]
    assert run_diff_cli(paused, tmp_path).returncode == 0  # the node runs what the manifests say


def test_a_refused_preview_goes_nowhere_and_shows_no_private_key(paused: PausedPair) -> None:
    weak = weak_tls_secret(NAMESPACE, "legacy-tls")
    host = attached_object(
        "VirtualHost",
        NAMESPACE,
        "legacy",
        PAIR,
        {
            "serverNames": ["legacy.example.com"],
            "listen": [{"port": 443, "protocol": "HTTPS"}],
            "tls": {"secretName": "legacy-tls"},
            "locations": [{"path": "/", "upstreamRef": {"name": f"{PAIR}-web"}}],
        },
    )
    paused.set_paused(True)
    paused.wait_preview(lambda p: p["validated"], "a preview of the unchanged config")
    live = paused.live_files()
    try:
        paused.apply([weak, host])
        preview = paused.wait_preview(lambda p: not p["validated"], "the refused preview")

        assert "key too small" in preview["message"]
        assert paused.condition("Programmed")["reason"] == "PreviewRejected"
        assert paused.events("PreviewRejected")
        assert paused.live_files() == live
        assert paused.served_by() == "be2"
        data = paused.config_map()
        assert "PRIVATE KEY" not in json.dumps(data)
        assert "# secret file added: content not shown" in data["diff"]
        assert "BEGIN CERTIFICATE" in data["diff"]  # the certificate is public
    finally:
        paused.kubectl("delete", "virtualhost", "legacy", "--wait=true")
        paused.set_paused(False)
    wait_for(paused.programmed, timeout=30, what="Programmed again")
