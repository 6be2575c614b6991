"""Desired state: one pure function from a pair, the objects attached to it and the Secret values they
reference, to the typed render model the templates loop over, plus the problems found on the way.

The render model holds only strings, integers, booleans and lists, every string already allow-listed by
the API model or assembled here from allow-listed parts. An object with a problem is left out and
reported; the rest of the pair still renders. Only a problem of the pair itself (a Secret it needs is
missing) stops the build, with `PairConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lbpair.model.base import SpecError
from lbpair.model.files import ManagedFile
from lbpair.model.pair import LoadBalancerPair, LogFormat, NginxSettings, PairNode, PairSpec
from lbpair.model.patterns import PEM_PATTERN, VRRP_AUTH_PASS_PATTERN
from lbpair.model.upstream import Upstream, UpstreamSpec
from lbpair.model.virtualhost import Location, ProxySettings, VirtualHost

SCRIPT_NAME = "lbpair_check_nginx"
TRACK_PROCESS_NAME = "lbpair_nginx"
BUILTIN_LOG_FORMATS = frozenset({"combined"})
# Kubernetes names are DNS-1123 and `_` appears in neither names nor namespaces, so `<ns>_<name>` is
# unique; the check below is a second line of defence for everything that becomes a file name.
SAFE_STEM = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}_[a-z0-9][a-z0-9.-]{0,252}$")
BALANCING_DIRECTIVES = {"RoundRobin": "", "IPHash": "ip_hash", "LeastConn": "least_conn"}
# A waiting restart plus a start that is itself slow must not be cut off by keepalived's script timeout.
SCRIPT_TIMEOUT_MARGIN_SECONDS = 5


@dataclass(frozen=True, order=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class Problem:
    """Why an object is left out of the configuration, naming the field at fault."""

    object: ObjectKey
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.object}: {self.field}: {self.message}"


class PairConfigError(SpecError):
    """The pair itself cannot be configured (e.g. a Secret it references is missing)."""


@dataclass(frozen=True)
class TlsMaterial:
    """Contents of a kubernetes.io/tls Secret."""

    certificate_pem: str
    private_key_pem: str


@dataclass(frozen=True)
class SecretValues:
    """Secret data the reconciler resolved for the build."""

    vrrp_auth_pass: str | None = None
    tls: Mapping[tuple[str, str], TlsMaterial] = field(default_factory=dict)
    """(namespace, secret name) → material, for every VirtualHost tls.secretName that exists and has type
    kubernetes.io/tls."""


# --- The render model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamServerConfig:
    endpoint: str
    weight: int
    max_fails: int
    fail_timeout: str
    backup: bool
    down: bool


@dataclass(frozen=True)
class UpstreamConfig:
    source: ObjectKey
    path: str
    name: str
    balancing: str
    keepalive: int | None
    servers: list[UpstreamServerConfig]


@dataclass(frozen=True)
class HeaderConfig:
    name: str
    value: str


@dataclass(frozen=True)
class LocationConfig:
    match: str
    proxy_pass: str
    http11: bool
    headers: list[HeaderConfig]
    redirect: str | None
    connect_timeout: str | None
    send_timeout: str | None
    read_timeout: str | None
    buffer_size: str | None
    buffers: str | None
    busy_buffers_size: str | None
    temp_file_write_size: str | None
    max_temp_file_size: str | None
    next_upstream: str | None
    cache_zone: str | None
    cache_valid: list[str]


@dataclass(frozen=True)
class VirtualHostConfig:
    source: ObjectKey
    path: str
    server_names: str
    listens: list[str]
    redirect_listens: list[str]
    certificate_path: str | None
    private_key_path: str | None
    access_log: str | None
    error_log: str
    locations: list[LocationConfig]

    @property
    def has_root_location(self) -> bool:
        """A Prefix location "/" catches every path the others do not."""
        return any(location.match == "/" for location in self.locations)


@dataclass(frozen=True)
class LogFormatConfig:
    name: str
    escape: str
    format: str


@dataclass(frozen=True)
class NginxMainConfig:
    path: str
    user: str
    worker_processes: str
    pid_path: str
    error_log_path: str
    worker_connections: int
    worker_shutdown_timeout: str | None
    mime_types_path: str
    charset: str | None
    log_formats: list[LogFormatConfig]
    sendfile: bool
    tcp_nopush: bool
    tcp_nodelay: bool
    keepalive_timeout: str
    client_header_timeout: str | None
    client_body_timeout: str | None
    client_max_body_size: str | None
    client_body_buffer_size: str | None
    proxy_temp_path: str
    cache_paths: list[str]
    gzip: bool
    gzip_min_length: str | None
    gzip_buffers: str | None
    gzip_http_version: str | None
    gzip_comp_level: int | None
    gzip_types: str | None
    gzip_vary: bool
    status_path: str
    status_port: int
    includes: list[str]
    default_listens: list[str]
    """Every listen of every virtual host: each gets a default server that refuses unknown Host names,
    so a request for a name no VirtualHost declares never lands on whichever host nginx loaded first."""


@dataclass(frozen=True)
class CheckScriptConfig:
    path: str
    is_active_command: str
    start_command: str | None
    restart_wait_seconds: int


@dataclass(frozen=True)
class VrrpInstanceConfig:
    name: str
    state: str
    interface: str
    virtual_router_id: int
    priority: int
    advert_int: str
    nopreempt: bool
    preempt_delay: int
    unicast_src_ip: str | None
    unicast_peers: list[str]
    mcast_src_ip: str | None
    auth_pass: str | None
    virtual_addresses: list[str]
    garp_master_delay: int | None
    garp_master_repeat: int | None
    garp_master_refresh: int | None
    garp_lower_prio_repeat: int | None
    track_script: str | None
    track_process: str | None


@dataclass(frozen=True)
class VrrpScriptConfig:
    name: str
    path: str
    interval: int
    timeout: int
    weight: int
    fall: int
    rise: int


@dataclass(frozen=True)
class TrackProcessConfig:
    name: str
    process: str
    weight: int


@dataclass(frozen=True)
class KeepalivedConfig:
    path: str
    router_id: str
    vrrp_version: int
    script: VrrpScriptConfig | None
    track_process: TrackProcessConfig | None
    instances: list[VrrpInstanceConfig]


@dataclass(frozen=True)
class NodeConfig:
    name: str
    keepalived: KeepalivedConfig


@dataclass(frozen=True)
class DesiredState:
    """Everything the renderer needs for both nodes of one pair."""

    pair: ObjectKey
    nodes: list[NodeConfig]
    nginx: NginxMainConfig
    upstreams: list[UpstreamConfig]
    virtual_hosts: list[VirtualHostConfig]
    tls_files: list[ManagedFile]
    check_script: CheckScriptConfig | None

    @property
    def included(self) -> list[ObjectKey]:
        """The attached objects this state configures."""
        return sorted([u.source for u in self.upstreams] + [v.source for v in self.virtual_hosts])


@dataclass(frozen=True)
class BuildResult:
    state: DesiredState
    problems: list[Problem]


# --- Building -------------------------------------------------------------------------------------------


def safe_stem(namespace: str, name: str) -> str:
    """`<namespace>_<name>`, the only form in which user data reaches a file name or an nginx name."""
    stem = f"{namespace}_{name}"
    if not SAFE_STEM.match(stem):
        raise ValueError(f"unsafe object name {stem!r}")
    return stem


def format_advert_interval(milliseconds: int) -> str:
    """keepalived's advert_int in seconds: 1000 → "1", 100 → "0.1", 1250 → "1.25"."""
    seconds, remainder = divmod(milliseconds, 1000)
    return f"{seconds}.{remainder:03d}".rstrip("0").rstrip(".") if remainder else str(seconds)


