"""VirtualHost: an nginx server block (names, ports, TLS, logs) and its locations."""

from __future__ import annotations

from typing import Annotated, Literal, Self, TypeVar

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from lbpair.model.base import ApiModel, CelRule, UniqueItems, cel_config
from lbpair.model.common import ObjectMeta, PairRef, Port
from lbpair.model.patterns import (
    DnsSubdomain,
    HeaderName,
    HeaderValue,
    LocationPath,
    NginxName,
    NginxSize,
    NginxTime,
    ProxyUrl,
    ServerName,
)
from lbpair.model.sizes import ProxyBufferSizes, refused_by_nginx, size_bytes

ValueT = TypeVar("ValueT")

# Variables a proxied header may carry. A closed list: each is meaningful for a header and none exposes
# another request's data.
HeaderVariable = Literal[
    "host",
    "http_host",
    "remote_addr",
    "remote_port",
    "proxy_add_x_forwarded_for",
    "scheme",
    "server_name",
    "server_port",
    "request_uri",
    "request_id",
    "ssl_protocol",
    "proxy_host",
]
NextUpstreamCondition = Literal[
    "error",
    "timeout",
    "invalid_header",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "http_403",
    "http_404",
    "http_429",
    "non_idempotent",
    "off",
]


class Listener(ApiModel):
    """A port nginx listens on for this host (on every address, so it follows the VIPs): one of the pair's
    spec.listeners, with its protocol."""

    port: Port
    """Port."""
    protocol: Literal["HTTP", "HTTPS"] = "HTTP"
    """HTTPS needs spec.tls."""


class Tls(ApiModel):
    """TLS termination with a certificate from a kubernetes.io/tls Secret in this VirtualHost's namespace."""

    secret_name: DnsSubdomain
    """Secret of type kubernetes.io/tls (keys tls.crt and tls.key)."""
    redirect_http: bool = False
    """Answer plain-HTTP listeners with a 301 redirect to https://$host$request_uri."""


class AccessLog(ApiModel):
    """Per-host access log, written to <nodeProfile.nginxLogDir>/<namespace>_<name>.access.log."""

    enabled: bool = True
    """Write an access log."""
    format: NginxName = "combined"
    """A log format of the pair (spec.nginx.logFormats[].name) or nginx's built-in combined."""


class ErrorLog(ApiModel):
    """Per-host error-log level. The lines go to the pair's error log, <nodeProfile.nginxLogDir>/error.log
    (nginx names the server and the request in each), so no VirtualHost holds a file of its own open."""

    level: Literal["debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"] = "error"
    """Minimum severity logged."""


class UpstreamRef(ApiModel):
    """An Upstream in this VirtualHost's namespace, attached to the same pair."""

    name: DnsSubdomain
    """Name of the Upstream."""


HEADER_IS_VARIABLE_OR_VALUE = CelRule(
    rule="has(self.variable) != has(self.value)",
    message="set exactly one of variable or value",
)


