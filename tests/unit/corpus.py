"""Injection payloads and invalid variants, shared by the model tests and the API-server tests.

The payloads follow the ingress-nginx CVEs (see anchors.md): directive injection through `;`, braces,
quotes, comments, variables, newlines (CVE-2021-25748 bypassed a sanitiser with one), lua directives,
`include`/`load_module` (CVE-2025-1974), path traversal in paths and file names (CVE-2025-24513).
Every payload contains something no allow-list admits, so each must be rejected at every string field,
alone and appended to a valid value.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PAYLOADS = (
    "a\nb",
    "x\r\ninclude /etc/passwd;",
    "tab\there",
    "nul\x00byte",
    "esc\x1b[0m",
    "del\x7f",
    "line\u2028separator",
    "next\u0085line",
    "x; include /etc/nginx/*.conf",
    "x;",
    "}",
    "{ return 200 pwned; }",
    '"; load_module /tmp/evil.so; #',
    "' ; deny all; '",
    "# comment",
    "$host",
    "${request_uri}",
    "back\\slash",
    "include /etc/shadow",
    "load_module /tmp/x.so",
    "content_by_lua_block { os.execute('id') }",
    "access_by_lua 'ngx.exit(200)'",
    "../../etc/passwd",
    "/../secret",
    "\uff46\uff55\uff4c\uff4c",  # fullwidth letters that look like ASCII
    "-" * 5000,
)
NOT_FIELDS = {("apiVersion",), ("kind",)}

Path = tuple[str | int, ...]


def path_text(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def parse_path(text: str) -> Path:
    return tuple(int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", text))


def string_fields(document: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every string leaf of a document (map keys excluded), with its path."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield from string_fields(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from string_fields(value, (*path, index))
    elif isinstance(document, str) and path not in NOT_FIELDS:
        yield path, document


def with_value(document: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of `document` with `value` at `path` (an index one past a list's end appends)."""
    changed = copy.deepcopy(document)
    parent: Any = changed
    for part in path[:-1]:
        parent = parent.setdefault(part, {}) if isinstance(part, str) else parent[part]
    last = path[-1]
    if isinstance(parent, list) and last == len(parent):
        parent.append(value)
    else:
        parent[last] = value
    return changed


@dataclass(frozen=True)
class Injection:
    field: str
    payload: str
    document: dict[str, Any]


def injections(document: dict[str, Any], *, appended_only: bool = False) -> Iterator[Injection]:
    """Each payload at each string field: appended to the valid value, and (unless `appended_only`) alone."""
    for path, valid in string_fields(document):
        for payload in PAYLOADS:
            values = [valid + payload] if appended_only else [payload, valid + payload]
            for value in values:
                yield Injection(path_text(path), payload, with_value(document, path, value))


@dataclass(frozen=True)
class InvalidVariant:
    """A sample object with `changes` applied must be rejected with a message naming `field`."""

    name: str
    sample: str
    kind: str
    object_name: str
    changes: dict[str, Any]
    field: str
    removals: tuple[str, ...] = ()
    model_only: bool = False
    """The API server cannot check it (no CEL for it): the model refuses it, so the pair is Rejected."""

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        for path, value in self.changes.items():
            document = with_value(document, parse_path(path), value)
        for path in self.removals:
            *parent_path, last = parse_path(path)
            parent: Any = document
            for part in parent_path:
                parent = parent[part]
            del parent[last]
        return document