def format_log_format(log_format: LogFormat) -> str:
    """The format string (rendered single-quoted): `${variable}` braces keep a variable from running into
    the next item, so literals never need quoting."""
    return "".join(
        f"${{{item.variable}}}" if item.variable else str(item.literal) for item in log_format.items
    )


def _attached_to(pair: LoadBalancerPair, namespace: str, name: str, pair_namespace: str | None) -> bool:
    return name == pair.metadata.name and (pair_namespace or namespace) == pair.metadata.namespace


def _namespace_allowed(
    pair: LoadBalancerPair, namespace: str, labels: Mapping[str, Mapping[str, str]]
) -> bool:
    allowed = pair.spec.allowed_namespaces
    if namespace == pair.metadata.namespace or allowed.from_ == "All":
        return True
    if allowed.from_ == "Same" or allowed.selector is None:
        return False
    namespace_labels = labels.get(namespace, {})
    return all(namespace_labels.get(key) == value for key, value in allowed.selector.match_labels.items())


def _nginx_main(spec: PairSpec, includes: list[str], hosts: list[VirtualHostConfig]) -> NginxMainConfig:
    nginx: NginxSettings = spec.nginx
    profile = spec.node_profile
    gzip = nginx.gzip
    return NginxMainConfig(
        path=profile.nginx_config_path,
        user=nginx.user,
        worker_processes=str(nginx.worker_processes or "auto"),
        pid_path=profile.nginx_pid_path,
        error_log_path=f"{profile.nginx_log_dir}/error.log",
        worker_connections=nginx.worker_connections,
        worker_shutdown_timeout=nginx.worker_shutdown_timeout,
        mime_types_path=profile.nginx_mime_types_path,
        charset=nginx.charset,
        log_formats=[
            LogFormatConfig(name=f.name, escape=f.escape, format=format_log_format(f))
            for f in nginx.log_formats
        ],
        sendfile=nginx.sendfile,
        tcp_nopush=nginx.tcp_nopush,
        tcp_nodelay=nginx.tcp_nodelay,
        keepalive_timeout=nginx.keepalive_timeout,
        client_header_timeout=nginx.client_header_timeout,
        client_body_timeout=nginx.client_body_timeout,
        client_max_body_size=nginx.client_max_body_size,
        client_body_buffer_size=nginx.client_body_buffer_size,
        proxy_temp_path=f"{profile.nginx_cache_dir}/temp",
        cache_paths=[
            " ".join(
                [
                    f"{profile.nginx_cache_dir}/{zone.name}",
                    f"levels={zone.levels}",
                    f"keys_zone={zone.name}:{zone.keys_zone_size}",
                ]
                + ([f"max_size={zone.max_size}"] if zone.max_size else [])
                + ([f"inactive={zone.inactive}"] if zone.inactive else [])
            )
            for zone in nginx.cache_zones
        ],
        gzip=gzip.enabled,
        gzip_min_length=gzip.min_length,
        gzip_buffers=f"{gzip.buffers.number} {gzip.buffers.size}" if gzip.buffers else None,
        gzip_http_version=gzip.http_version,
        gzip_comp_level=gzip.comp_level,
        gzip_types=" ".join(gzip.types) or None,
        gzip_vary=gzip.vary,
        status_path=f"{profile.nginx_managed_dir}/status.conf",
        status_port=profile.nginx_status_port,
        includes=includes,
        default_listens=sorted(
            {listen for host in hosts for listen in [*host.listens, *host.redirect_listens]}
        ),
    )