class ProxyHeader(ApiModel):
    """A request header sent to the backend (proxy_set_header)."""

    model_config = cel_config(HEADER_IS_VARIABLE_OR_VALUE)

    name: HeaderName
    """Header name, e.g. X-Real-IP."""
    variable: HeaderVariable | None = None
    """Send the value of this nginx variable (without `$`), e.g. remote_addr."""
    value: HeaderValue | None = None
    """Send this fixed value."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        HEADER_IS_VARIABLE_OR_VALUE.enforce((self.variable is None) != (self.value is None))
        return self


class ProxyBuffers(ApiModel):
    """Number and size of response buffers (proxy_buffers)."""

    number: Annotated[int, Field(ge=2, le=1024)]
    """How many buffers (nginx needs at least 2)."""
    size: NginxSize
    """Size of each buffer."""


class ProxySettings(ApiModel):
    """How requests are proxied. Set on the VirtualHost as defaults and on a location to override them
    field by field; headers merge by name, the location's winning."""

    headers: Annotated[list[ProxyHeader], Field(max_length=32), UniqueItems(("name",))] = Field(
        default_factory=list
    )
    """Request headers sent to the backend."""
    redirect: Literal["Off", "Default"] | None = None
    """Rewriting of Location/Refresh headers from the backend: Off (proxy_redirect off) or Default."""
    connect_timeout: NginxTime | None = None
    """proxy_connect_timeout."""
    send_timeout: NginxTime | None = None
    """proxy_send_timeout."""
    read_timeout: NginxTime | None = None
    """proxy_read_timeout."""
    buffer_size: NginxSize | None = None
    """proxy_buffer_size: the buffer for the response header (nginx default: one page, 4k). At most the
    pair's spec.limits.maxBufferSize."""
    buffers: ProxyBuffers | None = None
    """proxy_buffers (nginx default: 8 4k). Each at most the pair's spec.limits.maxBufferSize, all together
    at most spec.limits.maxBuffersTotal."""
    busy_buffers_size: NginxSize | None = None
    """proxy_busy_buffers_size (nginx default: twice the larger of bufferSize and buffers.size). Must be at
    least that larger size and at most all buffers minus one, as nginx requires."""
    temp_file_write_size: NginxSize | None = None
    """proxy_temp_file_write_size (nginx default: twice the larger of bufferSize and buffers.size). At least
    that larger size, at most the pair's spec.limits.maxBuffersTotal."""
    max_temp_file_size: NginxSize | None = None
    """proxy_max_temp_file_size (nginx default: 1024m; 0 = no temporary files). 0 or at least the larger
    of bufferSize and buffers.size; at most the pair's spec.limits.maxTempFileSize."""
    next_upstream: Annotated[list[NextUpstreamCondition], Field(max_length=12), UniqueItems()] = Field(
        default_factory=list
    )
    """When to pass a request to the next server (proxy_next_upstream)."""


BUFFER_FIELDS = (
    "buffer_size",
    "buffers",
    "busy_buffers_size",
    "temp_file_write_size",
    "max_temp_file_size",
)


def _bytes(size: str | None) -> int | None:
    return None if size is None else size_bytes(size)


def pick(own: ValueT | None, inherited: ValueT | None) -> ValueT | None:
    return inherited if own is None else own


def effective_buffer_sizes(defaults: ProxySettings, location: ProxySettings) -> ProxyBufferSizes:
    """The buffer settings nginx merges for a location: each of the location's, else the VirtualHost's."""
    buffers = pick(location.buffers, defaults.buffers)
    return ProxyBufferSizes(
        buffer_size=_bytes(pick(location.buffer_size, defaults.buffer_size)),
        buffers_number=buffers.number if buffers else None,
        buffers_size=size_bytes(buffers.size) if buffers else None,
        busy_buffers_size=_bytes(pick(location.busy_buffers_size, defaults.busy_buffers_size)),
        temp_file_write_size=_bytes(pick(location.temp_file_write_size, defaults.temp_file_write_size)),
        max_temp_file_size=_bytes(pick(location.max_temp_file_size, defaults.max_temp_file_size)),
    )


class CacheValidity(ApiModel):
    """How long responses with the given status codes are cached (proxy_cache_valid)."""

    codes: Annotated[
        list[Annotated[int, Field(ge=100, le=599)]], Field(min_length=1, max_length=16), UniqueItems()
    ]
    """HTTP status codes."""
    time: NginxTime
    """Validity."""


class LocationCache(ApiModel):
    """Cache responses in one of the pair's cache zones."""

    zone: NginxName
    """Name of a cache zone in the pair's spec.nginx.cacheZones."""
    valid: Annotated[list[CacheValidity], Field(min_length=1, max_length=16)]
    """Validity per status code."""


LOCATION_HAS_ONE_BACKEND = CelRule(
    rule="has(self.upstreamRef) != has(self.url)",
    message="set exactly one of upstreamRef or url",
)


