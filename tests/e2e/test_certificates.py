"""Certificate expiry and rotation from a tenant's point of view (issue 14 item 3): a TLS VirtualHost whose
certificate expires in 5 days reports it in status (notAfter, serial, names) with CertificateExpiring and a
Warning event; rotating the Secret puts the new certificate on both nodes, `openssl s_client` through the
VIP is served the new serial, and status clears. Real API server, real lab nodes, the operator as the
chart's ServiceAccount; certificates made in the test (tests/unit/make_certificates.py)."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest

from lbpair.model import SECRET_LABEL
from testbed.addressing import CLIENT, Segment
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
from tests.unit.make_certificates import IssuedCertificate, make_certificate

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-certificates"
PAIR = "seed"
HOST = "shop.example.com"
TLS_SAMPLE = REPO_ROOT / "config" / "samples" / "tls-virtualhost.yaml"
CERTIFICATE_FILE = f"/etc/nginx/lbpair/tls/{NAMESPACE}_shop-tls.crt"
LB_NODES = ("lb1", "lb2")
NOW = datetime.datetime.now(datetime.UTC)


def issue(days_left: int, serial: int) -> IssuedCertificate:
    return make_certificate(
        common_name=HOST,
        dns_names=(HOST,),
        not_before=NOW - datetime.timedelta(days=1),
        not_after=NOW + datetime.timedelta(days=days_left),
        serial=serial,
    )


def shop_secret(issued: IssuedCertificate) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "shop-tls", "labels": {SECRET_LABEL: "true"}},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(issued.certificate.encode()).decode(),
            "tls.key": base64.b64encode(issued.private_key.encode()).decode(),
        },
    }


class Tenant:
    def __init__(self, cluster: ControlPlane, lab: Lab) -> None:
        self.cluster, self.lab = cluster, lab

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args, input=input).stdout

    def apply(self, documents: list[dict[str, Any]]) -> None:
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        )

    def shop_status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.kubectl("get", "virtualhost", "shop", "-o", "json")).get(
            "status", {}
        )
        return status

    def condition(self, condition_type: str) -> tuple[str, str]:
        for condition in self.shop_status().get("conditions", []):
            if condition["type"] == condition_type:
                return condition["status"], condition["reason"]
        return "", ""

    def events(self, reason: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=VirtualHost,involvedObject.name=shop,reason={reason}"
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("get", "events", "--field-selector", selector, "-o", "json")
        )["items"]
        return items

    def served_serial(self, address: str) -> str:
        """The serial `openssl s_client` is served for HOST at `address`:443, from the lab's client."""
        handshake = self.lab.exec(
            CLIENT,
            "sh", "-c",
            f"openssl s_client -connect {address}:443 -servername {HOST} </dev/null 2>/dev/null"
            " | openssl x509 -noout -serial",
            check=False, timeout=15,
        )  # fmt: skip
        return handshake.stdout.strip().removeprefix("serial=")


@pytest.fixture(scope="module")
def tenant(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    documents = [
        *load_sample_on_lab(lab),
        shop_secret(issue(5, 0xA11CE)),
        *on_lab(load_manifests(TLS_SAMPLE), lab),
    ]
    kubeconfig = deploy_documents(
        cluster, lab, NAMESPACE, documents, chart_values=[f"secretNamespaces={{{NAMESPACE}}}"]
    )
    operator = OperatorProcess(
        kubeconfig,
        tmp_path_factory.mktemp("operator") / "operator.log",
        settings={"LBPAIR_SECRET_NAMESPACES": NAMESPACE},
    )
    operator.start()
    try:
        yield Tenant(cluster, lab)
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])


def test_a_certificate_near_expiry_is_reported_with_a_condition_and_a_warning(tenant: Tenant) -> None:
    wait_for(lambda: tenant.condition("Programmed") == ("True", "Programmed"), timeout=90, what="shop live")

    status = tenant.shop_status()
    certificate = status["certificate"]
    assert certificate["serial"] == "0A11CE"
    assert certificate["subjectNames"] == [HOST]
    assert certificate["coversServerNames"] is True
    assert datetime.datetime.fromisoformat(certificate["notAfter"]) - NOW < datetime.timedelta(
        days=5, seconds=1
    )
    assert tenant.condition("CertificateExpiring") == ("True", "CertificateExpiresSoon")
    assert tenant.condition("CertificateValid") == ("True", "Valid")
    (event,) = wait_for(lambda: tenant.events("CertificateExpiresSoon"), timeout=20, what="the warning event")
    assert event["type"] == "Warning"
    assert "within the 14-day warning window" in event["message"]
    assert tenant.served_serial(str(tenant.lab.plan.vip_primary)) == "0A11CE"


def test_a_rotated_secret_is_served_by_both_nodes_and_clears_the_condition(tenant: Tenant) -> None:
    renewed = issue(90, 0xB0B0B0)
    tenant.apply([shop_secret(renewed)])

    wait_for(
        lambda: tenant.shop_status().get("certificate", {}).get("serial") == "B0B0B0",
        timeout=60,
        what="the new serial in status",
    )

    assert tenant.condition("CertificateExpiring") == ("False", "NotExpiring")
    assert tenant.condition("Programmed") == ("True", "Programmed")
    vip = str(tenant.lab.plan.vip_primary)
    assert wait_for(lambda: tenant.served_serial(vip) == "B0B0B0", timeout=20, what="the VIP serving it")
    for node in LB_NODES:
        assert tenant.lab.exec(node, "cat", CERTIFICATE_FILE).stdout == renewed.certificate
        own_address = str(tenant.lab.plan.hosts[node].address(Segment.FRONT))
        assert tenant.served_serial(own_address) == "B0B0B0", node
    assert tenant.events("CertificateExpired") == []
