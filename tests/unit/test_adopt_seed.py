"""The seed tutorial's own files, as installed by hand on two nodes, import as the seed sample the project
wrote by hand (config/samples/seed-tutorial.yaml): same pair settings, Upstreams and VirtualHosts, as the
model reads them. What differs is by design and listed in the notes (cache zone name, object names)."""

from __future__ import annotations

from typing import Any

import yaml

from lbpair.model import parse_pair, parse_upstream, parse_virtual_host
from tests.unit.adopt_inputs import import_seed, seed_node
from tests.unit.samples import SAMPLES


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


def sample() -> list[dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all((SAMPLES / "seed-tutorial.yaml").read_text()) if doc]
    for document in documents:
        document["metadata"]["namespace"] = "demo"
    return documents


def test_the_pair_matches_the_seed_sample_but_for_the_moved_cache_zone() -> None:
    imported = import_seed()

    pair = parse_pair(by_kind(imported.documents, "LoadBalancerPair")[0]).spec
    expected = parse_pair(by_kind(sample(), "LoadBalancerPair")[0]).spec
    zone = pair.nginx.cache_zones[0]
    assert zone.name == "mycache_adopted"
    unmoved = pair.nginx.model_copy(update={"cache_zones": [zone.model_copy(update={"name": "mycache"})]})
    # The sample declares the default listeners (80 and 443); the seed listens on 80 only.
    assert pair.model_copy(update={"nginx": unmoved}) == expected.model_copy(
        update={"listeners": pair.listeners}
    )
    assert [(listener.port, listener.protocol) for listener in pair.listeners] == [(80, "HTTP")]


def test_the_vrrp_password_goes_to_the_secret_the_pair_names() -> None:
    imported = import_seed()

    [secret] = by_kind(imported.documents, "Secret")
    pair = by_kind(imported.documents, "LoadBalancerPair")[0]
    assert secret["metadata"] == {
        "name": "seed-vrrp-auth",
        "labels": {"lb.lbpair.dev/usable": "true"},
        "namespace": "demo",
    }
    assert secret["stringData"] == {"password": "1111"}
    assert pair["spec"]["vrrp"]["authentication"] == {
        "secretRef": {"name": "seed-vrrp-auth", "key": "password"}
    }


def test_upstreams_match_the_seed_sample() -> None:
    imported = {
        doc["metadata"]["name"]: parse_upstream(doc).spec
        for doc in by_kind(import_seed().documents, "Upstream")
    }
    expected = {doc["metadata"]["name"]: parse_upstream(doc).spec for doc in by_kind(sample(), "Upstream")}

    assert imported == expected


def test_virtual_hosts_match_the_seed_sample_location_by_location() -> None:
    imported = {
        doc["spec"]["serverNames"][0]: parse_virtual_host(doc).spec
        for doc in by_kind(import_seed().documents, "VirtualHost")
    }
    expected = {
        doc["spec"]["serverNames"][0]: parse_virtual_host(doc).spec
        for doc in by_kind(sample(), "VirtualHost")
    }

    assert sorted(imported) == sorted(expected) == ["dev.example.com", "oa.example.com", "www.example.com"]
    for name, spec in imported.items():
        want = expected[name]
        assert spec.proxy == want.proxy
        assert spec.access_log == want.access_log
        assert [(loc.path, loc.upstream_ref, loc.url, loc.proxy) for loc in spec.locations] == [
            (loc.path, loc.upstream_ref, loc.url, loc.proxy) for loc in want.locations
        ]
        assert [loc.cache and (loc.cache.zone, loc.cache.valid) for loc in spec.locations] == [
            loc.cache and ("mycache_adopted", loc.cache.valid) for loc in want.locations
        ]


def test_every_directive_left_out_is_listed_with_its_file_and_line() -> None:
    notes = [str(note) for note in import_seed().notes]

    assert (
        "/etc/nginx/nginx.conf:45: fastcgi_buffers 8 256k: no field of LoadBalancerPair.spec.nginx "
        "expresses it; not imported" in notes
    )
    assert any(
        note.startswith("203.0.113.12:/etc/keepalived/keepalived.conf:13: smtp_server 127.0.0.1")
        for note in notes
    )
    assert any(
        "LB.conf:16: server: this first server block also answered Host names" in note for note in notes
    )
    assert len([note for note in notes if "fastcgi_" in note]) == 8


def test_one_node_prints_its_upstreams_and_virtual_hosts_and_says_the_pair_needs_both() -> None:
    imported = import_seed(seed_node(1))

    assert sorted(doc["kind"] for doc in imported.documents) == ["Upstream", "Upstream"] + ["VirtualHost"] * 3
    assert "import: LoadBalancerPair: not printed: it needs both nodes (--node twice)" in map(
        str, imported.notes
    )


def test_the_yaml_lists_the_notes_in_a_comment_block_before_the_documents() -> None:
    text = import_seed().to_yaml()

    comments, documents = text.split("\n---\n", 1)
    assert all(line.startswith("#") for line in comments.splitlines())
    assert "fastcgi_buffers 8 256k" in comments
    assert [doc["kind"] for doc in yaml.safe_load_all(documents)][:2] == ["Secret", "LoadBalancerPair"]
