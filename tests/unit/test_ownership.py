"""What a tenant may take on a shared pair: host names go to the oldest claimant, ports are the pair's
declared listeners, and the pair's own settings cannot reach root-owned places on its nodes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lbpair.render.model import Listen, ObjectKey
from tests.unit.samples import NAMESPACE, Sample, sample

OLD = "2026-01-01T10:00:00Z"
NEW = "2026-03-01T10:00:00Z"
CLAIM_RULE = "(a host name belongs to its oldest claimant)"


def claimant(resources: Sample, namespace: str, name: str, created: str | None) -> dict[str, Any]:
    """A copy of the seed's `www` VirtualHost (www.example.com) as another object, created at `created`."""
    document = copy.deepcopy(resources.vhost("www"))
    document["metadata"] = {"name": name, "namespace": namespace}
    if created is not None:
        document["metadata"]["creationTimestamp"] = created
    return document


def server_of(resources: Sample, server_name: str) -> str:
    (source,) = [
        f"{host.source.namespace}/{host.source.name}"
        for host in resources.build().state.virtual_hosts
        if server_name in host.server_names
    ]
    return source


@pytest.mark.parametrize(
    ("older", "newer", "newer_created"),
    [("zzz", "www", NEW), ("www", "aaa", NEW), ("zzz", "aaa", None)],
    ids=["older-sorts-last", "older-sorts-first", "newer-has-no-timestamp"],
)
def test_a_host_name_goes_to_the_oldest_claimant_whatever_the_names(
    older: str, newer: str, newer_created: str | None
) -> None:
    resources = sample("seed-tutorial.yaml")
    resources.virtual_hosts = [
        *(v for v in resources.virtual_hosts if v["metadata"]["name"] != "www"),
        claimant(resources, NAMESPACE, newer, newer_created),
        claimant(resources, NAMESPACE, older, OLD),
    ]

    result = resources.build()

    assert server_of(resources, "www.example.com") == f"{NAMESPACE}/{older}"
    assert [(p.object, p.field, p.message) for p in result.problems] == [
        (
            ObjectKey("VirtualHost", NAMESPACE, newer),
            "spec.serverNames[0]",
            f"www.example.com is already served by VirtualHost {NAMESPACE}/{older} {CLAIM_RULE}",
        )
    ]


def test_a_newer_object_in_another_namespace_cannot_take_a_name_and_is_not_told_whose_it_is() -> None:
    resources = sample("seed-tutorial.yaml")
    resources.pair["spec"]["allowedNamespaces"] = {"from": "All"}
    resources.vhost("www")["metadata"]["creationTimestamp"] = OLD
    intruder = claimant(resources, "aaa", "www", NEW)
    intruder["spec"]["serverNames"] = ["WWW.Example.com"]  # host names compare case-insensitively
    resources.virtual_hosts.append(intruder)

    result = resources.build()

    assert server_of(resources, "www.example.com") == f"{NAMESPACE}/www"
    (problem,) = result.problems
    assert (problem.object, problem.field) == (ObjectKey("VirtualHost", "aaa", "www"), "spec.serverNames[0]")
    assert problem.message == f"WWW.Example.com is already served by another VirtualHost {CLAIM_RULE}"
    assert NAMESPACE not in problem.message


@pytest.mark.parametrize(
    ("listen", "declared"),
    [
        ({"port": 8081}, "8081/HTTP"),
        ({"port": 22}, "22/HTTP"),
        ({"port": 443, "protocol": "HTTP"}, "443/HTTP"),
    ],
)
def test_a_listener_the_pair_does_not_declare_is_refused_naming_the_field(
    listen: dict[str, Any], declared: str
) -> None:
    resources = sample("seed-tutorial.yaml")
    resources.vhost("oa")["spec"]["listen"] = [{"port": 80}, listen]

    result = resources.build()

    assert [str(p) for p in result.problems] == [
        f"VirtualHost demo/oa: spec.listen[1]: {declared} is not a listener of pair seed"
        " (its listeners: 80/HTTP, 443/HTTPS)"
    ]
    assert ObjectKey("VirtualHost", NAMESPACE, "oa") not in result.state.included


def test_declared_listeners_are_usable_and_each_gets_a_default_server() -> None:
    resources = sample("seed-tutorial.yaml", "tls-virtualhost.yaml")
    resources.pair["spec"]["listeners"] = [
        {"port": 8080, "protocol": "HTTP"},
        {"port": 8443, "protocol": "HTTPS"},
        {"port": 9000, "protocol": "HTTP"},
    ]
    for virtual_host in resources.virtual_hosts:
        virtual_host["spec"]["listen"] = [{"port": 8080}]
    shop = resources.vhost("shop")
    shop["spec"]["listen"] = [{"port": 8080}, {"port": 8443, "protocol": "HTTPS"}]

    result = resources.build()

    assert result.problems == []
    assert result.state.nginx.default_listens == [Listen(8080), Listen(8443, ssl=True), Listen(9000)]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"nginx": {"user": "root"}}, "spec.nginx.user"),
        ({"nodeProfile": {"nginxPidPath": "/etc/passwd"}}, "spec.nodeProfile.nginxPidPath"),
        ({"nodeProfile": {"nginxManagedDir": "/etc/nginx"}}, "spec.nodeProfile.nginxManagedDir"),
        (
            {"nodeProfile": {"keepalivedConfigPath": "/etc/keepalived/lb/keepalived.conf"}},
            "spec.nodeProfile.checkScriptPath",
        ),
        ({"listeners": [{"port": 2222, "protocol": "HTTP"}]}, "spec.listeners"),
    ],
)
def test_a_pair_setting_that_reaches_beyond_its_place_on_the_nodes_rejects_the_pair(
    changes: dict[str, Any], field: str
) -> None:
    resources = sample("seed-tutorial.yaml")
    resources.pair["spec"]["nodes"][1]["sshPort"] = 2222
    resources.pair["spec"].update(changes)

    rejected = resources.rejected()

    assert rejected.reason == "InvalidSpec"
    assert f"{field}: " in rejected.message
