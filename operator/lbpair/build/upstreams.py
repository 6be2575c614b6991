"""Upstream specs → render-model upstreams, with each server's host resolved and checked against the
pair's backend boundaries."""

from __future__ import annotations

import re

from lbpair.build.backends import BackendRefused
from lbpair.build.problems import Problem
from lbpair.build.reads import Reads
from lbpair.model.pair import PairSpec
from lbpair.model.upstream import UpstreamSpec
from lbpair.render.model import Balancing, BalancingMethod, ObjectKey, Upstream, UpstreamServer

# Kubernetes names are DNS-1123 and `_` appears in neither names nor namespaces, so `<ns>_<name>` is
# unique; the check below is a second line of defence for everything that becomes a file name.
SAFE_STEM = re.compile(r"[a-z0-9][a-z0-9.-]{0,252}_[a-z0-9][a-z0-9.-]{0,252}")
METHODS: dict[str, BalancingMethod] = {
    "RoundRobin": "round_robin",
    "IPHash": "ip_hash",
    "LeastConn": "least_conn",
    "Hash": "hash",
}


def safe_stem(namespace: str, name: str) -> str:
    """`<namespace>_<name>`, the only form in which user data reaches a file name or an nginx name."""
    stem = f"{namespace}_{name}"
    if not SAFE_STEM.fullmatch(stem):
        raise ValueError(f"unsafe object name {stem!r}")
    return stem


def upstream(
    pair_spec: PairSpec, key: ObjectKey, spec: UpstreamSpec, reads: Reads
) -> Upstream | list[Problem]:
    """The render-model upstream: one nginx server per address a server's host stands for, with the
    server's weight and flags; or, when a host does not resolve or is not allowed, the problems."""
    servers: list[UpstreamServer] = []
    problems: list[Problem] = []
    for index, server in enumerate(spec.servers):
        try:
            addresses = reads.addresses(server.address)
        except BackendRefused as refused:
            problems.append(Problem(key, f"spec.servers[{index}].address", str(refused)))
            continue
        servers.extend(
            UpstreamServer(
                address=address,
                port=server.port,
                weight=server.weight,
                max_fails=server.max_fails,
                fail_timeout=server.fail_timeout,
                backup=server.backup,
                down=server.down,
                resolved_from=None if address == server.address else server.address,
            )
            for address in addresses
        )
    if problems:
        return problems
    stem = safe_stem(key.namespace, key.name)
    hash_key = spec.hash_key
    return Upstream(
        source=key,
        path=f"{pair_spec.node_profile.nginx_managed_dir}/upstream_{stem}.conf",
        name=stem,
        balancing=Balancing(
            method=METHODS[spec.method],
            hash_variable=hash_key.variable if hash_key else None,
            consistent=hash_key.consistent if hash_key else False,
        ),
        keepalive=spec.keepalive,
        servers=servers,
    )
