"""Upstreams whose servers come from a Service (spec.serviceRef): what nginx is given for the Service's
EndpointSlices as the endpoint controller writes them, what the Upstream's status says, and that a tenant's
Service cannot point the pair at addresses the pair does not allow."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from lbpair.build import PairBuild, ParseCache, build_pair
from lbpair.build.certificates import ExpiryCheck
from lbpair.build.services import ServiceView, followed_service, slice_service
from lbpair.health import NodeReport, PairHealth
from lbpair.model import SpecError, parse_upstream
from lbpair.model.common import ObjectRef
from lbpair.model.status import find_condition
from lbpair.render import render_pair
from lbpair.render.model import ObjectKey
from lbpair.status import attached_status
from tests.unit.samples import NAMESPACE, Sample, sample

SAMPLES = ("seed-tutorial.yaml", "service-upstream.yaml")
WEB = ObjectRef(NAMESPACE, "web")
WEB_KEY = ObjectKey("Upstream", NAMESPACE, "web")
BE1, BE2 = "198.18.0.11", "198.18.0.12"


def endpoint(address: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


def web_service(*slices: dict[str, Any], ports: tuple[tuple[str, int], ...] = (("http", 80),)) -> ServiceView:
    return ServiceView(ports=ports, slices=slices)


def ipv4_slice(
    *endpoints: dict[str, Any], name: str = "web-1", port: tuple[str, int] = ("http", 80)
) -> dict[str, Any]:
    return {
        "name": name,
        "addressType": "IPv4",
        "ports": [{"name": port[0], "port": port[1], "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def with_service(view: ServiceView | None) -> Sample:
    resources = sample(*SAMPLES)
    resources.services = {WEB: view} if view else {}
    return resources


def upstream_file(build: PairBuild) -> str:
    node = next(iter(render_pair(build.state).values()))
    (content,) = [f.content for path, f in node.files.items() if path.endswith("upstream_demo_web.conf")]
    return content


def server_lines(build: PairBuild) -> list[str]:
    """The upstream block's `server` lines."""
    block = upstream_file(build).split("upstream demo_web {", 1)[1].split("}", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("server ")]


def backends_condition(build: PairBuild) -> dict[str, str]:
    (item,) = [a for a in build.attached if a.key == WEB_KEY]
    health = PairHealth(holders={}, nodes=(NodeReport("lb1", None, programmed=True),))
    expiry = ExpiryCheck.warning_days_ahead(datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC), 14)
    status = attached_status(
        build, health, item, included=True, previous=None, at="2026-11-30T00:00:00Z", expiry=expiry
    )
    condition = find_condition(status.conditions, "BackendsAvailable")
    assert condition is not None
    return {"status": condition.status, "reason": condition.reason, "message": condition.message}


def test_the_sample_serves_every_ready_endpoint_of_the_service() -> None:
    build = sample(*SAMPLES).build()

    assert build.problems == []
    assert server_lines(build) == [
        f"server {BE1}:80 weight=1 max_fails=1 fail_timeout=10s;",
        f"server {BE2}:80 weight=1 max_fails=1 fail_timeout=10s;",
    ]
    assert "servers from the ready endpoints of Service demo/web" in upstream_file(build)
    assert backends_condition(build) == {
        "status": "True",
        "reason": "EndpointsReady",
        "message": "2 ready endpoints of Service demo/web",
    }


def test_only_ready_endpoints_are_servers_terminating_ones_are_dropped() -> None:
    view = web_service(
        ipv4_slice(
            endpoint(BE1, ready=True),
            endpoint(BE2, ready=False, serving=True, terminating=True),  # draining: dropped
            endpoint("198.18.0.13"),  # no conditions: ready, as the API documents
            endpoint("198.18.0.14", ready=False),
        ),
        ipv4_slice(endpoint(BE1, ready=True), name="web-2"),  # the same endpoint in two slices: one server
        {
            "name": "web-v6",
            "addressType": "IPv6",
            "ports": [{"name": "http", "port": 80}],
            "endpoints": [endpoint("2001:db8::1")],
        },
    )

    build = with_service(view).build()

    assert build.problems == []
    assert [line.split()[1] for line in server_lines(build)] == [f"{BE1}:80", "198.18.0.13:80"]


def test_the_service_port_is_found_by_number_or_name_and_nginx_uses_its_target_port() -> None:
    view = web_service(
        ipv4_slice(endpoint(BE1), port=("http", 8080)),
        ipv4_slice(endpoint(BE2), name="web-admin", port=("admin", 9000)),
        ports=(("http", 80), ("admin", 81)),
    )
    by_number = with_service(view)
    by_name = with_service(view)
    by_name.upstream("web")["spec"]["serviceRef"] = {"name": "web", "portName": "admin"}

    assert [line.split()[1] for line in server_lines(by_number.build())] == [f"{BE1}:8080"]
    assert [line.split()[1] for line in server_lines(by_name.build())] == [f"{BE2}:9000"]


