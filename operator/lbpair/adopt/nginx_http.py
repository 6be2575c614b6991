"""nginx's main, events and http contexts -> a pair's spec.nginx, and upstream blocks -> Upstream specs.

Pure. Values are copied as text and left for the model to judge (see manifests.py); what has no field at
all is a Note. Server blocks are nginx_servers.py's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lbpair.adopt.nginx_conf import NginxStatement
from lbpair.adopt.notes import Note, shorten
from lbpair.model.node_profile import NodeProfile

DEFAULT_PID_PATH = "/run/nginx.pid"
LOG_LITERAL_MAX = 32
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
_ON_OFF = {"on": True, "off": False}
# http-level directives with a spec.nginx field of the same meaning, by their field name.
_HTTP_TEXT = {
    "charset": "charset",
    "client_header_timeout": "clientHeaderTimeout",
    "client_body_timeout": "clientBodyTimeout",
    "client_max_body_size": "clientMaxBodySize",
    "client_body_buffer_size": "clientBodyBufferSize",
}
_HTTP_FLAGS = {"sendfile": "sendfile", "tcp_nopush": "tcpNopush", "tcp_nodelay": "tcpNodelay"}
_GZIP_TEXT = {"gzip_min_length": "minLength", "gzip_http_version": "httpVersion"}
# The MIME type map (mime.types, included into http): the operator includes the node's own
# (nodeProfile.nginxMimeTypesPath), so nothing is lost.
_INCLUDED_BY_OPERATOR = frozenset({"types"})
OPERATOR_CACHE_DIR = NodeProfile().nginx_cache_dir
MOVED_ZONE_SUFFIX = "_adopted"
UPSTREAM_METHODS = {"ip_hash": "IPHash", "least_conn": "LeastConn"}


@dataclass
class HttpImport:
    """spec.nginx and spec.nodeProfile fields of the pair, the Upstreams by their nginx name, and the http
    context's statements nginx_servers.py needs (server blocks, proxy_* defaults)."""

    settings: dict[str, Any] = field(default_factory=dict)
    node_profile: dict[str, Any] = field(default_factory=dict)
    upstreams: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache_zones: dict[str, str] = field(default_factory=dict)
    """Cache zones imported under a new name: nginx's name -> the pair's."""
    servers: list[NginxStatement] = field(default_factory=list)
    proxy_defaults: list[NginxStatement] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def note(self, statement: NginxStatement, reason: str) -> None:
        self.notes.append(Note(statement.source, shorten([statement.directive, *statement.args]), reason))


def import_main(statements: tuple[NginxStatement, ...]) -> HttpImport:
    """The main context and everything below it but the server blocks' insides."""
    result = HttpImport()
    for statement in statements:
        handler = _MAIN.get(statement.directive)
        if handler is not None and not statement.args and statement.block is None:
            result.note(statement, "has no value; not imported")
        elif handler is not None:
            handler(result, statement)
        else:
            result.note(statement, "no field of LoadBalancerPair.spec.nginx expresses it; not imported")
    return result


def _user(result: HttpImport, statement: NginxStatement) -> None:
    result.settings["user"] = statement.args[0]
    if len(statement.args) > 1:
        result.note(statement, "the group is not expressed: the workers run with the user's own group")


def _worker_processes(result: HttpImport, statement: NginxStatement) -> None:
    if statement.args[0] != "auto":
        result.settings["workerProcesses"] = _integer(statement.args[0])


def _pid(result: HttpImport, statement: NginxStatement) -> None:
    if statement.args[0] != DEFAULT_PID_PATH:
        result.node_profile["nginxPidPath"] = statement.args[0]


def _error_log(result: HttpImport, statement: NginxStatement) -> None:
    result.note(statement, "the operator writes nginx's error log to <nodeProfile.nginxLogDir>/error.log")


def _events(result: HttpImport, statement: NginxStatement) -> None:
    for inner in statement.block or ():
        if inner.directive == "worker_connections" and inner.args:
            result.settings["workerConnections"] = _integer(inner.args[0])
        else:
            result.note(inner, "no field expresses it; not imported")


