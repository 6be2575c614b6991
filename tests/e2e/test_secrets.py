"""Secrets on a need-to-know basis, from a tenant's point of view, with the operator running as the chart's
ServiceAccount and the chart granting Secret read in this namespace only (`secretNamespaces`).

The operator lists and watches only Secrets labelled lb.lbpair.dev/usable=true (the API server applies
the selector): an unlabelled TLS Secret, though readable under the operator's Role, is never read; it is
reported on the VirtualHost, and nothing of it reaches the nodes. Labelled, it goes live, its key 0600.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lbpair.model import SECRET_LABEL
from testbed.addressing import CLIENT
from testbed.cluster import REPO_ROOT, ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    deploy_documents,
    load_manifests,
    load_sample_on_lab,
    on_lab,
    tear_down_on_shared_nodes,
    wait_for,
)

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-secrets"
PAIR = "seed"
TLS_SAMPLE = REPO_ROOT / "config" / "samples" / "tls-virtualhost.yaml"
TLS_INPUTS = REPO_ROOT / "tests" / "golden" / "inputs"
TLS_DIR = "/etc/nginx/lbpair/tls"
LB_NODES = ("lb1", "lb2")
# A line from the middle of the certificate: found in a file on a node only if the operator read it.
CERTIFICATE_LINE = (TLS_INPUTS / "shop-tls.crt").read_text().splitlines()[2]


def tls_secret(name: str, secret_type: str, *, labelled: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {SECRET_LABEL: "true"} if labelled else {}},
        "type": secret_type,
        "data": {
            key: base64.b64encode((TLS_INPUTS / f"shop-tls.{key.split('.')[1]}").read_bytes()).decode()
            for key in ("tls.crt", "tls.key")
        },
    }


class Tenant:
    """A tenant's view of NAMESPACE: its objects' status, and what lands on the shared nodes."""

    def __init__(self, cluster: ControlPlane, lab: Lab, operator_kubeconfig: Path) -> None:
        self.cluster, self.lab, self.operator_kubeconfig = cluster, lab, operator_kubeconfig
        self.vip = str(lab.plan.vip_primary)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args, input=input).stdout

    def apply(self, documents: list[dict[str, Any]]) -> None:
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        )

    def condition(self, kind: str, name: str, condition_type: str) -> dict[str, Any]:
        document = json.loads(self.kubectl("get", kind, name, "-o", "json"))
        for condition in document.get("status", {}).get("conditions", []):
            if condition["type"] == condition_type:
                return dict(condition)
        return {}

    def wait_condition(self, kind: str, name: str, condition_type: str, status: str) -> dict[str, Any]:
        found: dict[str, Any] = wait_for(
            lambda: (c := self.condition(kind, name, condition_type)).get("status") == status and c,
            timeout=60,
            what=f"{kind}/{name} {condition_type}={status}",
        )
        return found

    def tls_files(self, node: str) -> str:
        return self.lab.exec(node, "sh", "-c", f"ls {TLS_DIR} 2>/dev/null; true").stdout

    def certificate_on(self, node: str) -> bool:
        found = self.lab.exec(node, "grep", "-rlF", CERTIFICATE_LINE, "/etc/nginx", check=False)
        return bool(found.stdout.strip())

    def operator_may(self, *args: str) -> bool:
        return (
            self.cluster.kubectl(
                "auth", "can-i", *args, kubeconfig=self.operator_kubeconfig, check=False
            ).stdout.strip()
            == "yes"
        )


@pytest.fixture(scope="module")
def tenant(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    operator_kubeconfig = deploy_documents(
        cluster, lab, NAMESPACE, load_sample_on_lab(lab), chart_values=[f"secretNamespaces={{{NAMESPACE}}}"]
    )
    operator = OperatorProcess(
        operator_kubeconfig,
        tmp_path_factory.mktemp("operator") / "operator.log",
        settings={"LBPAIR_SECRET_NAMESPACES": NAMESPACE},
    )
    deployed = Tenant(cluster, lab, operator_kubeconfig)
    operator.start()
    try:
        deployed.wait_condition("lbpair", PAIR, "Ready", "True")
        yield deployed
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])


def test_the_operator_may_read_secrets_only_where_the_chart_grants_it(tenant: Tenant) -> None:
    assert tenant.operator_may("watch", "secrets", "-n", NAMESPACE)
    assert not tenant.operator_may("get", "secrets", "-n", "lbpair-system")
    assert not tenant.operator_may("list", "secrets", "--all-namespaces")


def test_an_unlabelled_tls_secret_is_never_read(tenant: Tenant) -> None:
    tenant.apply([tls_secret("shop-tls", "kubernetes.io/tls", labelled=False)])
    tenant.apply(on_lab(load_manifests(TLS_SAMPLE), tenant.lab))

    accepted = tenant.wait_condition("virtualhost", "shop", "Accepted", "False")

    assert (
        "spec.tls.secretName: Secret shop-tls not found in namespace lb-secrets or not labelled "
        "lb.lbpair.dev/usable=true"
    ) in accepted["message"]
    tenant.wait_condition("lbpair", PAIR, "Programmed", "True")  # the rest of the pair is pushed
    for node in LB_NODES:
        assert tenant.tls_files(node) == ""
        assert not tenant.certificate_on(node)


def test_once_labelled_it_goes_live_and_its_key_file_is_0600(tenant: Tenant) -> None:
    tenant.kubectl("label", "secret", "shop-tls", f"{SECRET_LABEL}=true")

    tenant.wait_condition("virtualhost", "shop", "Programmed", "True")

    key_file = f"{TLS_DIR}/{NAMESPACE}_shop-tls.key"
    for node in LB_NODES:
        assert tenant.lab.exec(node, "stat", "-c", "%a %U", key_file).stdout.split() == ["600", "root"]
        assert tenant.certificate_on(node)
    served = tenant.lab.exec(
        CLIENT,
        "curl", "--silent", "--insecure", "--max-time", "5", "--output", "/dev/null",
        "--write-out", "%{http_code}",
        "--resolve", f"shop.example.com:443:{tenant.vip}", "https://shop.example.com/",
        check=False,
    )  # fmt: skip
    assert served.stdout == "200", served.stderr


def test_a_secret_of_the_wrong_type_is_refused_naming_the_field(tenant: Tenant) -> None:
    shop = on_lab(load_manifests(TLS_SAMPLE), tenant.lab)[0]
    shop["metadata"]["name"] = "opaque"
    shop["spec"]["serverNames"] = ["opaque.example.com"]
    shop["spec"]["tls"]["secretName"] = "opaque-tls"
    tenant.apply([tls_secret("opaque-tls", "Opaque", labelled=True), shop])

    accepted = tenant.wait_condition("virtualhost", "opaque", "Accepted", "False")

    assert (
        "spec.tls.secretName: Secret opaque-tls is of type Opaque, not kubernetes.io/tls"
        in accepted["message"]
    )
    for node in LB_NODES:
        assert "opaque-tls" not in tenant.tls_files(node)
