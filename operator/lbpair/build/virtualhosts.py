"""VirtualHost specs → render-model virtual hosts (and their TLS files), with per-object problems.

An object with a problem is left out and reported; the rest of the pair still renders. URL locations'
host names are resolved by the operator (see lbpair.build.backends) and sizes are held to the pair's
spec.limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from lbpair.build.backends import BackendRefused
from lbpair.build.nginx import error_log_path
from lbpair.build.problems import Problem
from lbpair.build.reads import Reads
from lbpair.build.resources import SecretUnusable
from lbpair.build.tls import tls_pair_problems
from lbpair.build.upstreams import safe_stem
from lbpair.model.files import ManagedFile
from lbpair.model.pair import LoadBalancerPair
from lbpair.model.sizes import size_bytes
from lbpair.model.virtualhost import Location as LocationSpec
from lbpair.model.virtualhost import ProxySettings
from lbpair.model.virtualhost import VirtualHost as VirtualHostSpec
from lbpair.render.model import (
    AccessLog,
    Buffers,
    CacheValidity,
    ErrorLog,
    Header,
    Listen,
    Location,
    LocationCache,
    ObjectKey,
    ProxyTuning,
    RedirectRewrite,
    TlsFiles,
    Upstream,
    UrlUpstream,
    VirtualHost,
)

BUILTIN_LOG_FORMATS = frozenset({"combined"})
NO_OVERRIDES = ProxySettings()
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class UrlTarget:
    """Where a URL location proxies to once its host is checked: the URL as written when the host is an
    address; for a host name, an upstream block of the addresses it resolves to."""

    written: str
    upstream: UrlUpstream | None = None

    @property
    def url(self) -> str:
        """What nginx proxies to."""
        if self.upstream is None:
            return self.written
        parts = urlsplit(self.written)
        return urlunsplit((parts.scheme, self.upstream.name, parts.path, "", ""))

    @property
    def authority(self) -> str:
        """host[:port] as written: what nginx's $proxy_host, and so the default Host header, was."""
        return urlsplit(self.written).netloc

    def default_redirect(self, location_path: str) -> RedirectRewrite:
        """What nginx's `proxy_redirect default` means for the URL as written (ngx_http_proxy_module)."""
        if urlsplit(self.written).path:
            return RedirectRewrite(self.written, location_path)
        return RedirectRewrite(f"{self.written}/", "/")


NEWEST = datetime.max.replace(tzinfo=UTC)


def effective_proxy(defaults: ProxySettings, location: ProxySettings) -> ProxySettings:
    """The location's settings over the VirtualHost's: field by field, headers merged by name
    (case-insensitively, as HTTP compares them), the location's winning."""
    if location == NO_OVERRIDES:
        return defaults  # the common case
    headers = {header.name.lower(): header for header in defaults.headers}
    headers.update({header.name.lower(): header for header in location.headers})
    merged = {
        name: getattr(location, name)
        if getattr(location, name) not in (None, [])
        else getattr(defaults, name)
        for name in ProxySettings.model_fields
    }
    merged["headers"] = list(headers.values())
    # Not validated again: each part was (and what a location inherits, by the VirtualHost model), and the
    # merged headers may be more than one list's cap of 32, which the tenant could not have seen refused.
    return ProxySettings.model_construct(**merged)


def location(
    spec: LocationSpec, defaults: ProxySettings, upstream: Upstream | None, url: UrlTarget | None
) -> Location:
    proxy = effective_proxy(defaults, spec.proxy)
    headers = [Header(name=h.name, variable=h.variable, value=h.value or "") for h in proxy.headers]
    keepalive = upstream is not None and upstream.keepalive is not None
    if keepalive and not any(header.name.lower() == "connection" for header in headers):
        # Upstream keep-alive needs HTTP/1.1 and no "Connection: close" from nginx.
        headers.append(Header(name="Connection"))
    redirect_rewrite = None
    if url is not None and url.upstream is not None:
        # nginx now proxies to an upstream block, so its $proxy_host and `proxy_redirect default` would
        # name the block: the backend keeps getting the host name it was given, as before.
        headers = [
            Header(name=h.name, value=url.authority) if h.variable == "proxy_host" else h for h in headers
        ]
        if not any(header.name.lower() == "host" for header in headers):
            headers.insert(0, Header(name="Host", value=url.authority))
        if proxy.redirect != "Off":
            redirect_rewrite = url.default_redirect(spec.path)
    return Location(
        path=spec.path,
        exact=spec.match_type == "Exact",
        upstream=upstream.name if upstream else None,
        url=url.url if url else None,
        http11=keepalive,
        headers=headers,
        redirect="off" if proxy.redirect == "Off" else ("default" if proxy.redirect else None),
        redirect_rewrite=redirect_rewrite,
        url_upstream=url.upstream if url else None,
        tuning=ProxyTuning(
            connect_timeout=proxy.connect_timeout,
            send_timeout=proxy.send_timeout,
            read_timeout=proxy.read_timeout,
            buffer_size=proxy.buffer_size,
            buffers=Buffers(proxy.buffers.number, proxy.buffers.size) if proxy.buffers else None,
            busy_buffers_size=proxy.busy_buffers_size,
            temp_file_write_size=proxy.temp_file_write_size,
            max_temp_file_size=proxy.max_temp_file_size,
            next_upstream=list(proxy.next_upstream),
        ),
        cache=LocationCache(
            zone=spec.cache.zone,
            valid=[CacheValidity(list(valid.codes), valid.time) for valid in spec.cache.valid],
        )
        if spec.cache
        else None,
    )


