"""Semantic checks across objects: each problem is reported on its object and the rest still renders."""

from __future__ import annotations

import pytest

from lbpair.model.desired import (
    ObjectKey,
    PairConfigError,
    SecretValues,
    TlsMaterial,
    build_desired_state,
    format_advert_interval,
)
from lbpair.model.virtualhost import VirtualHost
from tests.unit.samples import NAMESPACE, SEED_AUTH_PASS, SampleObjects, sample_objects, sample_secrets


def vhost(objects: SampleObjects, name: str) -> VirtualHost:
    (found,) = [v for v in objects.virtual_hosts if v.metadata.name == name]
    return found


def replace_spec(virtual_host: VirtualHost, **changes: object) -> VirtualHost:
    spec = virtual_host.spec.model_copy(update=changes)
    return virtual_host.model_copy(update={"spec": spec})


def test_seed_sample_builds_without_problems() -> None:
    result = sample_objects("seed-tutorial.yaml").build(sample_secrets())

    assert result.problems == []
    assert [str(key) for key in result.state.included] == [
        "Upstream demo/lb-oa",
        "Upstream demo/lb-www",
        "VirtualHost demo/dev",
        "VirtualHost demo/oa",
        "VirtualHost demo/www",
    ]


def test_missing_upstream_is_reported_on_the_virtual_host_and_the_rest_renders() -> None:
    objects = sample_objects("seed-tutorial.yaml")
    upstreams = [u for u in objects.upstreams if u.metadata.name != "lb-oa"]

    result = build_desired_state(objects.pair, upstreams, objects.virtual_hosts, sample_secrets())

    assert [str(p) for p in result.problems] == [
        "VirtualHost demo/oa: spec.locations[0].upstreamRef.name: Upstream lb-oa not found in namespace demo "
        "(or not attached to pair seed)"
    ]
    assert ObjectKey("VirtualHost", NAMESPACE, "oa") not in result.state.included
    assert ObjectKey("VirtualHost", NAMESPACE, "www") in result.state.included


def test_duplicate_server_name_goes_to_the_first_virtual_host_by_name() -> None:
    objects = sample_objects("seed-tutorial.yaml")
    copy = vhost(objects, "www").model_copy(
        update={"metadata": vhost(objects, "www").metadata.model_copy(update={"name": "www2"})}
    )

    result = build_desired_state(
        objects.pair, objects.upstreams, [*objects.virtual_hosts, copy], sample_secrets()
    )

    assert [str(p) for p in result.problems] == [
        "VirtualHost demo/www2: spec.serverNames[0]: www.example.com is already served by "
        "VirtualHost demo/www"
    ]


def test_undefined_cache_zone_and_log_format_are_reported() -> None:
    objects = sample_objects("seed-tutorial.yaml")
    pair_spec = objects.pair.spec.model_copy(
        update={"nginx": objects.pair.spec.nginx.model_copy(update={"cache_zones": [], "log_formats": []})}
    )
    pair = objects.pair.model_copy(update={"spec": pair_spec})

    result = build_desired_state(pair, objects.upstreams, objects.virtual_hosts, sample_secrets())

    fields = {(p.object.name, p.field) for p in result.problems}
    assert ("www", "spec.accessLog.format") in fields
    assert ("www", "spec.locations[0].cache.zone") in fields
    assert result.state.virtual_hosts == []
    assert len(result.state.upstreams) == 2


def test_other_namespaces_attach_only_where_the_pair_allows() -> None:
    objects = sample_objects("active-active.yaml")
    (upstream,) = [u for u in objects.upstreams if u.metadata.name == "api"]
    foreign_meta = upstream.metadata.model_copy(update={"namespace": "team-a"})
    foreign_ref = upstream.spec.pair_ref.model_copy(update={"namespace": NAMESPACE})
    foreign = upstream.model_copy(
        update={"metadata": foreign_meta, "spec": upstream.spec.model_copy(update={"pair_ref": foreign_ref})}
    )

    denied = build_desired_state(objects.pair, [foreign], [], SecretValues())
    allowed = build_desired_state(
        objects.pair, [foreign], [], SecretValues(), {"team-a": {"lb.lbpair.dev/edge": "allowed"}}
    )

    assert [str(p) for p in denied.problems] == [
        "Upstream team-a/api: spec.pairRef: LoadBalancerPair demo/edge does not allow namespace team-a"
    ]
    assert [u.name for u in allowed.state.upstreams] == ["team-a_api"]


