"""nginx server blocks -> VirtualHost specs, with proxy settings as nginx inherits them.

Pure. proxy_* directives are read at each level (http, server, location) and merged as nginx merges them:
a location's own value wins, and proxy_set_header/proxy_cache_valid at a level replace the whole list of the
level above. Settings every location of a host ends up with become the VirtualHost's proxy defaults, the
rest stay on the locations, so the manifests read like the hand-written ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, get_args

from lbpair.adopt.nginx_conf import NginxStatement
from lbpair.adopt.notes import Note, shorten
from lbpair.model.virtualhost import HeaderVariable

_PROXY_TEXT = {
    "proxy_connect_timeout": "connectTimeout",
    "proxy_send_timeout": "sendTimeout",
    "proxy_read_timeout": "readTimeout",
    "proxy_buffer_size": "bufferSize",
    "proxy_busy_buffers_size": "busyBuffersSize",
    "proxy_temp_file_write_size": "tempFileWriteSize",
    "proxy_max_temp_file_size": "maxTempFileSize",
}
_HEADER_VARIABLES = frozenset(get_args(HeaderVariable))
_REDIRECTS = {"off": "Off", "default": "Default"}
_WILDCARD_ADDRESSES = ("", "*", "0.0.0.0")  # noqa: S104 - listen addresses read, nothing bound
_PROXY_PASS = re.compile(r"^(?P<scheme>https?)://(?P<host>[^/:]+)(?P<port>:[0-9]+)?(?P<path>/.*)?$")
_CACHE_ZONE, _CACHE_VALID = "cache.zone", "cache.valid"
# Codes nginx caches when proxy_cache_valid names none.
_DEFAULT_CACHE_CODES = [200, 301, 302]
_NOT_A_NAME = re.compile(r"[^a-z0-9.-]+")


@dataclass
class ServersImport:
    """VirtualHost specs by object name and the listeners they need."""

    virtual_hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: set[int] = field(default_factory=set)
    cache_zones: dict[str, str] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)

    def note(self, statement: NginxStatement, reason: str) -> None:
        self.notes.append(Note(statement.source, shorten([statement.directive, *statement.args]), reason))


def import_servers(
    servers: Iterable[NginxStatement],
    http_proxy: Iterable[NginxStatement],
    upstreams: dict[str, str],
    cache_zones: dict[str, str],
) -> ServersImport:
    """`upstreams` maps each upstream block's nginx name to its Upstream's object name, `cache_zones` the
    cache zones imported under another name to that name."""
    result = ServersImport(cache_zones=cache_zones)
    http_level = _proxy_level(result, http_proxy)
    servers = list(servers)
    if servers and not any("default_server" in s.args for block in servers for s in block.children("listen")):
        result.note(
            servers[0],
            "this first server block also answered Host names no server_name matches; the operator "
            "closes those connections (444)",
        )
    for server in servers:
        _import_server(result, server, http_level, upstreams)
    return result


def object_name(text: str, taken: Iterable[str]) -> str:
    """A Kubernetes object name (DNS subdomain) for an nginx name, unique among `taken`."""
    base = _NOT_A_NAME.sub("-", text.lower().replace("*.", "wildcard.")).strip("-.")[:240] or "imported"
    name, number = base, 2
    while name in set(taken):
        name, number = f"{base}-{number}", number + 1
    return name


def _import_server(
    result: ServersImport, server: NginxStatement, http_level: dict[str, Any], upstreams: dict[str, str]
) -> None:
    names: list[str] = []
    ports: list[int] = []
    spec: dict[str, Any] = {}
    server_proxy: list[NginxStatement] = []
    locations: list[NginxStatement] = []
    for statement in server.block or ():
        directive = statement.directive
        if directive == "listen":
            ports.extend(_listen_port(result, statement))
        elif directive == "server_name":
            names.extend(_server_names(result, statement))
        elif directive == "access_log" and statement.args:
            spec["accessLog"] = _access_log(result, statement)
        elif directive == "error_log" and statement.args:
            spec["errorLog"] = {"level": statement.args[1] if len(statement.args) > 1 else "error"}
            result.note(
                statement, "written to <nodeProfile.nginxLogDir>/<namespace>_<name>.error.log instead"
            )
        elif directive == "location":
            locations.append(statement)
        elif directive.startswith("proxy_"):
            server_proxy.append(statement)
        else:
            result.note(statement, "no field of VirtualHost.spec expresses it; not imported")
    if not names:
        result.note(server, "server block without a usable server_name; not imported")
        return
    server_level = {**http_level, **_proxy_level(result, server_proxy)}
    imported = [
        found for location in locations if (found := _location(result, location, server_level, upstreams))
    ]
    if not imported:
        result.note(server, f"server {names[0]}: no location proxies anywhere; not imported")
        return
    ports = ports or [80]
    result.ports.update(ports)
    spec.update(serverNames=names, listen=[{"port": port} for port in sorted(set(ports))])
    spec["proxy"], spec["locations"] = _hoist_common(imported)
    result.virtual_hosts[object_name(names[0], result.virtual_hosts)] = spec


def _listen_port(result: ServersImport, statement: NginxStatement) -> list[int]:
    address, flags = statement.args[0], statement.args[1:]
    host, _, port = address.rpartition(":") if ":" in address else ("", "", address)
    if host.startswith("[") or address.startswith("unix:") or not port.isdigit():
        result.note(statement, "only IPv4 TCP ports are expressed; this listener is not imported")
        return []
    if "ssl" in flags:
        result.note(statement, "TLS is not imported: create a kubernetes.io/tls Secret and set spec.tls")
        return []
    if host not in _WILDCARD_ADDRESSES:
        result.note(statement, "the operator listens on every address of the node (the port is kept)")
    if set(flags) - {"default_server"}:
        result.note(statement, f"{shorten(list(flags))}: listen parameters are not expressed")
    return [int(port)]


def _server_names(result: ServersImport, statement: NginxStatement) -> list[str]:
    names = []
    for name in statement.args:
        if name in ("", "_") or name.startswith("~"):
            result.note(
                statement, f"{shorten([name])}: catch-all and regular-expression names are not expressed"
            )
        else:
            names.append(name)
    return names


def _access_log(result: ServersImport, statement: NginxStatement) -> dict[str, Any]:
    if statement.args[0] == "off":
        return {"enabled": False}
    result.note(statement, "written to <nodeProfile.nginxLogDir>/<namespace>_<name>.access.log instead")
    if len(statement.args) > 2:  # noqa: PLR2004 - path and format
        result.note(statement, "buffer, flush and if= parameters are not expressed")
    return {"format": statement.args[1] if len(statement.args) > 1 else "combined"}


def _location(
    result: ServersImport, location: NginxStatement, server_level: dict[str, Any], upstreams: dict[str, str]
) -> dict[str, Any] | None:
    modifier, path = (
        (location.args[0], location.args[1]) if len(location.args) > 1 else ("", location.args[0])
    )
    if modifier not in ("", "=", "^~"):
        result.note(location, "regular-expression and named locations are not expressed; not imported")
        return None
    if modifier == "^~":
        result.note(location, "^~ is not expressed: imported as a plain prefix location")
    imported: dict[str, Any] = {"path": path, "matchType": "Exact" if modifier == "=" else "Prefix"}
    own: list[NginxStatement] = []
    for statement in location.block or ():
        if statement.directive == "proxy_pass" and statement.args:
            imported.update(_proxy_pass(result, statement, upstreams))
        elif statement.directive.startswith("proxy_"):
            own.append(statement)
        else:
            result.note(statement, "no field of a VirtualHost location expresses it; not imported")
    if "url" not in imported and "upstreamRef" not in imported:
        result.note(location, "a location that proxies nowhere is not expressed; not imported")
        return None
    effective = {**server_level, **_proxy_level(result, own)}
    zone, valid = effective.pop(_CACHE_ZONE, None), effective.pop(_CACHE_VALID, None)
    if zone is not None and zone != "off":
        imported["cache"] = {"zone": zone, "valid": valid or []}
    imported["proxy"] = effective
    return imported


def _proxy_pass(
    result: ServersImport, statement: NginxStatement, upstreams: dict[str, str]
) -> dict[str, Any]:
    target = statement.args[0]
    parts = _PROXY_PASS.match(target)
    if parts and parts["host"] in upstreams and not parts["port"]:
        if parts["path"]:
            result.note(statement, "the URI after an upstream name is not expressed; requests keep their URI")
        return {"upstreamRef": {"name": upstreams[parts["host"]]}}
    return {"url": target}


def _proxy_level(result: ServersImport, statements: Iterable[NginxStatement]) -> dict[str, Any]:
    """The proxy settings one level sets itself, as ProxySettings fields (cache under its own keys)."""
    level: dict[str, Any] = {}
    for statement in statements:
        directive, args = statement.directive, statement.args
        if not args:
            result.note(statement, "has no value; not imported")
        elif directive in _PROXY_TEXT:
            level[_PROXY_TEXT[directive]] = args[0]
        elif directive == "proxy_set_header" and len(args) == 2:  # noqa: PLR2004 - name and value
            # Even a level whose every header is refused keeps its (empty) list: in nginx, headers set at a
            # level replace all those of the level above.
            headers = level.setdefault("headers", [])
            headers.extend(header for header in [_header(result, statement)] if header)
        elif directive == "proxy_redirect" and args[0] in _REDIRECTS:
            level["redirect"] = _REDIRECTS[args[0]]
        elif directive == "proxy_buffers" and len(args) == 2:  # noqa: PLR2004 - number and size
            level["buffers"] = {"number": int(args[0]) if args[0].isdigit() else args[0], "size": args[1]}
        elif directive == "proxy_next_upstream":
            level["nextUpstream"] = list(args)
        elif directive == "proxy_cache":
            level[_CACHE_ZONE] = result.cache_zones.get(args[0], args[0])
        elif directive == "proxy_cache_valid":
            level.setdefault(_CACHE_VALID, []).append(_cache_validity(args))
        else:
            result.note(statement, "no field of VirtualHost proxy settings expresses it; not imported")
    return level


def _header(result: ServersImport, statement: NginxStatement) -> dict[str, str] | None:
    name, value = statement.args
    if value.startswith("$") and value[1:] in _HEADER_VARIABLES:
        return {"name": name, "variable": value[1:]}
    if "$" not in value:
        return {"name": name, "value": value}
    result.note(statement, "only one variable of a closed list, or a fixed value, is expressed; not imported")
    return None


def _cache_validity(args: tuple[str, ...]) -> dict[str, Any]:
    *codes, time = args
    numbers = [int(code) if code.isdigit() else code for code in codes] or list(_DEFAULT_CACHE_CODES)
    return {"codes": numbers, "time": time}


def _hoist_common(locations: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the proxy settings all locations share, the locations with only their own)."""
    first = locations[0]["proxy"]
    common = {
        key: value
        for key, value in first.items()
        if all(other["proxy"].get(key) == value for other in locations)
    }
    for location in locations:
        location["proxy"] = {key: value for key, value in location["proxy"].items() if key not in common}
        if not location["proxy"]:
            del location["proxy"]
    return common, locations
