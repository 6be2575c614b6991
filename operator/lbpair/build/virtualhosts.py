"""VirtualHost specs → render-model virtual hosts (and their TLS files), with per-object problems.

An object with a problem is left out and reported; the rest of the pair still renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lbpair.build.problems import Problem
from lbpair.build.resources import SecretReader, SecretUnusable
from lbpair.build.tls import tls_pair_problems
from lbpair.build.upstreams import safe_stem
from lbpair.model.files import ManagedFile
from lbpair.model.pair import LoadBalancerPair
from lbpair.model.secret import TLS_SECRET_TYPE
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
    TlsFiles,
    Upstream,
    VirtualHost,
)

BUILTIN_LOG_FORMATS = frozenset({"combined"})
NO_OVERRIDES = ProxySettings()


def effective_proxy(defaults: ProxySettings, location: ProxySettings) -> ProxySettings:
    """The location's settings over the VirtualHost's: field by field, headers merged by name
    (case-insensitively, as HTTP compares them), the location's winning."""
    if location == NO_OVERRIDES:
        return defaults  # the common case, and validating a merged copy is the costly part
    headers = {header.name.lower(): header for header in defaults.headers}
    headers.update({header.name.lower(): header for header in location.headers})
    merged = {
        name: getattr(location, name)
        if getattr(location, name) not in (None, [])
        else getattr(defaults, name)
        for name in ProxySettings.model_fields
    }
    merged["headers"] = list(headers.values())
    return ProxySettings.model_validate(merged)


def location(spec: LocationSpec, defaults: ProxySettings, upstream: Upstream | None) -> Location:
    proxy = effective_proxy(defaults, spec.proxy)
    headers = [Header(name=h.name, variable=h.variable, value=h.value or "") for h in proxy.headers]
    keepalive = upstream is not None and upstream.keepalive is not None
    if keepalive and not any(header.name.lower() == "connection" for header in headers):
        # Upstream keep-alive needs HTTP/1.1 and no "Connection: close" from nginx.
        headers.append(Header(name="Connection"))
    return Location(
        path=spec.path,
        exact=spec.match_type == "Exact",
        upstream=upstream.name if upstream else None,
        url=None if upstream else spec.url,
        http11=keepalive,
        headers=headers,
        redirect="off" if proxy.redirect == "Off" else ("default" if proxy.redirect else None),
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
    upstreams: Mapping[tuple[str, str], Upstream]
    rejected_upstreams: Mapping[tuple[str, str], str]
    """Upstreams of this pair that are left out, with why."""
    secrets: SecretReader
    problems: list[Problem] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.key, path, message))

    def resolve_upstream(self, index: int, spec: LocationSpec) -> Upstream | None:
        if spec.upstream_ref is None:
            return None
        reference = (self.key.namespace, spec.upstream_ref.name)
        path = f"spec.locations[{index}].upstreamRef.name"
        if reference in self.rejected_upstreams:
            self.problem(
                path, f"Upstream {spec.upstream_ref.name} is not usable: {self.rejected_upstreams[reference]}"
            )
        elif reference not in self.upstreams:
            self.problem(
                path,
                f"Upstream {spec.upstream_ref.name} not found in namespace {self.key.namespace}"
                f" (or not attached to pair {self.pair.metadata.name})",
            )
        return self.upstreams.get(reference)

    def tls_files(self, virtual_host: VirtualHostSpec) -> list[ManagedFile]:
        tls = virtual_host.spec.tls
        if tls is None:
            return []
        try:
            certificate, private_key = (
                self.secrets.text(self.key.namespace, tls.secret_name, key, secret_type=TLS_SECRET_TYPE)
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
        for port in (listener.port for listener in spec.listen):
            if port == profile.nginx_status_port:
                self.problem("spec.listen", f"port {port} is the pair's status port")
        resolved = []
        for index, location_spec in enumerate(spec.locations):
            if location_spec.cache is not None and location_spec.cache.zone not in cache_zones:
                self.problem(
                    f"spec.locations[{index}].cache.zone",
                    f"cache zone {location_spec.cache.zone} is not defined by the pair",
                )
            resolved.append((location_spec, self.resolve_upstream(index, location_spec)))
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
            error_log=ErrorLog(f"{profile.nginx_log_dir}/{stem}.error.log", spec.error_log.level),
            locations=[location(loc, spec.proxy, upstream) for loc, upstream in resolved],
        )
        return host, tls_files


def duplicate_server_names(virtual_hosts: Sequence[tuple[ObjectKey, VirtualHostSpec]]) -> list[Problem]:
    """Each server name belongs to the first VirtualHost (by namespace/name) that claims it."""
    owners: dict[str, ObjectKey] = {}
    problems = []
    for key, virtual_host in virtual_hosts:
        for index, server_name in enumerate(virtual_host.spec.server_names):
            owner = owners.setdefault(server_name.lower(), key)
            if owner != key:
                problems.append(
                    Problem(key, f"spec.serverNames[{index}]", f"{server_name} is already served by {owner}")
                )
    return problems


def conflicting_ports(virtual_hosts: Sequence[tuple[ObjectKey, VirtualHostSpec]]) -> list[Problem]:
    """A port is HTTPS for every VirtualHost or for none (nginx's `ssl` belongs to the listening socket)."""
    protocols: dict[int, tuple[str, ObjectKey]] = {}
    problems = []
    for key, virtual_host in virtual_hosts:
        for index, listener in enumerate(virtual_host.spec.listen):
            protocol, owner = protocols.setdefault(listener.port, (listener.protocol, key))
            if protocol != listener.protocol:
                problems.append(
                    Problem(key, f"spec.listen[{index}]", f"port {listener.port} is {protocol} for {owner}")
                )
    return problems