def test_objects_of_other_pairs_are_ignored() -> None:
    seed = sample_objects("seed-tutorial.yaml")
    edge = sample_objects("active-active.yaml")

    result = build_desired_state(edge.pair, seed.upstreams, seed.virtual_hosts, SecretValues())

    assert result.problems == []
    assert result.state.included == []


def test_missing_or_malformed_tls_secret_excludes_only_that_host() -> None:
    objects = sample_objects("seed-tutorial.yaml", "tls-virtualhost.yaml")
    bad = SecretValues(
        vrrp_auth_pass=SEED_AUTH_PASS, tls={(NAMESPACE, "shop-tls"): TlsMaterial("not pem", "not pem")}
    )

    missing = objects.build(SecretValues(vrrp_auth_pass=SEED_AUTH_PASS))
    malformed = objects.build(bad)

    assert [(p.object.name, p.field) for p in missing.problems] == [("shop", "spec.tls.secretName")]
    assert {p.message for p in malformed.problems} == {
        "Secret shop-tls: tls.crt is not PEM",
        "Secret shop-tls: tls.key is not PEM",
    }
    assert len(malformed.state.virtual_hosts) == 3


def test_port_used_as_http_and_https_is_reported() -> None:
    objects = sample_objects("seed-tutorial.yaml", "tls-virtualhost.yaml")
    shop = vhost(objects, "shop")
    assert shop.spec.tls is not None
    listeners = [listener.model_copy(update={"port": 80}) for listener in shop.spec.listen]
    clash = replace_spec(
        shop, listen=listeners[1:], tls=shop.spec.tls.model_copy(update={"redirect_http": False})
    )
    hosts = [v for v in objects.virtual_hosts if v.metadata.name != "shop"] + [clash]

    result = build_desired_state(objects.pair, objects.upstreams, hosts, sample_secrets())

    assert [str(p) for p in result.problems] == [
        "VirtualHost demo/shop: spec.listen[0]: port 80 is HTTP for VirtualHost demo/dev"
    ]


def test_missing_vrrp_password_stops_the_pair() -> None:
    objects = sample_objects("seed-tutorial.yaml")

    with pytest.raises(PairConfigError, match=r"spec\.vrrp\.authentication\.secretRef"):
        objects.build(SecretValues(vrrp_auth_pass=SEED_AUTH_PASS + "; x"))


@pytest.mark.parametrize(("milliseconds", "text"), [(1000, "1"), (100, "0.1"), (1250, "1.25"), (10, "0.01")])
def test_advert_interval_is_written_in_seconds(milliseconds: int, text: str) -> None:
    assert format_advert_interval(milliseconds) == text


def test_active_active_gives_each_node_one_instance_as_master() -> None:
    state = sample_objects("active-active.yaml").build(SecretValues()).state

    roles = {
        (node.name, instance.name): (instance.priority, instance.virtual_addresses)
        for node in state.nodes
        for instance in node.keepalived.instances
    }

    assert roles == {
        ("lb1", "lbpair_1"): (150, ["198.51.100.10/24 dev eth0"]),
        ("lb1", "lbpair_2"): (100, ["198.51.100.20/24 dev eth0"]),
        ("lb2", "lbpair_1"): (100, ["198.51.100.10/24 dev eth0"]),
        ("lb2", "lbpair_2"): (150, ["198.51.100.20/24 dev eth0"]),
    }
    # preempt_delay works only from state BACKUP.
    assert {i.state for n in state.nodes for i in n.keepalived.instances} == {"BACKUP"}
    assert [i.virtual_router_id for i in state.nodes[0].keepalived.instances] == [61, 62]