def _upstream_config(pair_spec: PairSpec, key: ObjectKey, spec: UpstreamSpec) -> UpstreamConfig:
    stem = safe_stem(key.namespace, key.name)
    if spec.hash_key is not None:
        balancing = f"hash ${spec.hash_key.variable}" + (" consistent" if spec.hash_key.consistent else "")
    else:
        balancing = BALANCING_DIRECTIVES[spec.method]
    return UpstreamConfig(
        source=key,
        path=f"{pair_spec.node_profile.nginx_managed_dir}/upstream_{stem}.conf",
        name=stem,
        balancing=balancing,
        keepalive=spec.keepalive,
        servers=[
            UpstreamServerConfig(
                endpoint=f"{server.address}:{server.port}",
                weight=server.weight,
                max_fails=server.max_fails,
                fail_timeout=server.fail_timeout,
                backup=server.backup,
                down=server.down,
            )
            for server in spec.servers
        ],
    )


def effective_proxy(defaults: ProxySettings, location: ProxySettings) -> ProxySettings:
    """The location's settings over the VirtualHost's: field by field, headers merged by name
    (case-insensitively, as HTTP compares them), the location's winning."""
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


def _location_config(
    location: Location, defaults: ProxySettings, upstream: UpstreamConfig | None
) -> LocationConfig:
    proxy = effective_proxy(defaults, location.proxy)
    headers = [
        HeaderConfig(name=header.name, value=f"${header.variable}" if header.variable else str(header.value))
        for header in proxy.headers
    ]
    keepalive = upstream is not None and upstream.keepalive is not None
    if keepalive and not any(header.name.lower() == "connection" for header in headers):
        # Upstream keep-alive needs HTTP/1.1 and no "Connection: close" from nginx.
        headers.append(HeaderConfig(name="Connection", value='""'))
    return LocationConfig(
        match=location.path if location.match_type == "Prefix" else f"= {location.path}",
        proxy_pass=f"http://{upstream.name}" if upstream else str(location.url),
        http11=keepalive,
        headers=headers,
        redirect=proxy.redirect.lower() if proxy.redirect else None,
        connect_timeout=proxy.connect_timeout,
        send_timeout=proxy.send_timeout,
        read_timeout=proxy.read_timeout,
        buffer_size=proxy.buffer_size,
        buffers=f"{proxy.buffers.number} {proxy.buffers.size}" if proxy.buffers else None,
        busy_buffers_size=proxy.busy_buffers_size,
        temp_file_write_size=proxy.temp_file_write_size,
        max_temp_file_size=proxy.max_temp_file_size,
        next_upstream=" ".join(proxy.next_upstream) or None,
        cache_zone=location.cache.zone if location.cache else None,
        cache_valid=[
            " ".join([*(str(code) for code in validity.codes), validity.time])
            for validity in (location.cache.valid if location.cache else [])
        ],
    )


