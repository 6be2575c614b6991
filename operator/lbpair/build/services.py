"""Pure: Upstream servers from a Kubernetes Service's EndpointSlices (Upstream.spec.serviceRef), and which
Service each Upstream follows, so that an EndpointSlice or Service change wakes the pairs that use it.

The endpoint controller keeps one or more EndpointSlices per Service, labelled
`kubernetes.io/service-name`. A slice's ports carry the Service port's name and the resolved target port;
its endpoints carry conditions. Only ready endpoints become servers (`ready` unset counts as ready, as the
API documents); terminating endpoints (ready false, whatever `serving` says) are dropped: the reload that
drops them lets nginx finish the requests in flight to them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lbpair.model.common import ObjectRef
from lbpair.model.upstream import ServiceRef
from lbpair.render.model import Upstream

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class ServiceView:
    """What a build reads of one Service: its ports and its EndpointSlices' IPv4 endpoints, as the
    handlers' indexes hold them (see service_view_fields and slice_view_fields)."""

    ports: tuple[tuple[str, int], ...]
    """The Service's (port name, port), the name "" for an unnamed port."""
    slices: tuple[Mapping[str, Any], ...]
    """Its EndpointSlices' addressType, ports and endpoints, in a stable order (by slice name)."""


def service_view_fields(spec: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """The part of a Service's spec a build reads: (port name, port) of each of its ports."""
    return tuple(
        (str(port.get("name") or ""), int(port.get("port") or 0)) for port in spec.get("ports") or ()
    )


def slice_view_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an EndpointSlice a build reads (a change of anything else wakes no pass)."""
    return {
        "name": str((body.get("metadata") or {}).get("name") or ""),
        "addressType": body.get("addressType"),
        "ports": list(body.get("ports") or ()),
        "endpoints": list(body.get("endpoints") or ()),
    }


def slice_service(namespace: str, labels: Mapping[str, str]) -> ObjectRef | None:
    """The Service an EndpointSlice belongs to, by its label; None for a slice of no Service."""
    name = labels.get(SERVICE_NAME_LABEL)
    return ObjectRef(namespace, name) if name else None


def followed_service(namespace: str, spec: Mapping[str, Any]) -> ObjectRef | None:
    """The Service an Upstream's raw spec takes its servers from (same namespace), if any. Reads the raw
    spec, as attached_pair does, so the index needs no parse."""
    reference = spec.get("serviceRef")
    if not isinstance(reference, Mapping) or not reference.get("name"):
        return None
    return ObjectRef(namespace, str(reference["name"]))


class ServiceUnusable(ValueError):
    """The Service is missing or has no such port; the message says which, for spec.serviceRef."""


def ready_endpoints(view: ServiceView | None, reference: ServiceRef) -> list[tuple[str, int]]:
    """The (IPv4 address, port) of every ready endpoint behind the referenced Service port, sorted and
    without repeats (a slice being replaced may list an endpoint twice); ServiceUnusable when the Service
    or the port does not exist. Empty when no endpoint is ready."""
    if view is None:
        raise ServiceUnusable(f"Service {reference.name} not found")
    wanted = reference.port_name if reference.port_name is not None else reference.port
    names = [name for name, number in view.ports if wanted in (name, number)]
    if not names:
        field = "portName" if reference.port_name is not None else "port"
        raise ServiceUnusable(f"{field}: Service {reference.name} has no port {wanted}")
    port_name = names[0]
    servers: set[tuple[str, int]] = set()
    for endpoint_slice in view.slices:
        if endpoint_slice.get("addressType") != "IPv4":
            continue
        target = _slice_port(endpoint_slice, port_name)
        if target is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            servers.update((str(address), target) for address in endpoint.get("addresses") or ())
    return sorted(servers)


def _slice_port(endpoint_slice: Mapping[str, Any], port_name: str) -> int | None:
    for port in endpoint_slice.get("ports") or ():
        if str(port.get("name") or "") == port_name and port.get("port"):
            return int(port["port"])
    return None


def unavailable_listen(stem: str, status_port: int) -> str:
    """Where nginx answers 503 for the upstream `stem` while it has no server: a loopback address of its
    own (127.0.0.0/8 is all the node's; the status server keeps 127.0.0.1) on the pair's status port, a
    port the pair's listeners may not use. TCP, not a unix socket, so a killed nginx leaves no file that
    would stop the next one from binding. Two upstreams that hash to the same address both answer 503."""
    digest = hashlib.sha256(stem.encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}:{status_port}"


def backends_available(upstream: Upstream) -> tuple[bool, str, str]:
    """The BackendsAvailable condition of an Upstream that follows a Service: (holds, reason, message)."""
    count = len(upstream.servers)
    if count:
        endpoints = "endpoint" if count == 1 else "endpoints"
        return True, "EndpointsReady", f"{count} ready {endpoints} of Service {upstream.service}"
    message = f"Service {upstream.service} has no ready endpoint: nginx answers 503 for this Upstream"
    return False, "NoReadyEndpoints", message
