"""The pair's nginx.conf from its spec: process settings, http defaults, includes, default servers."""

from __future__ import annotations

from collections.abc import Sequence

from lbpair.model.node_profile import NodeProfile
from lbpair.model.pair import PairSpec
from lbpair.render.model import (
    Buffers,
    CacheZone,
    ClientLimits,
    Gzip,
    Listen,
    LogFormat,
    LogItem,
    NginxMain,
    VirtualHost,
)

POINTER_BYTES = 8  # nginx's hash element layout on 64-bit machines
ELEMENTS_PER_BUCKET = 4
MIN_BUCKET_BYTES = 64  # one cache line, nginx's own minimum
MIN_HASH_SIZE = 512  # nginx's default server_names_hash_max_size
# What a worker holds besides the log files, the listeners and two per connection (client and upstream):
# its channel to the master, the event fd, files being sent or cached, resolver sockets.
WORKER_SPARE_FILES = 64
# What nginx's proxy module puts in the same hashes as the headers a location sets (ngx_http_proxy_headers
# and the response headers it hides by default).
NGINX_PROXY_HEADERS = (
    "Host",
    "Connection",
    "Content-Length",
    "Transfer-Encoding",
    "TE",
    "Keep-Alive",
    "Expect",
    "Upgrade",
    "Date",
    "Server",
    "X-Pad",
    "X-Accel-Expires",
    "X-Accel-Redirect",
    "X-Accel-Limit-Rate",
    "X-Accel-Buffering",
    "X-Accel-Charset",
)


def _power_of_two_at_least(value: int) -> int:
    return 1 << max(value - 1, 0).bit_length()


def hash_sizes(names: Sequence[str]) -> tuple[int, int]:
    """The bucket size and max size (e.g. server_names_hash_bucket_size and _max_size) that let nginx build
    its hash of these names without "could not build [optimal] ..._hash" (measured with nginx 1.22 up to
    5,000 hosts, and names of up to 253 characters; header names of up to 64).

    A bucket holds a few of the longest element (a pointer, then the name and 2 bytes, aligned to a
    pointer); the table may grow to twice the number of names, so a size without overfull buckets exists.
    """
    longest = max((len(name) for name in names), default=0)
    element = POINTER_BYTES + -(-(longest + 2) // POINTER_BYTES) * POINTER_BYTES
    bucket = max(MIN_BUCKET_BYTES, _power_of_two_at_least(ELEMENTS_PER_BUCKET * element))
    return bucket, max(MIN_HASH_SIZE, _power_of_two_at_least(2 * len(names)))


def error_log_path(profile: NodeProfile) -> str:
    """The pair's one error log: nginx's own, and every VirtualHost's (nginx names the server and the
    request in each line), so a VirtualHost costs nginx no file descriptor for its errors."""
    return f"{profile.nginx_log_dir}/error.log"


def worker_open_files(log_paths: set[str], listeners: int, worker_connections: int) -> int:
    """worker_rlimit_nofile: the files a worker of this config may hold open (every log file, every
    listener, a client and an upstream socket per connection, spares), as a power of two so that it
    changes (and nginx.conf with it) only when the config doubles."""
    needed = len(log_paths) + listeners + 2 * worker_connections + WORKER_SPARE_FILES
    return _power_of_two_at_least(needed)


def status_path(spec: PairSpec) -> str:
    return f"{spec.node_profile.nginx_managed_dir}/status.conf"


def nginx_main(spec: PairSpec, includes: list[str], hosts: Sequence[VirtualHost]) -> NginxMain:
    nginx = spec.nginx
    profile = spec.node_profile
    gzip = nginx.gzip
    bucket_size, max_size = hash_sizes([name for host in hosts for name in host.server_names])
    header_names = {h.name.lower() for host in hosts for location in host.locations for h in location.headers}
    headers_bucket_size, headers_max_size = hash_sizes(sorted(header_names) + list(NGINX_PROXY_HEADERS))
    return NginxMain(
        path=profile.nginx_config_path,
        user=nginx.user,
        worker_processes=nginx.worker_processes,
        pid_path=profile.nginx_pid_path,
        error_log_path=error_log_path(profile),
        worker_connections=nginx.worker_connections,
        worker_rlimit_nofile=worker_open_files(
            {error_log_path(profile)} | {host.access_log.path for host in hosts if host.access_log},
            listeners=len(spec.listeners) + 1,  # and the status server's
            worker_connections=nginx.worker_connections,
        ),
        worker_shutdown_timeout=nginx.worker_shutdown_timeout,
        mime_types_path=profile.nginx_mime_types_path,
        charset=nginx.charset,
        log_formats=[
            LogFormat(
                name=log_format.name,
                escape=log_format.escape,
                items=[LogItem(variable=item.variable, literal=item.literal) for item in log_format.items],
            )
            for log_format in nginx.log_formats
        ],
        sendfile=nginx.sendfile,
        tcp_nopush=nginx.tcp_nopush,
        tcp_nodelay=nginx.tcp_nodelay,
        keepalive_timeout=nginx.keepalive_timeout,
        client=ClientLimits(
            header_timeout=nginx.client_header_timeout,
            body_timeout=nginx.client_body_timeout,
            max_body_size=nginx.client_max_body_size,
            body_buffer_size=nginx.client_body_buffer_size,
        ),
        proxy_temp_path=f"{profile.nginx_cache_dir}/temp",
        cache_zones=[
            CacheZone(
                name=zone.name,
                path=f"{profile.nginx_cache_dir}/{zone.name}",
                levels=zone.levels,
                keys_zone_size=zone.keys_zone_size,
                max_size=zone.max_size,
                inactive=zone.inactive,
            )
            for zone in nginx.cache_zones
        ],
        gzip=Gzip(
            enabled=gzip.enabled,
            min_length=gzip.min_length,
            buffers=Buffers(gzip.buffers.number, gzip.buffers.size) if gzip.buffers else None,
            http_version=gzip.http_version,
            comp_level=gzip.comp_level,
            types=list(gzip.types),
            vary=gzip.vary,
        ),
        server_names_hash_bucket_size=bucket_size,
        server_names_hash_max_size=max_size,
        proxy_headers_hash_bucket_size=headers_bucket_size,
        proxy_headers_hash_max_size=headers_max_size,
        status_path=status_path(spec),
        status_port=profile.nginx_status_port,
        includes=includes,
        default_listens=[
            Listen(listener.port, ssl=listener.protocol == "HTTPS") for listener in spec.listeners
        ],
    )