@dataclass
class _VirtualHostBuilder:
    """Builds one VirtualHost's config, collecting problems instead of failing on the first."""

    pair: LoadBalancerPair
    key: ObjectKey
    upstreams: Mapping[tuple[str, str], UpstreamConfig]
    rejected_upstreams: Mapping[tuple[str, str], str]
    secrets: SecretValues
    problems: list[Problem] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.key, path, message))

    def resolve_upstream(self, index: int, location: Location) -> UpstreamConfig | None:
        if location.upstream_ref is None:
            return None
        reference = (self.key.namespace, location.upstream_ref.name)
        path = f"spec.locations[{index}].upstreamRef.name"
        if reference in self.rejected_upstreams:
            self.problem(
                path,
                f"Upstream {location.upstream_ref.name} is not usable: {self.rejected_upstreams[reference]}",
            )
        elif reference not in self.upstreams:
            self.problem(
                path,
                f"Upstream {location.upstream_ref.name} not found in namespace {self.key.namespace}"
                f" (or not attached to pair {self.pair.metadata.name})",
            )
        return self.upstreams.get(reference)

    def tls_files(self, virtual_host: VirtualHost) -> list[ManagedFile]:
        tls = virtual_host.spec.tls
        if tls is None:
            return []
        material = self.secrets.tls.get((self.key.namespace, tls.secret_name))
        if material is None:
            self.problem(
                "spec.tls.secretName", f"Secret {tls.secret_name} not found or not of type kubernetes.io/tls"
            )
            return []
        pem = re.compile(PEM_PATTERN)
        for name, content in (("tls.crt", material.certificate_pem), ("tls.key", material.private_key_pem)):
            if not pem.match(content) or len(content) > 1 << 20:
                self.problem("spec.tls.secretName", f"Secret {tls.secret_name}: {name} is not PEM")
        if self.problems:
            return []
        tls_dir = f"{self.pair.spec.node_profile.nginx_managed_dir}/tls"
        stem = safe_stem(self.key.namespace, tls.secret_name)
        return [
            ManagedFile(path=f"{tls_dir}/{stem}.crt", content=material.certificate_pem, mode=0o644),
            ManagedFile(path=f"{tls_dir}/{stem}.key", content=material.private_key_pem, mode=0o600),
        ]

    def build(self, virtual_host: VirtualHost) -> tuple[VirtualHostConfig, list[ManagedFile]] | None:
        spec = virtual_host.spec
        pair_spec = self.pair.spec
        log_formats = BUILTIN_LOG_FORMATS | {f.name for f in pair_spec.nginx.log_formats}
        cache_zones = {zone.name for zone in pair_spec.nginx.cache_zones}
        if spec.access_log.enabled and spec.access_log.format not in log_formats:
            self.problem(
                "spec.accessLog.format", f"log format {spec.access_log.format} is not defined by the pair"
            )
        for port in (listener.port for listener in spec.listen):
            if port == pair_spec.node_profile.nginx_status_port:
                self.problem("spec.listen", f"port {port} is the pair's status port")
        locations = []
        for index, location in enumerate(spec.locations):
            if location.cache is not None and location.cache.zone not in cache_zones:
                self.problem(
                    f"spec.locations[{index}].cache.zone",
                    f"cache zone {location.cache.zone} is not defined by the pair",
                )
            locations.append((location, self.resolve_upstream(index, location)))
        tls_files = self.tls_files(virtual_host)
        if self.problems:
            return None
        stem = safe_stem(self.key.namespace, self.key.name)
        profile = pair_spec.node_profile
        redirect = spec.tls is not None and spec.tls.redirect_http
        listens = [
            f"{listener.port} ssl" if listener.protocol == "HTTPS" else str(listener.port)
            for listener in spec.listen
        ]
        config = VirtualHostConfig(
            source=self.key,
            path=f"{profile.nginx_managed_dir}/vhost_{stem}.conf",
            server_names=" ".join(spec.server_names),
            listens=[listen for listen in listens if listen.endswith(" ssl")] if redirect else listens,
            redirect_listens=[listen for listen in listens if not listen.endswith(" ssl")]
            if redirect
            else [],
            certificate_path=tls_files[0].path if tls_files else None,
            private_key_path=tls_files[1].path if tls_files else None,
            access_log=(
                f"{profile.nginx_log_dir}/{stem}.access.log {spec.access_log.format}"
                if spec.access_log.enabled
                else None
            ),
            error_log=f"{profile.nginx_log_dir}/{stem}.error.log {spec.error_log.level}",
            locations=[_location_config(location, spec.proxy, upstream) for location, upstream in locations],
        )
        return config, tls_files