@dataclass
class VirtualHostBuilder:
    """Builds one VirtualHost, collecting every problem instead of stopping at the first."""

    pair: LoadBalancerPair
    key: ObjectKey
    reads: Reads
    """Everything the build reads besides the spec and the pair (see lbpair.build.reads)."""
    problems: list[Problem] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.key, path, message))

    def resolve_url(self, index: int, spec: LocationSpec) -> UrlTarget | None:
        if spec.url is None:
            return None
        parts = urlsplit(spec.url)
        host, _, port = parts.netloc.partition(":")
        try:
            addresses = self.reads.addresses(host)
        except BackendRefused as refused:
            self.problem(f"spec.locations[{index}].url", str(refused))
            return None
        if addresses == [host]:
            return UrlTarget(spec.url)
        servers = [f"{address}:{port or DEFAULT_PORTS[parts.scheme]}" for address in addresses]
        name = f"url_{safe_stem(self.key.namespace, self.key.name)}_{index}"
        return UrlTarget(spec.url, UrlUpstream(name, servers))

    def check_limits(self, path: str, proxy: ProxySettings) -> None:
        """Sizes above the pair's spec.limits (a tenant's share of the nodes' memory and disk)."""
        limits = self.pair.spec.limits
        one, total = ("maxBufferSize", limits.max_buffer_size), ("maxBuffersTotal", limits.max_buffers_total)
        buffers = proxy.buffers
        for name, value, (limit_name, limit) in (
            ("bufferSize", proxy.buffer_size, one),
            ("buffers.size", buffers.size if buffers else None, one),
            ("busyBuffersSize", proxy.busy_buffers_size, total),
            ("tempFileWriteSize", proxy.temp_file_write_size, total),
            ("maxTempFileSize", proxy.max_temp_file_size, ("maxTempFileSize", limits.max_temp_file_size)),
        ):
            if value is not None and size_bytes(value) > size_bytes(limit):
                self.problem(
                    f"{path}.{name}", f"{value} is above the pair's spec.limits.{limit_name}, {limit}"
                )
        if buffers and buffers.number * size_bytes(buffers.size) > size_bytes(limits.max_buffers_total):
            self.problem(
                f"{path}.buffers",
                f"{buffers.number} x {buffers.size} is above the pair's spec.limits.maxBuffersTotal,"
                f" {limits.max_buffers_total}",
            )

    def resolve_upstream(self, index: int, spec: LocationSpec) -> Upstream | None:
        if spec.upstream_ref is None:
            return None
        upstream = self.reads.upstream(self.key.namespace, spec.upstream_ref.name)
        path = f"spec.locations[{index}].upstreamRef.name"
        if isinstance(upstream, str):
            self.problem(path, f"Upstream {spec.upstream_ref.name} is not usable: {upstream}")
            return None
        if upstream is None:
            self.problem(
                path,
                f"Upstream {spec.upstream_ref.name} not found in namespace {self.key.namespace}"
                f" (or not attached to pair {self.pair.metadata.name})",
            )
        return upstream

    def tls_files(self, virtual_host: VirtualHostSpec) -> list[ManagedFile]:
        tls = virtual_host.spec.tls
        if tls is None:
            return []
        try:
            certificate, private_key = (
                self.reads.tls_text(self.key.namespace, tls.secret_name, key)
                for key in ("tls.crt", "tls.key")
            )
        except SecretUnusable as error:
            self.problem("spec.tls.secretName", str(error))
            return []
        for message in tls_pair_problems(certificate, private_key):
            self.problem("spec.tls.secretName", f"Secret {tls.secret_name}: {message}")
        if self.problems:
            return []
        tls_dir = f"{self.pair.spec.node_profile.nginx_managed_dir}/tls"
        stem = safe_stem(self.key.namespace, tls.secret_name)
        return [
            ManagedFile(path=f"{tls_dir}/{stem}.crt", content=certificate, mode=0o644),
            ManagedFile(path=f"{tls_dir}/{stem}.key", content=private_key, mode=0o600),
        ]

    def build(self, virtual_host: VirtualHostSpec) -> tuple[VirtualHost, list[ManagedFile]] | None:
        spec = virtual_host.spec
        pair_spec = self.pair.spec
        profile = pair_spec.node_profile
        log_formats = BUILTIN_LOG_FORMATS | {f.name for f in pair_spec.nginx.log_formats}
        cache_zones = {zone.name for zone in pair_spec.nginx.cache_zones}
        if spec.access_log.enabled and spec.access_log.format not in log_formats:
            self.problem(
                "spec.accessLog.format", f"log format {spec.access_log.format} is not defined by the pair"
            )
        declared = {(listener.port, listener.protocol) for listener in pair_spec.listeners}
        for index, listener in enumerate(spec.listen):
            if (listener.port, listener.protocol) not in declared:
                self.problem(
                    f"spec.listen[{index}]",
                    f"{listener.port}/{listener.protocol} is not a listener of pair {self.pair.metadata.name}"
                    f" (its listeners: {declared_listeners(self.pair)})",
                )
        self.check_limits("spec.proxy", spec.proxy)
        resolved = []
        for index, location_spec in enumerate(spec.locations):
            if location_spec.cache is not None and location_spec.cache.zone not in cache_zones:
                self.problem(
                    f"spec.locations[{index}].cache.zone",
                    f"cache zone {location_spec.cache.zone} is not defined by the pair",
                )
            self.check_limits(f"spec.locations[{index}].proxy", location_spec.proxy)
            resolved.append(
                (
                    location_spec,
                    self.resolve_upstream(index, location_spec),
                    self.resolve_url(index, location_spec),
                )
            )
        tls_files = self.tls_files(virtual_host)
        if self.problems:
            return None
        stem = safe_stem(self.key.namespace, self.key.name)
        listens = [Listen(listener.port, ssl=listener.protocol == "HTTPS") for listener in spec.listen]
        redirect = spec.tls is not None and spec.tls.redirect_http
        host = VirtualHost(
            source=self.key,
            path=f"{profile.nginx_managed_dir}/vhost_{stem}.conf",
            server_names=list(spec.server_names),
            listens=[listen for listen in listens if listen.ssl] if redirect else listens,
            redirect_listens=[listen for listen in listens if not listen.ssl] if redirect else [],
            tls=TlsFiles(tls_files[0].path, tls_files[1].path) if tls_files else None,
            access_log=AccessLog(f"{profile.nginx_log_dir}/{stem}.access.log", spec.access_log.format)
            if spec.access_log.enabled
            else None,
            error_log=ErrorLog(error_log_path(profile), spec.error_log.level),
            locations=[location(loc, spec.proxy, upstream, url) for loc, upstream, url in resolved],
        )
        return host, tls_files


