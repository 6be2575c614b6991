"""Ownership on a shared pair, from a tenant's point of view: a newer VirtualHost in another namespace cannot
take an older one's host name (whatever their names' order), is told so without learning whose it is, and
traffic for the name keeps reaching the older one's backend; a VirtualHost on a port the pair does not
declare is refused naming spec.listen. Real API server, real lab nodes, the operator as the chart's
ServiceAccount."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from testbed.addressing import Segment
from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    attached_object,
    deploy_documents,
    load_sample_on_lab,
    tear_down_on_shared_nodes,
    wait_for,
)
from testbed.traffic import RequestLoop

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-own"
NEWCOMER_NAMESPACE = "aaa"  # sorts before NAMESPACE: alphabetical order would hand it the name
PAIR = "seed"
HOST = "h.ownership.example.com"


class SharedPair:
    """The seed pair in NAMESPACE, open to every namespace, with the operator running."""

    def __init__(self, cluster: ControlPlane, lab: Lab) -> None:
        self.cluster, self.lab = cluster, lab

    def apply(self, namespace: str, documents: list[dict[str, Any]]) -> None:
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        self.cluster.kubectl("-n", namespace, "apply", "-f", "-", input=listed)

    def virtual_host(self, namespace: str, name: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(
            self.cluster.kubectl("-n", namespace, "get", "virtualhost", name, "-o", "json").stdout
        )
        return document

    def condition(self, namespace: str, name: str, condition_type: str) -> dict[str, Any]:
        conditions = self.virtual_host(namespace, name).get("status", {}).get("conditions", [])
        return next((dict(c) for c in conditions if c["type"] == condition_type), {})

    def wait_condition(self, namespace: str, name: str, condition_type: str, status: str) -> dict[str, Any]:
        condition: dict[str, Any] = wait_for(
            lambda: (
                (found := self.condition(namespace, name, condition_type)).get("status") == status and found
            ),
            timeout=60,
            what=f"VirtualHost {namespace}/{name} {condition_type}={status}",
        )
        return condition

    def web(self, namespace: str, name: str, backend: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
        """An Upstream with one lab backend (port 80) and a VirtualHost `name` proxying to it."""
        address = str(self.lab.plan.hosts[backend].address(Segment.BACK))
        upstream = attached_object(
            "Upstream", namespace, f"{name}-web", PAIR, {"servers": [{"address": address, "port": 80}]}
        )
        location = {"path": "/", "upstreamRef": {"name": f"{name}-web"}}
        virtual_host = attached_object(
            "VirtualHost", namespace, name, PAIR, {"locations": [location], **spec}
        )
        for document in (upstream, virtual_host):
            document["spec"]["pairRef"]["namespace"] = NAMESPACE
        return [upstream, virtual_host]

    def backend_of(self, host: str) -> str:
        response = self.lab.http_get_via(str(self.lab.plan.vip_primary), host, "/")
        return response.body if response.succeeded else f"failed: {response}"


@pytest.fixture(scope="module")
def shared(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedPair]:
    documents = load_sample_on_lab(lab)
    (pair,) = [document for document in documents if document["kind"] == "LoadBalancerPair"]
    pair["spec"]["allowedNamespaces"] = {"from": "All"}
    operator = OperatorProcess(
        deploy_documents(cluster, lab, NAMESPACE, documents),
        tmp_path_factory.mktemp("operator") / "operator.log",
    )
    cluster.kubectl("create", "namespace", NEWCOMER_NAMESPACE, check=False)
    operator.start()
    try:
        yield SharedPair(cluster, lab)
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE, NEWCOMER_NAMESPACE], [PAIR])


def test_a_newer_virtual_host_in_another_namespace_cannot_take_an_older_ones_host_name(
    shared: SharedPair,
) -> None:
    shared.apply(NAMESPACE, shared.web(NAMESPACE, "x", "be1", {"serverNames": [HOST]}))
    shared.wait_condition(NAMESPACE, "x", "Programmed", "True")
    wait_for(lambda: "backend=be1" in shared.backend_of(HOST), timeout=30, what=f"{HOST} served by be1")
    # The API server stamps whole seconds: the newcomer must be created in a later second to be newer.
    created = datetime.fromisoformat(shared.virtual_host(NAMESPACE, "x")["metadata"]["creationTimestamp"])
    wait_for(lambda: datetime.now(UTC) >= created + timedelta(seconds=1), timeout=5, what="the next second")

    with RequestLoop(shared.lab, host=HOST, interval=0.1, max_seconds=30) as requests:
        shared.apply(
            NEWCOMER_NAMESPACE,
            shared.web(NEWCOMER_NAMESPACE, "x", "be2", {"serverNames": [HOST.upper()]}),
        )
        refused = shared.wait_condition(NEWCOMER_NAMESPACE, "x", "Accepted", "False")
        # Once the newcomer is refused, the pair has built with it: the older one is still the one served.
        served_after = [shared.backend_of(HOST) for _ in range(5)]

    assert refused["message"] == (
        f"spec.serverNames[0]: {HOST.upper()} is already served by another VirtualHost "
        "(a host name belongs to its oldest claimant)"
    )
    assert NAMESPACE not in refused["message"]
    assert shared.condition(NEWCOMER_NAMESPACE, "x", "Programmed")["status"] == "False"
    assert shared.condition(NAMESPACE, "x", "Programmed")["status"] == "True"
    assert all("backend=be1" in body for body in served_after), served_after
    assert len(requests.responses) >= 5, "the request loop barely ran"
    assert [r for r in requests.responses if "backend=be1" not in r.body] == []


@pytest.mark.parametrize("port", [8081, 22])
def test_a_virtual_host_on_a_port_the_pair_does_not_declare_is_refused_naming_spec_listen(
    shared: SharedPair, port: int
) -> None:
    name = f"port-{port}"
    spec = {"serverNames": [f"{name}.ownership.example.com"], "listen": [{"port": 80}, {"port": port}]}
    shared.apply(NEWCOMER_NAMESPACE, shared.web(NEWCOMER_NAMESPACE, name, "be1", spec))

    refused = shared.wait_condition(NEWCOMER_NAMESPACE, name, "Accepted", "False")

    assert refused["message"] == (
        f"spec.listen[1]: {port}/HTTP is not a listener of pair {PAIR} (its listeners: 80/HTTP, 443/HTTPS)"
    )
    # Its Upstream is valid and goes live; the VirtualHost never does, and the port stays closed.
    nginx_conf = wait_for(
        lambda: (
            (text := shared.lab.exec("lb1", "cat", "/etc/nginx/nginx.conf").stdout)
            and f"upstream_{NEWCOMER_NAMESPACE}_{name}-web.conf" in text
            and text
        ),
        timeout=30,
        what=f"the Upstream of {name} live on lb1",
    )
    assert f"vhost_{NEWCOMER_NAMESPACE}_{name}.conf" not in nginx_conf
    assert f"listen {port}" not in nginx_conf
