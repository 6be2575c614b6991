"""Backend boundaries on the real lab, from a tenant's point of view: an Upstream aimed at loopback or at
the link-local metadata address, or at a host name that does not resolve, is refused on its own status
with the field named, while every other VirtualHost keeps serving through the VIP and another tenant's
edit still goes live (nginx never sees the name, so its `nginx -t` cannot fail the pair over it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.addressing import Segment
from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    attached_object,
    deploy_sample,
    tear_down_on_shared_nodes,
    wait_for,
)

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-backends"
PAIR = "seed"
PROBE_INTERVAL_SECONDS = 1.0


class Tenants:
    """The seed sample with the operator running, and objects tenants add to it."""

    def __init__(self, cluster: ControlPlane, lab: Lab) -> None:
        self.cluster = cluster
        self.lab = lab
        self.vip = str(lab.plan.vip_primary)

    def apply(self, documents: list[dict[str, Any]]) -> None:
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        self.cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=listed)

    def condition(self, plural: str, name: str, condition_type: str) -> dict[str, Any]:
        found = json.loads(self.cluster.kubectl("-n", NAMESPACE, "get", plural, name, "-o", "json").stdout)
        for condition in found.get("status", {}).get("conditions", []):
            if condition["type"] == condition_type:
                return dict(condition)
        return {}

    def refused(self, upstream: str) -> dict[str, Any]:
        """The Upstream's Accepted condition once it is False."""
        found: dict[str, Any] = wait_for(
            lambda: (c := self.condition("upstreams", upstream, "Accepted")).get("status") == "False" and c,
            timeout=30,
            what=f"Upstream {upstream} refused",
        )
        return found

    def served(self, host: str) -> bool:
        return self.lab.http_get_via(self.vip, host, "/").succeeded


def upstream_with_site(name: str, address: str) -> list[dict[str, Any]]:
    """A tenant's Upstream of one server at `address`, and a VirtualHost `<name>.backends.example.com`
    using it."""
    return [
        attached_object("Upstream", NAMESPACE, name, PAIR, {"servers": [{"address": address, "port": 80}]}),
        attached_object(
            "VirtualHost",
            NAMESPACE,
            name,
            PAIR,
            {
                "serverNames": [f"{name}.backends.example.com"],
                "locations": [{"path": "/", "upstreamRef": {"name": name}}],
            },
        ),
    ]


@pytest.fixture(scope="module")
def tenants(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    operator = OperatorProcess(
        deploy_sample(cluster, lab, NAMESPACE),
        tmp_path_factory.mktemp("operator") / "operator.log",
        probe_interval_seconds=PROBE_INTERVAL_SECONDS,
    )
    deployed = Tenants(cluster, lab)
    operator.start()
    try:
        wait_for(lambda: deployed.served("www.example.com"), timeout=90, what="the seed's www served")
        yield deployed
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])


def test_loopback_and_link_local_backends_are_refused_with_the_field_named(tenants: Tenants) -> None:
    tenants.apply(
        upstream_with_site("loopback", "127.0.0.1") + upstream_with_site("metadata", "169.254.169.254")
    )

    loopback = tenants.refused("loopback")
    metadata = tenants.refused("metadata")

    assert loopback["message"].startswith(
        "spec.servers[0].address: 127.0.0.1, which is loopback (127.0.0.0/8)"
    )
    assert metadata["message"].startswith(
        "spec.servers[0].address: 169.254.169.254, which is link-local (169.254.0.0/16)"
    )
    assert tenants.condition("virtualhosts", "loopback", "Accepted")["status"] == "False"
    # The other VirtualHosts keep serving through the VIP; the refused ones are not served at all.
    assert tenants.served("www.example.com")
    assert tenants.served("oa.example.com")
    assert not tenants.served("loopback.backends.example.com")
    assert not tenants.served("metadata.backends.example.com")


def test_unresolvable_name_is_refused_alone_and_another_tenants_edit_goes_live(tenants: Tenants) -> None:
    be1 = tenants.lab.plan.hosts["be1"].address(Segment.BACK)
    tenants.apply(upstream_with_site("nowhere", "backend.lbpair-test.invalid"))
    tenants.apply(upstream_with_site("tenant-b", str(be1)))  # in the same breath as the bad name

    nowhere = tenants.refused("nowhere")
    wait_for(lambda: tenants.served("tenant-b.backends.example.com"), timeout=30, what="tenant B's edit live")

    assert nowhere["message"] == (
        "spec.servers[0].address: backend.lbpair-test.invalid does not resolve (to an IPv4 address)"
    )
    # Its status is written right after the rollout that made it answer (as `kubectl wait` would see).
    wait_for(
        lambda: tenants.condition("virtualhosts", "tenant-b", "Programmed").get("status") == "True",
        timeout=10,
        what="tenant B's VirtualHost Programmed",
    )
    assert tenants.served("www.example.com")
