"""nginx-wide settings of a pair: process and http defaults, access-log formats, compression, caches."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from lbpair.model.base import ApiModel, CelRule, UniqueItems, cel_config
from lbpair.model.patterns import (
    Charset,
    LogLiteral,
    MimeType,
    NginxName,
    NginxSize,
    NginxTime,
    NginxVariable,
    UnixUser,
)

LOG_ITEM_IS_VARIABLE_OR_LITERAL = CelRule(
    rule="has(self.variable) != has(self.literal)",
    message="set exactly one of variable or literal",
)


class LogFormatItem(ApiModel):
    """One piece of a log format: an nginx variable or a literal made of punctuation."""

    model_config = cel_config(LOG_ITEM_IS_VARIABLE_OR_LITERAL)

    variable: NginxVariable | None = None
    """nginx variable name without `$`, e.g. remote_addr, time_local, http_user_agent."""
    literal: LogLiteral | None = None
    """Fixed text between variables: spaces and the punctuation []"|:,/=()@+- only."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        LOG_ITEM_IS_VARIABLE_OR_LITERAL.enforce((self.variable is None) != (self.literal is None))
        return self


class LogFormat(ApiModel):
    """A named access-log format (log_format)."""

    name: NginxName
    """Name used by VirtualHost accessLog.format."""
    escape: Literal["default", "json", "none"] = "default"
    """How nginx escapes variable values in the log."""
    items: Annotated[list[LogFormatItem], Field(min_length=1, max_length=64)]
    """The format, in order."""


class GzipBuffers(ApiModel):
    """Number and size of gzip buffers."""

    number: Annotated[int, Field(ge=1, le=1024)]
    """How many buffers."""
    size: NginxSize
    """Size of each buffer."""


class Gzip(ApiModel):
    """Response compression (gzip_*)."""

    enabled: bool = False
    """gzip on|off."""
    min_length: NginxSize | None = None
    """gzip_min_length."""
    buffers: GzipBuffers | None = None
    """gzip_buffers."""
    http_version: Literal["1.0", "1.1"] | None = None
    """gzip_http_version."""
    comp_level: Annotated[int, Field(ge=1, le=9)] | None = None
    """gzip_comp_level."""
    types: Annotated[list[MimeType], Field(max_length=64), UniqueItems()] = Field(default_factory=list)
    """gzip_types in addition to text/html."""
    vary: bool = False
    """gzip_vary."""


class CacheZone(ApiModel):
    """A proxy cache (proxy_cache_path). Its files live under the node profile's cacheDir/<name>."""

    name: NginxName
    """keys_zone name, used by VirtualHost locations' cache.zone."""
    levels: Literal["1", "2", "1:1", "1:2", "2:1", "2:2", "1:1:1", "1:1:2", "1:2:2", "2:2:2"] = "1:2"
    """Directory levels of the cache."""
    keys_zone_size: NginxSize
    """Shared memory for the keys (keys_zone=name:size)."""
    max_size: NginxSize | None = None
    """Upper limit of the cache on disk."""
    inactive: NginxTime | None = None
    """Items not accessed for this long are removed."""


NGINX_USER_NOT_ROOT = CelRule(
    rule="self.user != 'root'",
    message="root is refused: the worker processes handle every request and must not run as root",
    field_path=".user",
)


class NginxSettings(ApiModel):
    """nginx-wide settings (nginx.conf main, events and http contexts)."""

    model_config = cel_config(NGINX_USER_NOT_ROOT)

    user: UnixUser = "www-data"
    """User the worker processes run as; must exist on the nodes, and not be root."""
    worker_processes: Annotated[int, Field(ge=1, le=1024)] | None = None
    """Number of worker processes; unset means auto (one per CPU)."""
    worker_connections: Annotated[int, Field(ge=1, le=1048576)] = 1024
    """worker_connections."""
    worker_shutdown_timeout: NginxTime | None = "60s"
    """How long old workers may keep serving after a reload; bounds piled-up worker generations."""
    charset: Charset | None = None
    """charset added to Content-Type, e.g. utf-8."""
    log_formats: Annotated[list[LogFormat], Field(max_length=16), UniqueItems(("name",))] = Field(
        default_factory=list
    )
    """Named access-log formats. `combined` is built in."""
    sendfile: bool = True
    """sendfile."""
    tcp_nopush: bool = True
    """tcp_nopush."""
    tcp_nodelay: bool = True
    """tcp_nodelay."""
    keepalive_timeout: NginxTime = "65s"
    """Client keep-alive timeout."""
    client_header_timeout: NginxTime | None = None
    """client_header_timeout."""
    client_body_timeout: NginxTime | None = None
    """client_body_timeout."""
    client_max_body_size: NginxSize | None = None
    """client_max_body_size (0 = unlimited)."""
    client_body_buffer_size: NginxSize | None = None
    """client_body_buffer_size."""
    gzip: Gzip = Gzip()
    """Compression."""
    cache_zones: Annotated[list[CacheZone], Field(max_length=16), UniqueItems(("name",))] = Field(
        default_factory=list
    )
    """Proxy caches VirtualHost locations may use."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        NGINX_USER_NOT_ROOT.enforce(self.user != "root")
        return self