class Location(ApiModel):
    """Requests matching path are proxied to an Upstream or a URL."""

    model_config = cel_config(LOCATION_HAS_ONE_BACKEND)

    path: LocationPath
    """URI path; segments of `.` or `..` are not allowed."""
    match_type: Literal["Prefix", "Exact"] = "Prefix"
    """Prefix (location /path) or Exact (location = /path). Regular expressions are deliberately not
    offered."""
    upstream_ref: UpstreamRef | None = None
    """Proxy to this Upstream (proxy_pass http://<upstream>)."""
    url: ProxyUrl | None = None
    """Proxy to this URL (http or https; host, optional port and path), e.g. http://198.18.0.108/svn/."""
    proxy: ProxySettings = ProxySettings()
    """Overrides of the VirtualHost's proxy defaults."""
    cache: LocationCache | None = None
    """Response caching."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        LOCATION_HAS_ONE_BACKEND.enforce((self.upstream_ref is None) != (self.url is None))
        return self


HTTPS_NEEDS_TLS = CelRule(
    rule="has(self.tls) == self.listen.exists(l, l.protocol == 'HTTPS')",
    message="an HTTPS listener needs tls, and tls needs an HTTPS listener",
    field_path=".tls",
)
REDIRECT_NEEDS_HTTP = CelRule(
    rule="!has(self.tls) || !self.tls.redirectHttp || self.listen.exists(l, l.protocol == 'HTTP')",
    message="tls.redirectHttp needs an HTTP listener to redirect from",
    field_path=".tls.redirectHttp",
)


class VirtualHostSpec(ApiModel):
    """Desired state of a VirtualHost."""

    model_config = cel_config(HTTPS_NEEDS_TLS, REDIRECT_NEEDS_HTTP)

    pair_ref: PairRef
    """The pair that serves this host."""
    server_names: Annotated[list[ServerName], Field(min_length=1, max_length=32), UniqueItems()]
    """Host names (or IPv4 addresses) this host answers to; `*.example.com` wildcards allowed. A name may be
    used by only one VirtualHost per pair."""
    listen: Annotated[list[Listener], Field(min_length=1, max_length=8), UniqueItems(("port",))] = [  # noqa: RUF012
        Listener(port=80)
    ]
    """Ports and protocols."""
    # (pydantic copies mutable defaults, so RUF012 does not apply; a literal default lands in the CRD.)
    tls: Tls | None = None
    """TLS certificate, for HTTPS listeners."""
    access_log: AccessLog = AccessLog()
    """Per-host access log."""
    error_log: ErrorLog = ErrorLog()
    """Error-log level of this host's lines in the pair's error log."""
    proxy: ProxySettings = ProxySettings()
    """Proxy defaults for every location."""
    locations: Annotated[
        list[Location], Field(min_length=1, max_length=128), UniqueItems(("path", "match_type"))
    ]
    """Locations, matched by nginx's rules (exact first, then the longest prefix)."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        protocols = {listener.protocol for listener in self.listen}
        HTTPS_NEEDS_TLS.enforce((self.tls is not None) == ("HTTPS" in protocols))
        REDIRECT_NEEDS_HTTP.enforce(self.tls is None or not self.tls.redirect_http or "HTTP" in protocols)
        self._buffers_nginx_accepts()
        return self

    def _buffers_nginx_accepts(self) -> None:
        """Each location's effective buffer sizes pass nginx's own checks (see lbpair.model.sizes), blamed
        on the location when it overrides a buffer setting, else on the VirtualHost's defaults."""
        for index, location in enumerate(self.locations):
            refused = refused_by_nginx(effective_buffer_sizes(self.proxy, location.proxy))
            if refused is None:
                continue
            overrides = any(getattr(location.proxy, name) is not None for name in BUFFER_FIELDS)
            where = f".locations[{index}].proxy" if overrides else ".proxy"
            field, message = refused
            raise PydanticCustomError(
                "nginx_buffers", f"{message} (nginx -t would refuse it)", {"field_path": f"{where}.{field}"}
            )


class VirtualHost(ApiModel):
    """A VirtualHost as the model reads it."""

    metadata: ObjectMeta
    spec: VirtualHostSpec
