"""Upstreams backed by a Kubernetes Service, on the real lab and control plane, from a user's point of
view: the sample's Service and EndpointSlice (written through the API, as the endpoint controller would)
point at the lab backends and traffic through the VIP reaches both; a backend removed from the slice stops
getting traffic; an empty slice gives the Upstream a clear condition and nginx answers 503, while the
config stays live."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.addressing import Segment
from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    SEED_SAMPLE,
    OperatorProcess,
    deploy_documents,
    load_sample_on_lab,
    tear_down_on_shared_nodes,
    wait_for,
)

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-services"
PAIR = "seed"
HOST = "web.example.com"
SERVICE_SAMPLE = SEED_SAMPLE.parent / "service-upstream.yaml"
REQUESTS = 12  # round robin over two servers: each gets 6


class ServiceBackedSite:
    """The seed pair with the Service-backed sample, and the lab's backends by name."""

    def __init__(self, cluster: ControlPlane, lab: Lab) -> None:
        self.cluster, self.lab = cluster, lab
        self.vip = str(lab.plan.vip_primary)
        self.backends = {name: str(lab.plan.hosts[name].address(Segment.BACK)) for name in ("be1", "be2")}

    def set_endpoints(self, *backends: str) -> None:
        """The Service's EndpointSlice lists exactly these backends, ready, as the endpoint controller
        would write it."""
        slice_patch = {
            "endpoints": [{"addresses": [self.backends[b]], "conditions": {"ready": True}} for b in backends]
        }
        self.cluster.kubectl(
            "-n",
            NAMESPACE,
            "patch",
            "endpointslice",
            "web-lab",
            "--type=merge",
            "-p",
            json.dumps(slice_patch),
        )

    def answering_backends(self) -> list[str]:
        """Which backend answered each of REQUESTS requests through the VIP ("" for a failed one)."""
        answers = [self.lab.http_get_via(self.vip, HOST, "/") for _ in range(REQUESTS)]
        return [_backend_of(answer.body) if answer.succeeded else "" for answer in answers]

    def upstream_condition(self, condition_type: str) -> dict[str, Any]:
        found = json.loads(
            self.cluster.kubectl("-n", NAMESPACE, "get", "upstream", "web", "-o", "json").stdout
        )
        for condition in found.get("status", {}).get("conditions", []):
            if condition["type"] == condition_type:
                return dict(condition)
        return {}


def _backend_of(body: str) -> str:
    fields = dict(item.split("=", 1) for item in body.split() if "=" in item)
    return fields.get("backend", "")


@pytest.fixture(scope="module")
def site(
    cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceBackedSite]:
    documents = load_sample_on_lab(lab, SEED_SAMPLE) + load_sample_on_lab(lab, SERVICE_SAMPLE)
    operator = OperatorProcess(
        deploy_documents(cluster, lab, NAMESPACE, documents),
        tmp_path_factory.mktemp("operator") / "operator.log",
        probe_interval_seconds=1.0,
    )
    deployed = ServiceBackedSite(cluster, lab)
    operator.start()
    try:
        wait_for(
            lambda: lab.http_get_via(deployed.vip, HOST, "/").succeeded, timeout=90, what=f"{HOST} served"
        )
        yield deployed
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])


def test_traffic_through_the_vip_reaches_every_ready_endpoint(site: ServiceBackedSite) -> None:
    site.set_endpoints("be1", "be2")
    wait_for(
        lambda: set(site.answering_backends()) == {"be1", "be2"}, timeout=30, what="both backends answer"
    )

    available = site.upstream_condition("BackendsAvailable")
    assert available["status"] == "True", available
    assert available["message"] == f"2 ready endpoints of Service {NAMESPACE}/web"


