"""A node's configuration is untrusted input: what the model's allow-lists refuse never reaches a manifest
(the field is left out and listed, naming it), includes are resolved against the node's files only, and
what is not nginx syntax is refused with the file and line."""

from __future__ import annotations

from typing import Any

import pytest

from lbpair.adopt.nginx_conf import NginxConfError, matching_files, parse_tree
from lbpair.model import parse_upstream, parse_virtual_host
from tests.unit.adopt_inputs import NGINX_MAIN, import_seed, seed_nginx, seed_node

HOSTILE_SERVER = """
upstream pool {
    server 198.18.0.11:80 fail_timeout=1y max_conns=5;
    server 198.18.0.12:80;
}
server {
    listen 80;
    server_name good.example.com "bad;name" ~^regex$;
    location / {
        proxy_pass http://pool;
        proxy_set_header X-Body $request_body;
        proxy_set_header X-Fixed "a b";
        proxy_read_timeout 1y;
    }
    location ~ \\.php$ {
        proxy_pass http://198.18.0.11;
    }
    location /static {
        root /var/www;
    }
}
"""


def import_with(extra_file: str) -> tuple[list[dict[str, Any]], list[str]]:
    nginx = {**seed_nginx(), "/etc/nginx/vhosts/hostile.conf": extra_file}
    imported = import_seed(seed_node(1, nginx), seed_node(2, nginx))
    return imported.documents, [str(note) for note in imported.notes]


def named(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(doc for doc in documents if doc["kind"] == kind and doc["metadata"]["name"] == name)


def test_refused_values_are_left_out_and_named_and_the_rest_applies() -> None:
    documents, notes = import_with(HOSTILE_SERVER)

    upstream = parse_upstream(named(documents, "Upstream", "pool")).spec
    assert [(s.address, s.fail_timeout) for s in upstream.servers or []] == [
        ("198.18.0.11", "10s"),
        ("198.18.0.12", "10s"),
    ]
    host = parse_virtual_host(named(documents, "VirtualHost", "good.example.com")).spec
    assert host.server_names == ["good.example.com"]
    assert [location.path for location in host.locations] == ["/"]
    assert host.proxy.headers == []
    assert host.proxy.read_timeout is None
    assert (
        "Upstream pool: spec.servers[0].failTimeout: String should match pattern "
        "'^[0-9]{1,9}(ms|s|m|h|d)?$'; left out" in notes
    )
    assert any(
        n.startswith("VirtualHost good.example.com: spec.serverNames[1]: String should match") for n in notes
    )
    assert any(
        "hostile.conf:3: server 198.18.0.11:80 fail_timeout=1y max_conns=5: max_conns=5: no field" in n
        for n in notes
    )
    assert any(
        "hostile.conf:11: proxy_set_header X-Body $request_body: only one variable" in n for n in notes
    )
    assert any(
        "hostile.conf:15: location ~ \\.php$: regular-expression and named locations" in n for n in notes
    )
    assert any("hostile.conf:18: location /static: a location that proxies nowhere" in n for n in notes)


def test_a_host_with_nothing_valid_left_is_not_printed_and_says_so() -> None:
    documents, notes = import_with(
        'server { server_name "only;bad"; location / { proxy_pass http://198.18.0.11; } }'
    )

    assert [doc["metadata"]["name"] for doc in documents if doc["kind"] == "VirtualHost"] == [
        "dev.example.com", "www.example.com", "oa.example.com"
    ]  # fmt: skip
    assert "VirtualHost only-bad: the whole object: the model refuses it; not printed" in notes


def test_an_include_of_a_file_the_node_did_not_give_reads_nothing_here() -> None:
    nginx = {NGINX_MAIN: "events {}\nhttp { include /etc/passwd; include /etc/nginx/conf.d/*.conf; }\n",
             "/etc/nginx/conf.d/a.conf": "server_tokens off;\n"}  # fmt: skip

    tree = parse_tree(NGINX_MAIN, nginx)

    http = tree[1]
    assert [statement.directive for statement in http.block or ()] == ["server_tokens"]


def test_include_patterns_match_like_glob_without_crossing_a_slash() -> None:
    files = ["/etc/nginx/conf.d/a.conf", "/etc/nginx/conf.d/sub/b.conf", "/etc/nginx/conf.d/c.txt"]

    assert matching_files("/etc/nginx/conf.d/*.conf", files) == ["/etc/nginx/conf.d/a.conf"]


def test_an_include_loop_is_refused() -> None:
    nginx = {NGINX_MAIN: "include /etc/nginx/loop.conf;\n", "/etc/nginx/loop.conf": "include loop.conf;\n"}

    with pytest.raises(NginxConfError, match="includes nested deeper than 8"):
        parse_tree(NGINX_MAIN, nginx)


def test_a_file_that_is_not_nginx_syntax_is_refused_with_its_path_and_line() -> None:
    nginx = {NGINX_MAIN: "events {}\nhttp {\n  server {\n}\n"}

    with pytest.raises(NginxConfError, match=r"^/etc/nginx/nginx.conf:4: unexpected end of file"):
        parse_tree(NGINX_MAIN, nginx)