def declared_listeners(pair: LoadBalancerPair) -> str:
    return ", ".join(f"{listener.port}/{listener.protocol}" for listener in pair.spec.listeners)


def claim_order(entry: tuple[ObjectKey, VirtualHostSpec]) -> tuple[datetime, str, str]:
    """Oldest first, like Gateway API: creationTimestamp never changes, so a newer object can never take
    what an older one holds, whatever its name. Ties (the API server counts whole seconds) go by
    namespace/name; an object without a timestamp (not from an API server) counts as the newest."""
    key, virtual_host = entry
    return (virtual_host.metadata.creation_timestamp or NEWEST, key.namespace, key.name)


def duplicate_server_names(virtual_hosts: Sequence[tuple[ObjectKey, VirtualHostSpec]]) -> list[Problem]:
    """Each server name (case-insensitively) belongs to the oldest VirtualHost that claims it. The others
    are told the name is taken, and by whom only within their own namespace: another tenant's object
    names are not theirs to read."""
    owners: dict[str, ObjectKey] = {}
    problems = []
    for key, virtual_host in sorted(virtual_hosts, key=claim_order):
        for index, server_name in enumerate(virtual_host.spec.server_names):
            owner = owners.setdefault(server_name.lower(), key)
            if owner != key:
                holder = owner if owner.namespace == key.namespace else "another VirtualHost"
                problems.append(
                    Problem(
                        key,
                        f"spec.serverNames[{index}]",
                        f"{server_name} is already served by {holder} (a host name belongs to its oldest "
                        "claimant)",
                    )
                )
    return problems