SEED = "seed-tutorial.yaml"
SEED_LB1_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILowQt152KPplgGeU/c9oFKJCnRyFsOLuIWUMnDU0Ltz"
INVALID_VARIANTS = (
    InvalidVariant(
        "ssh address with a semicolon",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.nodes[0].address": "203.0.113.11;"},
        "spec.nodes[0].address",
    ),
    InvalidVariant(
        "three nodes", SEED, "LoadBalancerPair", "seed", {"spec.nodes[2]": {"name": "lb3"}}, "spec.nodes"
    ),
    InvalidVariant(
        "equal priorities", SEED, "LoadBalancerPair", "seed", {"spec.nodes[1].priority": 101}, "spec.nodes"
    ),
    InvalidVariant(
        "priority out of range",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.nodes[0].priority": 300},
        "spec.nodes[0].priority",
    ),
    InvalidVariant(
        "VIP outside the node network",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.vips[0].address": "192.0.2.10/24"},
        "spec.vips",
    ),
    InvalidVariant(
        "host key cut short by one character",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.nodes[0].hostKey": SEED_LB1_KEY[:-1]},
        "spec.nodes[0].hostKey",
        model_only=True,
    ),
    InvalidVariant(
        "host key of another type than it says",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.nodes[0].hostKey": SEED_LB1_KEY.replace("ssh-ed25519", "ssh-rsa")},
        "spec.nodes[0].hostKey",
        model_only=True,
    ),
    InvalidVariant(
        "VIP equal to a node's own address",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.vips[0].address": "198.51.100.12/24"},
        "spec.vips",
    ),
    InvalidVariant(
        "PASS authentication under VRRPv3",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.vrrp.version": 3},
        "spec.vrrp.authentication",
    ),
    InvalidVariant(
        "sub-second advert under VRRPv2",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.vrrp.advertIntervalMilliseconds": 1500},
        "spec.vrrp.advertIntervalMilliseconds",
    ),
    InvalidVariant(
        "nopreempt with a negative weight (keepalived #2599)",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.vrrp.preempt": {"mode": "NoPreempt"}},
        "spec.healthCheck.weight",
    ),
    InvalidVariant(
        "weight smaller than the priority gap",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.healthCheck.weight": -1},
        "spec.healthCheck.weight",
    ),
    InvalidVariant(
        "ActiveActive without preferred nodes",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.mode": "ActiveActive"},
        "spec.vips",
    ),
    InvalidVariant(
        "unknown (snippet) field",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.nginx.snippet": "more_set_headers x"},
        "spec.nginx.snippet",
    ),
    InvalidVariant(
        "log literal with letters",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.nginx.logFormats[0].items[1].literal": "include"},
        "spec.nginx.logFormats[0].items[1].literal",
    ),
    InvalidVariant(
        "selector without from: Selector",
        SEED,
        "LoadBalancerPair",
        "seed",
        {"spec.allowedNamespaces": {"from": "All", "selector": {"matchLabels": {"a": "b"}}}},
        "spec.allowedNamespaces.selector",
    ),
    InvalidVariant(
        "backup server with ip_hash",
        SEED,
        "Upstream",
        "lb-www",
        {"spec.servers[0].backup": True},
        "spec.servers",
    ),
    InvalidVariant(
        "Hash without hashKey", SEED, "Upstream", "lb-www", {"spec.method": "Hash"}, "spec.hashKey"
    ),
    InvalidVariant(
        "duplicate server",
        SEED,
        "Upstream",
        "lb-www",
        {"spec.servers[1].address": "198.18.0.11"},
        "spec.servers",
    ),
    InvalidVariant(
        "location with upstreamRef and url",
        SEED,
        "VirtualHost",
        "www",
        {"spec.locations[0].url": "http://198.18.0.11/"},
        "spec.locations[0]",
    ),
    InvalidVariant(
        "path traversal in a location",
        SEED,
        "VirtualHost",
        "dev",
        {"spec.locations[0].path": "/svn/../etc"},
        "spec.locations[0].path",
    ),
    InvalidVariant(
        "proxy URL with a variable",
        SEED,
        "VirtualHost",
        "dev",
        {"spec.locations[0].url": "http://$host/"},
        "spec.locations[0].url",
    ),
    InvalidVariant(
        "HTTPS listener without tls",
        SEED,
        "VirtualHost",
        "www",
        {"spec.listen": [{"port": 443, "protocol": "HTTPS"}]},
        "spec.tls",
    ),
    InvalidVariant(
        "header value with a variable",
        SEED,
        "VirtualHost",
        "www",
        {"spec.proxy.headers[0]": {"name": "Host", "value": "$host"}},
        "spec.proxy.headers[0].value",
    ),
    InvalidVariant(
        "duplicate server names",
        SEED,
        "VirtualHost",
        "www",
        {"spec.serverNames": ["www.example.com", "www.example.com"]},
        "spec.serverNames",
    ),
    InvalidVariant(
        "no locations", SEED, "VirtualHost", "www", {}, "spec.locations", removals=("spec.locations",)
    ),
)