def _keepalived_config(pair: LoadBalancerPair, node: PairNode, auth_pass: str | None) -> KeepalivedConfig:
    spec = pair.spec
    vrrp = spec.vrrp
    check = spec.health_check
    peer = next(other for other in spec.nodes if other.name != node.name)
    high = max(n.priority for n in spec.nodes)
    low = min(n.priority for n in spec.nodes)
    # nopreempt and preempt_delay only work when keepalived starts in BACKUP (keepalived's rule).
    start_as_backup = vrrp.preempt.mode == "NoPreempt" or vrrp.preempt.delay_seconds > 0
    if spec.mode == "ActivePassive":
        groups = [(vrrp.virtual_router_id, max(spec.nodes, key=lambda n: n.priority).name, list(spec.vips))]
    else:
        second_id = vrrp.second_virtual_router_id or vrrp.virtual_router_id + 1
        groups = [
            (router_id, owner.name, [vip for vip in spec.vips if vip.preferred_node == owner.name])
            for router_id, owner in zip((vrrp.virtual_router_id, second_id), spec.nodes, strict=True)
        ]
    instances = []
    for number, (router_id, owner, vips) in enumerate(groups, start=1):
        holds = owner == node.name
        # ActiveActive: each node takes the higher priority for the instance whose VIPs prefer it.
        priority = node.priority if spec.mode == "ActivePassive" else (high if holds else low)
        instances.append(
            VrrpInstanceConfig(
                name=f"lbpair_{number}",
                state="MASTER" if holds and not start_as_backup else "BACKUP",
                interface=node.interface,
                virtual_router_id=router_id,
                priority=priority,
                advert_int=format_advert_interval(vrrp.advert_interval_milliseconds),
                nopreempt=vrrp.preempt.mode == "NoPreempt",
                preempt_delay=vrrp.preempt.delay_seconds if vrrp.preempt.mode == "Preempt" else 0,
                unicast_src_ip=node.vrrp_address if vrrp.peering == "Unicast" else None,
                unicast_peers=[peer.vrrp_address] if vrrp.peering == "Unicast" else [],
                mcast_src_ip=node.vrrp_address if vrrp.peering == "Multicast" else None,
                auth_pass=auth_pass,
                virtual_addresses=[f"{vip.address} dev {node.interface}" for vip in vips],
                garp_master_delay=vrrp.garp.master_delay_seconds,
                garp_master_repeat=vrrp.garp.master_repeat,
                garp_master_refresh=vrrp.garp.master_refresh_seconds,
                garp_lower_prio_repeat=vrrp.garp.lower_prio_repeat,
                track_script=SCRIPT_NAME if check.method == "Script" else None,
                track_process=TRACK_PROCESS_NAME if check.method == "TrackProcess" else None,
            )
        )
    script = None
    if check.method == "Script":
        timeout = (
            check.restart_wait_seconds + SCRIPT_TIMEOUT_MARGIN_SECONDS
            if check.restart_nginx
            else check.interval_seconds
        )
        script = VrrpScriptConfig(
            name=SCRIPT_NAME,
            path=spec.node_profile.check_script_path,
            interval=check.interval_seconds,
            timeout=timeout,
            weight=check.weight,
            fall=check.fall,
            rise=check.rise,
        )
    track_process = TrackProcessConfig(name=TRACK_PROCESS_NAME, process="nginx", weight=check.weight)
    return KeepalivedConfig(
        path=spec.node_profile.keepalived_config_path,
        router_id=node.name,
        vrrp_version=vrrp.version,
        script=script,
        track_process=track_process if check.method == "TrackProcess" else None,
        instances=instances,
    )


