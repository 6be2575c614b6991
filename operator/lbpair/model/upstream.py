"""Upstream: a group of backend servers nginx balances across."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from lbpair.model.base import ApiModel, CelRule, UniqueItems, cel_config
from lbpair.model.common import ObjectMeta, PairRef, Port
from lbpair.model.patterns import DnsLabel, DnsSubdomain, HashVariable, Host, LocationPath, NginxTime


class UpstreamServer(ApiModel):
    """One backend server."""

    address: Host
    """IPv4 address or DNS name. The operator resolves a name (IPv4, re-resolved every 30 s) and renders one
    nginx server per address, so a name that does not resolve refuses this Upstream alone, never the pair.
    Every address must be an allowed backend of the pair (see the pair's spec.backends)."""
    port: Port = 80
    """Port."""
    weight: Annotated[int, Field(ge=1, le=1000)] = 1
    """Relative share of requests."""
    max_fails: Annotated[int, Field(ge=0, le=1000)] = 1
    """Failed attempts within failTimeout before the server counts as unavailable; 0 disables the count."""
    fail_timeout: NginxTime = "10s"
    """Window for maxFails, and how long the server then stays unavailable."""
    backup: bool = False
    """Used only when the other servers are unavailable (not with IPHash or Hash)."""
    down: bool = False
    """Marked permanently unavailable."""


class HashKey(ApiModel):
    """Key for the Hash method."""

    variable: HashVariable
    """nginx variable whose value is hashed, without `$`: one of request_uri, uri, remote_addr,
    binary_remote_addr, host, http_host, server_name, or cookie_<name>, arg_<name>, http_<name> (a request
    header, lower case with `_` for `-`), where <name> is lower-case letters, digits and `_`."""
    consistent: bool = True
    """Ketama consistent hashing: adding or removing a server remaps few keys."""


SERVICE_PORT_NUMBER_OR_NAME = CelRule(
    rule="has(self.port) != has(self.portName)",
    message="exactly one of port and portName is required",
    field_path=".port",
)


class ServiceRef(ApiModel):
    """A Service in the Upstream's namespace whose ready endpoints are the servers."""

    model_config = cel_config(SERVICE_PORT_NUMBER_OR_NAME)

    name: DnsSubdomain
    """Name of the Service."""
    port: Port | None = None
    """The Service's port (spec.ports[].port); nginx connects to the endpoints' port behind it (the
    targetPort). Exactly one of port and portName."""
    port_name: DnsLabel | None = None
    """The Service's port by name (spec.ports[].name). Exactly one of port and portName."""

    @model_validator(mode="after")
    def _port_number_or_name(self) -> Self:
        SERVICE_PORT_NUMBER_OR_NAME.enforce((self.port is None) != (self.port_name is None))
        return self


HASH_KEY_ONLY_WITH_HASH = CelRule(
    rule="(self.method == 'Hash') == has(self.hashKey)",
    message="hashKey is required with method Hash, and allowed only then",
    field_path=".hashKey",
)
NO_BACKUP_WITH_HASHING = CelRule(
    rule="!(self.method in ['IPHash', 'Hash']) || !has(self.servers) || self.servers.all(s, !s.backup)",
    message="servers[].backup cannot be used with method IPHash or Hash (nginx refuses it)",
    field_path=".servers",
)
SERVERS_OR_SERVICE = CelRule(
    rule="has(self.servers) != has(self.serviceRef)",
    message="exactly one of servers and serviceRef is required",
    field_path=".serviceRef",
)


class UpstreamSpec(ApiModel):
    """Desired state of an Upstream."""

    model_config = cel_config(HASH_KEY_ONLY_WITH_HASH, NO_BACKUP_WITH_HASHING, SERVERS_OR_SERVICE)

    pair_ref: PairRef
    """The pair whose nginx serves this upstream."""
    method: Literal["RoundRobin", "IPHash", "LeastConn", "Hash"] = "RoundRobin"
    """Balancing method (round robin, ip_hash, least_conn, hash)."""
    hash_key: HashKey | None = None
    """Key for method Hash."""
    keepalive: Annotated[int, Field(ge=1, le=10000)] | None = None
    """Idle keep-alive connections to the servers cached per worker; proxying locations then use HTTP/1.1
    with an empty Connection header, as nginx requires."""
    servers: (
        Annotated[list[UpstreamServer], Field(min_length=1, max_length=256), UniqueItems(("address", "port"))]
        | None
    ) = None
    """Backend servers, typed by hand. Exactly one of servers and serviceRef."""
    service_ref: ServiceRef | None = None
    """Take the servers from a Service's EndpointSlices instead: every ready IPv4 endpoint (terminating
    ones are dropped; nginx finishes their in-flight requests on the reload), with weight 1, maxFails 1,
    failTimeout 10s, each checked against the pair's spec.backends like a typed address. An edit of the
    Service or its EndpointSlices goes live like an edit of this Upstream. With no ready endpoint the
    Upstream stays programmed and nginx answers 503 for it (condition BackendsAvailable False).
    Exactly one of servers and serviceRef."""

    health_path: LocationPath | None = None
    """HTTP path the LB nodes GET on every server for status.backends (HTTP/1.0, Host: the server's
    address; a 2xx or 3xx answer within 1 s counts as reachable). Without it, a TCP connect."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        HASH_KEY_ONLY_WITH_HASH.enforce((self.method == "Hash") == (self.hash_key is not None))
        NO_BACKUP_WITH_HASHING.enforce(
            self.method not in ("IPHash", "Hash") or not any(server.backup for server in self.servers or ())
        )
        SERVERS_OR_SERVICE.enforce((self.servers is None) != (self.service_ref is None))
        return self


class Upstream(ApiModel):
    """An Upstream as the model reads it."""

    metadata: ObjectMeta
    spec: UpstreamSpec
