"""The render model: what the templates loop over, in the templates' own terms.

Fields are semantic (a listener is a port and whether it speaks TLS, a cache zone is an object), never
nginx or keepalived syntax packed into strings: the syntax lives in the templates and in
`lbpair.render.syntax`. Every string here was allow-listed by the API model or assembled by the build
from allow-listed parts. The build (`lbpair.build`) makes these from the specs; template tests make them
by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lbpair.model.files import ManagedFile
from lbpair.render.keepalived_model import CheckScript, NodeConfig


@dataclass(frozen=True, order=True)
class ObjectKey:
    """Which resource a piece of configuration comes from."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


# --- nginx ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Listen:
    """A listening socket on every address, so it follows the VIPs."""

    port: int
    ssl: bool = False


@dataclass(frozen=True)
class Buffers:
    """`number size`, as proxy_buffers and gzip_buffers take them."""

    number: int
    size: str


@dataclass(frozen=True)
class LogItem:
    """One piece of a log format: exactly one of an nginx variable (without `$`) or literal text."""

    variable: str | None = None
    literal: str | None = None


@dataclass(frozen=True)
class LogFormat:
    name: str
    escape: str
    items: list[LogItem]


@dataclass(frozen=True)
class CacheZone:
    """A proxy cache: its directory, directory levels, keys zone and limits."""

    name: str
    path: str
    levels: str
    keys_zone_size: str
    max_size: str | None = None
    inactive: str | None = None


@dataclass(frozen=True)
class Gzip:
    enabled: bool = False
    min_length: str | None = None
    buffers: Buffers | None = None
    http_version: str | None = None
    comp_level: int | None = None
    types: list[str] = field(default_factory=list)
    vary: bool = False


@dataclass(frozen=True)
class ClientLimits:
    header_timeout: str | None = None
    body_timeout: str | None = None
    max_body_size: str | None = None
    body_buffer_size: str | None = None


@dataclass(frozen=True)
class NginxMain:
    """nginx.conf: process settings, the http block's defaults and what it includes."""

    path: str
    user: str
    worker_processes: int | None  # None: one per CPU
    pid_path: str
    error_log_path: str
    worker_connections: int
    worker_rlimit_nofile: int
    """The workers' RLIMIT_NOFILE: sized from the config, since the master's (the unit's LimitNOFILE) may
    be too low for the log files and connections together."""
    worker_shutdown_timeout: str | None
    mime_types_path: str
    charset: str | None
    log_formats: list[LogFormat]
    sendfile: bool
    tcp_nopush: bool
    tcp_nodelay: bool
    keepalive_timeout: str
    client: ClientLimits
    proxy_temp_path: str
    cache_zones: list[CacheZone]
    gzip: Gzip
    server_names_hash_bucket_size: int
    server_names_hash_max_size: int
    proxy_headers_hash_bucket_size: int
    proxy_headers_hash_max_size: int
    status_path: str
    status_port: int
    includes: list[str]
    default_listens: list[Listen]
    """Every listener the pair declares: each gets a default server that refuses unknown Host names, so a
    request for a name no VirtualHost declares never lands on whichever host nginx loaded first, and a
    declared port is open (and its protocol fixed) whether or not a VirtualHost uses it yet."""


@dataclass(frozen=True)
class UpstreamServer:
    address: str
    port: int
    weight: int
    max_fails: int
    fail_timeout: str
    backup: bool = False
    down: bool = False
    resolved_from: str | None = None
    """The host name the operator resolved to `address`, if it was one."""


BalancingMethod = Literal["round_robin", "ip_hash", "least_conn", "hash"]


@dataclass(frozen=True)
class Balancing:
    """How nginx picks a server; `hash_variable` (without `$`) only with method "hash"."""

    method: BalancingMethod = "round_robin"
    hash_variable: str | None = None
    consistent: bool = False


@dataclass(frozen=True)
class Upstream:
    source: ObjectKey
    path: str
    name: str
    balancing: Balancing
    keepalive: int | None
    servers: list[UpstreamServer]
    service: str | None = None
    """`namespace/name` of the Service whose ready endpoints are the servers, if they come from one."""
    health_path: str | None = None
    """Not rendered: the HTTP path the nodes' backend probe GETs on each server (None: TCP connect)."""
    unavailable_listen: str | None = None
    """With no servers (a Service with no ready endpoint): the loopback address:port of a server of its
    own on which nginx answers 503, the upstream's only server (nginx refuses an upstream with none)."""