def _http(result: HttpImport, statement: NginxStatement) -> None:
    for inner in statement.block or ():
        directive = inner.directive
        if not inner.args and inner.block is None:
            result.note(inner, "has no value; not imported")
        elif directive == "server":
            result.servers.append(inner)
        elif directive.startswith("proxy_") and directive not in ("proxy_cache_path", "proxy_temp_path"):
            result.proxy_defaults.append(inner)
        elif directive in _HTTP_DIRECTIVES:
            _HTTP_DIRECTIVES[directive](result, inner)
        elif directive in _HTTP_TEXT:
            result.settings[_HTTP_TEXT[directive]] = inner.args[0]
        elif directive in _HTTP_FLAGS:
            result.settings[_HTTP_FLAGS[directive]] = _ON_OFF.get(inner.args[0], inner.args[0])
        elif directive in _INCLUDED_BY_OPERATOR:
            continue
        elif directive.startswith("gzip"):
            _gzip(result, inner)
        else:
            result.note(inner, "no field of LoadBalancerPair.spec.nginx expresses it; not imported")


def _default_type(result: HttpImport, statement: NginxStatement) -> None:
    if statement.args[0] != "application/octet-stream":
        result.note(statement, "the operator renders default_type application/octet-stream")


def _keepalive_timeout(result: HttpImport, statement: NginxStatement) -> None:
    result.settings["keepaliveTimeout"] = statement.args[0]
    if len(statement.args) > 1:
        result.note(statement, "the Keep-Alive header timeout (second value) is not expressed")


def _proxy_temp_path(result: HttpImport, statement: NginxStatement) -> None:
    result.note(statement, "the operator keeps proxy temp files under nodeProfile.nginxCacheDir")


def _access_log(result: HttpImport, statement: NginxStatement) -> None:
    result.note(statement, "the operator logs per VirtualHost (spec.accessLog); the http-level log is off")


def _log_format(result: HttpImport, statement: NginxStatement) -> None:
    name, *rest = statement.args
    escape = "default"
    if rest and rest[0].startswith("escape="):
        escape, rest = rest[0].removeprefix("escape="), rest[1:]
    formats = result.settings.setdefault("logFormats", [])
    formats.append({"name": name, "escape": escape, "items": log_format_items("".join(rest))})


def log_format_items(text: str) -> list[dict[str, str]]:
    """A log format string -> LogFormat items: `$name`/`${name}` variables and the text between them
    (literals longer than the model allows are split; what they may contain is the model's to judge)."""
    items: list[dict[str, str]] = []
    position = 0
    for match in _VARIABLE.finditer(text):
        items.extend(_literals(text[position : match.start()]))
        items.append({"variable": match.group(1) or match.group(2)})
        position = match.end()
    items.extend(_literals(text[position:]))
    return items


def _literals(text: str) -> list[dict[str, str]]:
    return [{"literal": text[i : i + LOG_LITERAL_MAX]} for i in range(0, len(text), LOG_LITERAL_MAX)]


def _gzip(result: HttpImport, statement: NginxStatement) -> None:
    gzip = result.settings.setdefault("gzip", {})
    directive, args = statement.directive, statement.args
    if directive == "gzip":
        gzip["enabled"] = _ON_OFF.get(args[0], args[0])
    elif directive == "gzip_vary":
        gzip["vary"] = _ON_OFF.get(args[0], args[0])
    elif directive in _GZIP_TEXT:
        gzip[_GZIP_TEXT[directive]] = args[0]
    elif directive == "gzip_buffers":
        gzip["buffers"] = {"number": _integer(args[0]), "size": args[1]}
    elif directive == "gzip_comp_level":
        gzip["compLevel"] = _integer(args[0])
    elif directive == "gzip_types":
        gzip["types"] = [mime for mime in args if mime != "text/html"]
    else:
        result.note(statement, "no field of spec.nginx.gzip expresses it; not imported")