@pytest.mark.parametrize(
    ("view", "service_ref", "message"),
    [
        (None, {"name": "web", "port": 80}, "spec.serviceRef: Service web not found"),
        (web_service(), {"name": "web", "port": 81}, "spec.serviceRef: port: Service web has no port 81"),
        (
            web_service(),
            {"name": "web", "portName": "https"},
            "spec.serviceRef: portName: Service web has no port https",
        ),
    ],
)
def test_a_missing_service_or_port_refuses_the_upstream_alone(
    view: ServiceView | None, service_ref: dict[str, Any], message: str
) -> None:
    resources = with_service(view)
    resources.upstream("web")["spec"]["serviceRef"] = service_ref

    build = resources.build()

    assert build.problems_of(WEB_KEY) == [message]
    assert "www" in {host.source.name for host in build.state.virtual_hosts}  # the rest still builds


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("127.0.0.1", "127.0.0.1, which is loopback (127.0.0.0/8)"),
        ("169.254.169.254", "169.254.169.254, which is link-local (169.254.0.0/16)"),
        ("198.51.100.10", "198.51.100.10, which is a VIP of the pair itself: refused"),
    ],
)
def test_an_endpoint_the_pair_does_not_allow_refuses_the_upstream_naming_it(
    address: str, refusal: str
) -> None:
    resources = with_service(web_service(ipv4_slice(endpoint(BE1), endpoint(address))))

    build = resources.build()

    (problem,) = build.problems_of(WEB_KEY)
    assert problem.startswith(f"spec.serviceRef: Service web has endpoint {refusal}")
    assert WEB_KEY not in build.upstreams_by_key
    assert not any(h.source.name == "web" for h in build.state.virtual_hosts)


def test_allowed_cidrs_bound_endpoint_addresses_too() -> None:
    resources = with_service(web_service(ipv4_slice(endpoint(BE1), endpoint("10.9.9.9"))))
    resources.pair["spec"]["backends"] = {"allowedCIDRs": ["198.18.0.0/24"]}

    build = resources.build()

    assert build.problems_of(WEB_KEY) == [
        "spec.serviceRef: Service web has endpoint 10.9.9.9, which is outside the pair's "
        "spec.backends.allowedCIDRs"
    ]


def test_no_ready_endpoint_keeps_the_upstream_with_a_503_server_and_says_so() -> None:
    build = with_service(web_service(ipv4_slice(endpoint(BE1, ready=False)))).build()

    assert build.problems == []
    content = upstream_file(build)
    (listen,) = [
        line.split()[1].rstrip(";") for line in content.splitlines() if line.strip().startswith("listen ")
    ]
    assert listen.startswith("127.")  # a loopback address of its own: the status server keeps 127.0.0.1
    assert not listen.startswith("127.0.0.1:")
    assert server_lines(build) == [f"server {listen};  # no ready endpoint: nginx's own 503 below"]
    assert "return 503;" in content
    assert backends_condition(build) == {
        "status": "False",
        "reason": "NoReadyEndpoints",
        "message": "Service demo/web has no ready endpoint: nginx answers 503 for this Upstream",
    }


def test_an_endpoint_slice_change_rebuilds_a_pair_whose_specs_did_not_change() -> None:
    """The pair's whole-build cache and the Upstream's build cache both follow the EndpointSlices."""
    resources = with_service(web_service(ipv4_slice(endpoint(BE1), endpoint(BE2))))
    for number, document in enumerate([resources.pair, *resources.upstreams, *resources.virtual_hosts]):
        document["metadata"].update(uid=f"0000-{number}", generation=1)
    cache = ParseCache()
    first = build_pair(resources.resources(), cache)
    assert build_pair(resources.resources(), cache) is first  # nothing changed: the same build

    resources.services = {WEB: web_service(ipv4_slice(endpoint(BE2)))}
    second = build_pair(resources.resources(), cache)

    assert isinstance(second, PairBuild)
    assert [s.address for s in second.upstreams_by_key[WEB_KEY].servers] == [BE2]


def test_upstream_servers_and_service_ref_are_mutually_exclusive() -> None:
    document = copy.deepcopy(sample(*SAMPLES).upstream("web"))
    both = copy.deepcopy(document)
    both["spec"]["servers"] = [{"address": BE1}]
    neither = copy.deepcopy(document)
    del neither["spec"]["serviceRef"]
    two_ports = copy.deepcopy(document)
    two_ports["spec"]["serviceRef"]["portName"] = "http"
    no_port = copy.deepcopy(document)
    del no_port["spec"]["serviceRef"]["port"]

    for invalid, field in [
        (both, "spec.serviceRef: exactly one of servers and serviceRef"),
        (neither, "spec.serviceRef: exactly one of servers and serviceRef"),
        (two_ports, "spec.serviceRef.port: exactly one of port and portName"),
        (no_port, "spec.serviceRef.port: exactly one of port and portName"),
    ]:
        with pytest.raises(SpecError) as refused:
            parse_upstream(invalid)
        assert any(problem.startswith(field) for problem in refused.value.problems), refused.value.problems


def test_the_service_an_upstream_or_endpoint_slice_belongs_to() -> None:
    assert followed_service("team-a", {"serviceRef": {"name": "web", "port": 80}}) == ObjectRef(
        "team-a", "web"
    )
    assert followed_service("team-a", {"servers": [{"address": BE1}]}) is None
    assert slice_service("team-a", {"kubernetes.io/service-name": "web"}) == ObjectRef("team-a", "web")
    assert slice_service("team-a", {}) is None
