"""Upstream: a group of backend servers nginx balances across."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from lbpair.model.base import ApiModel, CelRule, UniqueItems, cel_config
from lbpair.model.common import ObjectMeta, PairRef, Port
from lbpair.model.patterns import HashVariable, Host, NginxTime


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


HASH_KEY_ONLY_WITH_HASH = CelRule(
    rule="(self.method == 'Hash') == has(self.hashKey)",
    message="hashKey is required with method Hash, and allowed only then",
    field_path=".hashKey",
)
NO_BACKUP_WITH_HASHING = CelRule(
    rule="!(self.method in ['IPHash', 'Hash']) || self.servers.all(s, !s.backup)",
    message="servers[].backup cannot be used with method IPHash or Hash (nginx refuses it)",
    field_path=".servers",
)


class UpstreamSpec(ApiModel):
    """Desired state of an Upstream."""

    model_config = cel_config(HASH_KEY_ONLY_WITH_HASH, NO_BACKUP_WITH_HASHING)

    pair_ref: PairRef
    """The pair whose nginx serves this upstream."""
    method: Literal["RoundRobin", "IPHash", "LeastConn", "Hash"] = "RoundRobin"
    """Balancing method (round robin, ip_hash, least_conn, hash)."""
    hash_key: HashKey | None = None
    """Key for method Hash."""
    keepalive: Annotated[int, Field(ge=1, le=10000)] | None = None
    """Idle keep-alive connections to the servers cached per worker; proxying locations then use HTTP/1.1
    with an empty Connection header, as nginx requires."""
    servers: Annotated[
        list[UpstreamServer], Field(min_length=1, max_length=256), UniqueItems(("address", "port"))
    ]
    """Backend servers."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        HASH_KEY_ONLY_WITH_HASH.enforce((self.method == "Hash") == (self.hash_key is not None))
        NO_BACKUP_WITH_HASHING.enforce(
            self.method not in ("IPHash", "Hash") or not any(server.backup for server in self.servers)
        )
        return self


class Upstream(ApiModel):
    """An Upstream as the model reads it."""

    metadata: ObjectMeta
    spec: UpstreamSpec