def test_a_backend_removed_from_the_slice_stops_getting_traffic(site: ServiceBackedSite) -> None:
    site.set_endpoints("be1", "be2")
    wait_for(
        lambda: set(site.answering_backends()) == {"be1", "be2"}, timeout=30, what="both backends answer"
    )

    started = time.monotonic()
    site.set_endpoints("be2")
    wait_for(lambda: set(site.answering_backends()) == {"be2"}, timeout=30, what="only be2 answers")
    print(f"slice edit to traffic on be2 only: {time.monotonic() - started:.1f} s")

    assert set(site.answering_backends()) == {"be2"}  # and it stays so
    assert (
        site.upstream_condition("BackendsAvailable")["message"]
        == f"1 ready endpoint of Service {NAMESPACE}/web"
    )


def test_an_empty_slice_gives_a_condition_and_503_not_a_refused_config(site: ServiceBackedSite) -> None:
    site.set_endpoints()

    unavailable = wait_for(
        lambda: (c := site.upstream_condition("BackendsAvailable")).get("status") == "False" and c,
        timeout=30,
        what="BackendsAvailable False",
    )
    wait_for(lambda: site.lab.http_get_via(site.vip, HOST, "/").status == 503, timeout=30, what="503 for web")

    assert unavailable["reason"] == "NoReadyEndpoints"
    assert unavailable["message"] == (
        f"Service {NAMESPACE}/web has no ready endpoint: nginx answers 503 for this Upstream"
    )
    programmed = site.upstream_condition("Programmed")
    assert programmed["status"] == "True", programmed
    assert site.lab.http_get_via(site.vip, "www.example.com", "/").succeeded  # the other tenants still serve

    site.set_endpoints("be1")
    wait_for(lambda: set(site.answering_backends()) == {"be1"}, timeout=30, what="be1 answers again")


def backend_reachability(site: ServiceBackedSite) -> dict[str, dict[str, bool]]:
    """The web Upstream's status.backends: "ADDRESS:PORT" -> node -> reachable."""
    found = json.loads(site.cluster.kubectl("-n", NAMESPACE, "get", "upstream", "web", "-o", "json").stdout)
    return {
        f"{backend['address']}:{backend['port']}": {
            node["name"]: node["reachable"] for node in backend["nodes"]
        }
        for backend in found.get("status", {}).get("backends") or []
    }


def backend_events(site: ServiceBackedSite, reason: str) -> list[str]:
    """The messages of the web Upstream's events with `reason`."""
    selector = f"involvedObject.kind=Upstream,involvedObject.name=web,reason={reason}"
    listed = json.loads(
        site.cluster.kubectl(
            "-n", NAMESPACE, "get", "events", "--field-selector", selector, "-o", "json"
        ).stdout
    )
    return sorted(event["message"] for event in listed["items"])


def test_a_stopped_backend_shows_down_from_both_nodes_with_events_and_comes_back(
    site: ServiceBackedSite,
) -> None:
    site.set_endpoints("be1", "be2")
    be1, be2 = f"{site.backends['be1']}:80", f"{site.backends['be2']}:80"
    both_up = {be1: {"lb1": True, "lb2": True}, be2: {"lb1": True, "lb2": True}}
    wait_for(lambda: backend_reachability(site) == both_up, timeout=30, what="both backends reachable")

    site.lab.power_off("be2")
    try:
        wait_for(
            lambda: backend_reachability(site).get(be2) == {"lb1": False, "lb2": False},
            timeout=30,
            what="be2 down from both nodes",
        )
        assert backend_reachability(site)[be1] == {"lb1": True, "lb2": True}
        down_events = wait_for(lambda: len(e := backend_events(site, "BackendDown")) >= 2 and e, timeout=10)
        assert down_events == [f"{be2} is unreachable from lb1", f"{be2} is unreachable from lb2"]
    finally:
        site.lab.power_on("be2")

    wait_for(lambda: backend_reachability(site) == both_up, timeout=30, what="be2 reachable again")
    up_events = wait_for(lambda: len(e := backend_events(site, "BackendUp")) >= 2 and e, timeout=10)
    assert up_events == [f"{be2} is reachable again from lb1", f"{be2} is reachable again from lb2"]