def _proxy_cache_path(result: HttpImport, statement: NginxStatement) -> None:
    zone: dict[str, Any] = {}
    for arg in statement.args[1:]:
        key, _, value = arg.partition("=")
        if key == "keys_zone":
            zone["name"], _, zone["keysZoneSize"] = value.partition(":")
        elif key in ("levels", "inactive"):
            zone[key] = value
        elif key == "max_size":
            zone["maxSize"] = value
        else:
            result.note(statement, f"{shorten([arg])}: no field of spec.nginx.cacheZones expresses it")
    name = str(zone.get("name", ""))
    if statement.args[0] != f"{OPERATOR_CACHE_DIR}/{name}":
        # A running nginx refuses a reload that gives a cache zone another path ("cache ... uses the ...
        # cache path while previously it used ..."): under a new name the zone is a new one, and the
        # operator takes over with a reload instead of a restart.
        zone["name"] = result.cache_zones[name] = f"{name}{MOVED_ZONE_SUFFIX}"[:63]
        result.note(
            statement,
            f"the zone is renamed {zone['name']}, its files move to {OPERATOR_CACHE_DIR}/{zone['name']} "
            "(it starts empty): nginx keeps a zone's path across reloads, a new zone can move",
        )
    result.settings.setdefault("cacheZones", []).append(zone)


def _upstream(result: HttpImport, statement: NginxStatement) -> None:
    spec: dict[str, Any] = {"servers": []}
    for inner in statement.block or ():
        directive, args = inner.directive, inner.args
        if not args and directive not in UPSTREAM_METHODS:
            result.note(inner, "has no value; not imported")
        elif directive == "server":
            spec["servers"].append(_upstream_server(result, inner))
        elif directive in UPSTREAM_METHODS:
            spec["method"] = UPSTREAM_METHODS[directive]
        elif directive == "hash":
            spec["method"] = "Hash"
            spec["hashKey"] = {"variable": args[0].removeprefix("$"), "consistent": "consistent" in args[1:]}
        elif directive == "keepalive":
            spec["keepalive"] = _integer(args[0])
        else:
            result.note(inner, "no field of Upstream.spec expresses it; not imported")
    result.upstreams[statement.args[0]] = spec


def _upstream_server(result: HttpImport, statement: NginxStatement) -> dict[str, Any]:
    host, _, port = (
        statement.args[0].rpartition(":") if ":" in statement.args[0] else (statement.args[0], "", "")
    )
    server: dict[str, Any] = {"address": host, "port": _integer(port) if port else 80}
    for parameter in statement.args[1:]:
        key, _, value = parameter.partition("=")
        if key in ("weight", "max_fails"):
            server["weight" if key == "weight" else "maxFails"] = _integer(value)
        elif key == "fail_timeout":
            server["failTimeout"] = value
        elif key in ("backup", "down") and not value:
            server[key] = True
        else:
            result.note(statement, f"{shorten([parameter])}: no field of Upstream servers expresses it")
    return server


def _integer(text: str) -> int | str:
    """A whole number as an int; anything else stays text, for the model to refuse with the field named."""
    return int(text) if text.isdigit() and len(text) < 10 else text  # noqa: PLR2004 - fits an int32


_MAIN: dict[str, Callable[[HttpImport, NginxStatement], None]] = {
    "user": _user,
    "worker_processes": _worker_processes,
    "pid": _pid,
    "error_log": _error_log,
    "events": _events,
    "http": _http,
}
_HTTP_DIRECTIVES: dict[str, Callable[[HttpImport, NginxStatement], None]] = {
    "default_type": _default_type,
    "keepalive_timeout": _keepalive_timeout,
    "access_log": _access_log,
    "log_format": _log_format,
    "proxy_cache_path": _proxy_cache_path,
    "proxy_temp_path": _proxy_temp_path,
    "upstream": _upstream,
    "error_log": _error_log,
}