def _vrrp_auth_pass(pair: LoadBalancerPair, secrets: SecretValues) -> str | None:
    if pair.spec.vrrp.authentication is None:
        return None
    reference = pair.spec.vrrp.authentication.secret_ref
    value = secrets.vrrp_auth_pass
    if value is None or not re.match(VRRP_AUTH_PASS_PATTERN, value):
        raise PairConfigError(
            "LoadBalancerPair",
            f"{pair.metadata.namespace}/{pair.metadata.name}",
            [
                f"spec.vrrp.authentication.secretRef: Secret {reference.name} key {reference.key} is missing "
                "or not "
                "1-8 characters of [A-Za-z0-9._+=-]"
            ],
        )
    return value


def _duplicate_server_names(
    virtual_hosts: Sequence[tuple[ObjectKey, VirtualHost]],
) -> list[Problem]:
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


def _conflicting_ports(virtual_hosts: Sequence[tuple[ObjectKey, VirtualHost]]) -> list[Problem]:
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


def build_desired_state(
    pair: LoadBalancerPair,
    upstreams: Iterable[Upstream],
    virtual_hosts: Iterable[VirtualHost],
    secrets: SecretValues,
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> BuildResult:
    """The configuration of `pair` with every attached object that is usable; the others are reported.

    `upstreams` and `virtual_hosts` may include objects of other pairs (they are ignored).
    `namespace_labels` (namespace → labels) is needed only for allowedNamespaces.from: Selector.
    Raises PairConfigError when the pair itself cannot be configured.
    """
    labels = namespace_labels or {}
    problems: list[Problem] = []
    pair_key = ObjectKey("LoadBalancerPair", pair.metadata.namespace, pair.metadata.name)

    def attached(
        kind: str, objects: Iterable[Upstream] | Iterable[VirtualHost]
    ) -> list[tuple[ObjectKey, Upstream | VirtualHost]]:
        chosen = []
        for item in objects:
            meta, ref = item.metadata, item.spec.pair_ref
            if not _attached_to(pair, meta.namespace, ref.name, ref.namespace):
                continue
            key = ObjectKey(kind, meta.namespace, meta.name)
            if _namespace_allowed(pair, meta.namespace, labels):
                chosen.append((key, item))
            else:
                problems.append(
                    Problem(key, "spec.pairRef", f"{pair_key} does not allow namespace {meta.namespace}")
                )
        return sorted(chosen, key=lambda entry: entry[0])

    upstream_configs = {
        (key.namespace, key.name): _upstream_config(pair.spec, key, item.spec)
        for key, item in attached("Upstream", upstreams)
        if isinstance(item, Upstream)
    }
    rejected_upstreams = {
        (p.object.namespace, p.object.name): p.message for p in problems if p.object.kind == "Upstream"
    }
    hosts = [
        (key, item) for key, item in attached("VirtualHost", virtual_hosts) if isinstance(item, VirtualHost)
    ]
    conflicts = _duplicate_server_names(hosts) + _conflicting_ports(hosts)
    problems += conflicts
    in_conflict = {problem.object for problem in conflicts}
    host_configs: list[VirtualHostConfig] = []
    tls_files: list[ManagedFile] = []
    for key, virtual_host in hosts:
        if key in in_conflict:
            continue
        builder = _VirtualHostBuilder(pair, key, upstream_configs, rejected_upstreams, secrets)
        built = builder.build(virtual_host)
        problems += builder.problems
        if built is not None:
            host_configs.append(built[0])
            tls_files += built[1]
    auth_pass = _vrrp_auth_pass(pair, secrets)
    upstream_list = [upstream_configs[reference] for reference in sorted(upstream_configs)]
    check = pair.spec.health_check
    profile = pair.spec.node_profile
    state = DesiredState(
        pair=pair_key,
        nodes=[NodeConfig(node.name, _keepalived_config(pair, node, auth_pass)) for node in pair.spec.nodes],
        nginx=_nginx_main(
            pair.spec, [u.path for u in upstream_list] + [v.path for v in host_configs], host_configs
        ),
        upstreams=upstream_list,
        virtual_hosts=host_configs,
        tls_files=sorted({f.path: f for f in tls_files}.values(), key=lambda f: f.path),
        check_script=(
            CheckScriptConfig(
                path=profile.check_script_path,
                is_active_command=f"systemctl is-active --quiet {profile.nginx_service}",
                start_command=f"systemctl start {profile.nginx_service}" if check.restart_nginx else None,
                restart_wait_seconds=check.restart_wait_seconds,
            )
            if check.method == "Script"
            else None
        ),
    )
    return BuildResult(state=state, problems=sorted(problems))
