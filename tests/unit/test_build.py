"""One build per pair: each problem is reported on its object and the rest still builds; only the pair's
own problems reject it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lbpair.build import PairBuild, ParseCache, build_pair
from lbpair.model.common import ObjectRef
from lbpair.render.model import ObjectKey
from tests.unit.samples import (
    NAMESPACE,
    SEED_AUTH_PASS,
    Sample,
    held_secret,
    sample,
    secret_data,
    tls_secret,
)


def test_seed_sample_builds_without_problems() -> None:
    result = sample("seed-tutorial.yaml").build()

    assert result.problems == []
    assert [str(key) for key in result.state.included] == [
        "Upstream demo/lb-oa",
        "Upstream demo/lb-www",
        "VirtualHost demo/dev",
        "VirtualHost demo/oa",
        "VirtualHost demo/www",
    ]
    assert result.secrets_used == {ObjectRef(NAMESPACE, "lb-ssh"), ObjectRef(NAMESPACE, "seed-vrrp-auth")}
    assert result.ssh_private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert sorted(item.key for item in result.attached) == result.state.included


def test_missing_upstream_is_reported_on_the_virtual_host_and_the_rest_renders() -> None:
    resources = sample("seed-tutorial.yaml")
    resources.upstreams.remove(resources.upstream("lb-oa"))

    result = resources.build()

    assert [str(p) for p in result.problems] == [
        "VirtualHost demo/oa: spec.locations[0].upstreamRef.name: Upstream lb-oa not found in namespace demo "
        "(or not attached to pair seed)"
    ]
    assert ObjectKey("VirtualHost", NAMESPACE, "oa") not in result.state.included
    assert ObjectKey("VirtualHost", NAMESPACE, "www") in result.state.included


def test_virtual_host_of_an_invalid_upstream_is_told_why_it_is_not_usable() -> None:
    resources = sample("seed-tutorial.yaml")
    resources.upstream("lb-oa")["spec"]["servers"][0]["port"] = 0

    result = resources.build()

    assert [str(p) for p in result.problems] == [
        "Upstream demo/lb-oa: spec: spec.servers[0].port: Input should be greater than or equal to 1",
        "VirtualHost demo/oa: spec.locations[0].upstreamRef.name: Upstream lb-oa is not usable: "
        "spec.servers[0].port: Input should be greater than or equal to 1",
    ]


def test_undefined_cache_zone_and_log_format_are_reported() -> None:
    resources = sample("seed-tutorial.yaml")
    resources.pair["spec"]["nginx"].update(cacheZones=[], logFormats=[])

    result = resources.build()

    fields = {(p.object.name, p.field) for p in result.problems}
    assert ("www", "spec.accessLog.format") in fields
    assert ("www", "spec.locations[0].cache.zone") in fields
    assert result.state.virtual_hosts == []
    assert len(result.state.upstreams) == 2


def test_other_namespaces_attach_only_where_the_pair_allows() -> None:
    resources = sample("active-active.yaml")
    foreign = resources.upstream("api")
    foreign["metadata"]["namespace"] = "team-a"
    foreign["spec"]["pairRef"]["namespace"] = NAMESPACE
    resources.upstreams, resources.virtual_hosts = [foreign], []

    denied = resources.build()
    resources.namespace_labels = {"team-a": {"lb.lbpair.dev/edge": "allowed"}}
    allowed = resources.build()

    assert [str(p) for p in denied.problems] == [
        "Upstream team-a/api: spec.pairRef: LoadBalancerPair demo/edge does not allow namespace team-a"
    ]
    assert [u.name for u in allowed.state.upstreams] == ["team-a_api"]


def test_missing_or_malformed_tls_secret_excludes_only_that_host() -> None:
    resources = sample("seed-tutorial.yaml", "tls-virtualhost.yaml")
    del resources.secrets[ObjectRef(NAMESPACE, "shop-tls")]
    missing = resources.build()
    resources.secrets[ObjectRef(NAMESPACE, "shop-tls")] = tls_secret("not pem", "not pem")
    malformed = resources.build()

    assert [(p.object.name, p.field) for p in missing.problems] == [("shop", "spec.tls.secretName")]
    assert ObjectRef(NAMESPACE, "shop-tls") in missing.secrets_used
    assert {p.message for p in malformed.problems} == {
        "Secret shop-tls: tls.crt must hold PEM CERTIFICATE blocks only",
        "Secret shop-tls: tls.key must hold one unencrypted PEM private key",
    }
    assert len(malformed.state.virtual_hosts) == 3


def test_invalid_pair_spec_is_rejected_naming_the_field() -> None:
    resources = sample("seed-tutorial.yaml")
    resources.pair["spec"]["nodes"][0]["priority"] = 300

    rejected = resources.rejected()

    assert rejected.reason == "InvalidSpec"
    assert "spec.nodes[0].priority" in rejected.message


@pytest.mark.parametrize("password", [None, SEED_AUTH_PASS + "; x"])
def test_missing_or_unsafe_vrrp_password_rejects_the_pair(password: str | None) -> None:
    resources = sample("seed-tutorial.yaml")
    reference = ObjectRef(NAMESPACE, "seed-vrrp-auth")
    if password is None:
        del resources.secrets[reference]
    else:
        resources.secrets[reference] = held_secret(secret_data(password=password))

    rejected = resources.rejected()

    assert rejected.reason == "SecretMissing"
    assert "spec.vrrp.authentication.secretRef" in rejected.message
    assert reference in rejected.secrets_used  # its creation must wake the pair


def test_missing_ssh_key_rejects_the_pair_and_is_watched() -> None:
    resources = sample("seed-tutorial.yaml")
    del resources.secrets[ObjectRef(NAMESPACE, "lb-ssh")]

    rejected = resources.rejected()

    assert rejected.reason == "SecretMissing"
    assert rejected.message == (
        "LoadBalancerPair demo/seed: spec.ssh.privateKeySecretRef: Secret lb-ssh not found in namespace demo"
        " or not labelled lb.lbpair.dev/usable=true"
    )
    assert rejected.secrets_used == {ObjectRef(NAMESPACE, "lb-ssh")}


def test_active_active_gives_each_node_one_instance_as_master() -> None:
    state = sample("active-active.yaml").build().state

    roles = {
        (node.name, instance.name): (instance.priority, [a.cidr for a in instance.virtual_addresses])
        for node in state.nodes
        for instance in node.keepalived.instances
    }

    assert roles == {
        ("lb1", "lbpair_1"): (150, ["198.51.100.10/24"]),
        ("lb1", "lbpair_2"): (100, ["198.51.100.20/24"]),
        ("lb2", "lbpair_1"): (100, ["198.51.100.10/24"]),
        ("lb2", "lbpair_2"): (150, ["198.51.100.20/24"]),
    }
    # preempt_delay works only from state BACKUP.
    assert not any(i.starts_as_master for n in state.nodes for i in n.keepalived.instances)
    assert [i.virtual_router_id for i in state.nodes[0].keepalived.instances] == [61, 62]


def from_api_server(resources: Sample) -> Sample:
    """Gives every object the uid and generation an API server would have given it."""
    for number, body in enumerate([resources.pair, *resources.upstreams, *resources.virtual_hosts]):
        body["metadata"].update(uid=f"00000000-0000-0000-0000-{number:012}", generation=1)
    return resources


def test_parsed_objects_are_reused_while_their_generation_stays() -> None:
    resources = from_api_server(sample("seed-tutorial.yaml"))
    www = resources.upstream("lb-www")
    cache = ParseCache()
    first = build_pair(resources.resources(), cache)
    www["spec"]["servers"][0]["weight"] = 9  # a change the API server would have given a new generation

    same_generation = build_pair(resources.resources(), cache)
    www["metadata"]["resourceVersion"] = "8"  # e.g. the operator's own status write
    status_written = build_pair(resources.resources(), cache)
    www["metadata"]["generation"] = 2
    new_generation = build_pair(resources.resources(), cache)

    def weight(result: object) -> int:
        assert isinstance(result, PairBuild)
        (upstream,) = [u for u in result.state.upstreams if u.name == "demo_lb-www"]
        return upstream.servers[0].weight

    assert [weight(r) for r in (first, same_generation, status_written, new_generation)] == [1, 1, 1, 9]


def remove_www_upstream(resources: Sample) -> None:
    resources.upstreams.remove(resources.upstream("lb-www"))


def remove_tls_secret(resources: Sample) -> None:
    del resources.secrets[ObjectRef(NAMESPACE, "shop-tls")]


def change_dns_answer(resources: Sample) -> None:
    resources.dns["svn.example.com"] = ["198.18.0.32", "198.18.0.33"]


def change_upstream_dns_answer(resources: Sample) -> None:
    resources.dns["www.backend.example.com"] = ["198.18.0.13"]


def change_pair_listeners(resources: Sample) -> None:
    resources.pair["spec"]["listeners"] = [{"port": 8080, "protocol": "HTTP"}]
    resources.pair["metadata"]["generation"] = 2


@pytest.mark.parametrize(
    "change",
    [
        remove_www_upstream,
        remove_tls_secret,
        change_dns_answer,
        change_upstream_dns_answer,
        change_pair_listeners,
    ],
)
def test_a_cached_virtual_host_build_follows_what_it_reads(change: Callable[[Sample], None]) -> None:
    """Only the objects' own specs stay the same: what they refer to changes. The pass that reuses the
    earlier builds must build what a build from scratch does."""
    resources = from_api_server(sample("seed-tutorial.yaml", "tls-virtualhost.yaml"))
    resources.vhost("dev")["spec"]["locations"][0]["url"] = "https://svn.example.com:8443/svn/"
    resources.upstream("lb-www")["spec"]["servers"][0]["address"] = "www.backend.example.com"
    resources.dns = {"svn.example.com": ["198.18.0.31"], "www.backend.example.com": ["198.18.0.11"]}
    cache = ParseCache()
    before = build_pair(resources.resources(), cache)
    change(resources)

    cached, fresh = build_pair(resources.resources(), cache), build_pair(resources.resources())

    assert isinstance(before, PairBuild)
    assert isinstance(cached, PairBuild)
    assert isinstance(fresh, PairBuild)
    assert (cached.state, cached.problems) != (before.state, before.problems)  # the change matters
    assert (cached.state, cached.problems, cached.secrets_used) == (
        fresh.state,
        fresh.problems,
        fresh.secrets_used,
    )


def test_an_invalid_object_stays_invalid_from_the_cache_until_it_changes() -> None:
    resources = sample("seed-tutorial.yaml")
    oa = from_api_server(resources).upstream("lb-oa")
    oa["spec"]["servers"][0]["port"] = 0
    cache = ParseCache()

    results = [build_pair(resources.resources(), cache) for _ in range(2)]

    for result in results:
        assert isinstance(result, PairBuild)
        assert next(str(p.object) for p in result.problems) == "Upstream demo/lb-oa"