@dataclass(frozen=True)
class Header:
    """A request header to the backend: the value of an nginx variable (without `$`) or a fixed value;
    an empty fixed value clears the header."""

    name: str
    variable: str | None = None
    value: str = ""


@dataclass(frozen=True)
class CacheValidity:
    codes: list[int]
    time: str


@dataclass(frozen=True)
class LocationCache:
    zone: str
    valid: list[CacheValidity]


@dataclass(frozen=True)
class ProxyTuning:
    """Optional proxy_* settings of a location; None keeps nginx's default."""

    connect_timeout: str | None = None
    send_timeout: str | None = None
    read_timeout: str | None = None
    buffer_size: str | None = None
    buffers: Buffers | None = None
    busy_buffers_size: str | None = None
    temp_file_write_size: str | None = None
    max_temp_file_size: str | None = None
    next_upstream: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UrlUpstream:
    """A URL location's host name as resolved by the operator: nginx proxies to `servers` through an
    upstream block named `name` in the virtual host's file."""

    name: str
    servers: list[str]
    """`address:port` each."""


@dataclass(frozen=True)
class RedirectRewrite:
    """proxy_redirect <backend> <replacement>: what `proxy_redirect default` does for the URL as the user
    wrote it, which nginx cannot derive once the host name is replaced by an upstream block."""

    backend: str
    replacement: str


@dataclass(frozen=True)
class Location:
    path: str
    exact: bool
    upstream: str | None  # the name of an Upstream of this pair, or
    url: str | None  # a URL to proxy to
    http11: bool = False
    headers: list[Header] = field(default_factory=list)
    redirect: Literal["off", "default"] | None = None
    redirect_rewrite: RedirectRewrite | None = None
    url_upstream: UrlUpstream | None = None
    tuning: ProxyTuning = ProxyTuning()
    cache: LocationCache | None = None


@dataclass(frozen=True)
class TlsFiles:
    certificate_path: str
    private_key_path: str


@dataclass(frozen=True)
class AccessLog:
    path: str
    format: str


@dataclass(frozen=True)
class ErrorLog:
    path: str
    level: str


@dataclass(frozen=True)
class VirtualHost:
    source: ObjectKey
    path: str
    server_names: list[str]
    listens: list[Listen]
    redirect_listens: list[Listen]
    """Plain-HTTP listeners that only redirect to HTTPS."""
    tls: TlsFiles | None
    access_log: AccessLog | None
    error_log: ErrorLog
    locations: list[Location]

    @property
    def has_root_location(self) -> bool:
        """A prefix location "/" catches every path the others do not."""
        return any(location.path == "/" and not location.exact for location in self.locations)


@dataclass(frozen=True)
class DesiredState:
    """Everything the renderer needs for both nodes of one pair."""

    pair: ObjectKey
    nodes: list[NodeConfig]
    nginx: NginxMain
    upstreams: list[Upstream]
    virtual_hosts: list[VirtualHost]
    tls_files: list[ManagedFile]
    check_script: CheckScript | None

    @property
    def included(self) -> list[ObjectKey]:
        """The attached objects this state configures."""
        return sorted([u.source for u in self.upstreams] + [v.source for v in self.virtual_hosts])

    def sources_by_path(self) -> dict[str, list[ObjectKey]]:
        """Which attached objects each node file they configure comes from: an object's own config file,
        and a VirtualHost's access log, certificate and key (a TLS Secret's files serve every VirtualHost that
        uses it). So a validator's message naming a file names the objects at fault."""
        sources: dict[str, list[ObjectKey]] = {
            upstream.path: [upstream.source] for upstream in self.upstreams
        }
        for host in self.virtual_hosts:
            paths = [host.path, *([host.access_log.path] if host.access_log else [])]
            paths += [host.tls.certificate_path, host.tls.private_key_path] if host.tls else []
            for path in paths:
                sources.setdefault(path, []).append(host.source)
        return sources
