"""Upstream specs → render-model upstreams, with each server's host resolved (or taken from the ready
endpoints of a Service) and checked against the pair's backend boundaries."""

from __future__ import annotations

import re

from lbpair.build.backends import BackendRefused
from lbpair.build.problems import Problem
from lbpair.build.reads import Reads
from lbpair.build.services import ServiceUnusable, ready_endpoints, unavailable_listen
from lbpair.model.pair import PairSpec
from lbpair.model.upstream import ServiceRef, UpstreamSpec
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
    server's weight and flags, or per ready endpoint of the Service it follows; or, when a host does not
    resolve, an address is not allowed or the Service cannot be used, the problems."""
    if spec.service_ref is None:
        servers, problems = _typed_servers(spec, key, reads)
    else:
        servers, problems = _service_servers(spec.service_ref, key, reads)
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
        service=f"{key.namespace}/{spec.service_ref.name}" if spec.service_ref else None,
        health_path=spec.health_path,
        unavailable_listen=(
            None if servers else unavailable_listen(stem, pair_spec.node_profile.nginx_status_port)
        ),
    )


def _typed_servers(
    spec: UpstreamSpec, key: ObjectKey, reads: Reads
) -> tuple[list[UpstreamServer], list[Problem]]:
    servers: list[UpstreamServer] = []
    problems: list[Problem] = []
    for index, server in enumerate(spec.servers or ()):
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
    return servers, problems


def _service_servers(
    reference: ServiceRef, key: ObjectKey, reads: Reads
) -> tuple[list[UpstreamServer], list[Problem]]:
    """A server per ready endpoint, each address held to the pair's boundaries like a typed one: a Service
    whose endpoints include an address the pair does not allow refuses the Upstream whole."""
    try:
        endpoints = ready_endpoints(reads.service(key.namespace, reference.name), reference)
    except ServiceUnusable as unusable:
        return [], [Problem(key, "spec.serviceRef", str(unusable))]
    problems: list[Problem] = []
    for address, _ in endpoints:
        try:
            reads.addresses(address)
        except BackendRefused as refused:
            message = f"Service {reference.name} has endpoint {refused}"
            problems.append(Problem(key, "spec.serviceRef", message))
    servers = [
        UpstreamServer(address=address, port=port, weight=1, max_fails=1, fail_timeout="10s")
        for address, port in endpoints
    ]
    return servers, problems
