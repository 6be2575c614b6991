"""What the lab must not collide with on this machine, gathered for testbed.addressing.choose_plan().

Three things: the root namespace's routes, the addresses of its interfaces, and the addresses it must
keep reaching while a lab is up ("protected"): its resolvers, every /etc/hosts entry, the package
registries and proxies its package managers use (apt sources and proxies, pip's indexes, the Go module
proxy and checksum database, the HTTP proxy variables), and anything listed in LBPAIR_LAB_PROTECT
(addresses, CIDRs or host names, separated by commas or spaces). Host names are resolved to IPv4
addresses with getaddrinfo, as the package managers themselves would resolve them.

The parsers are pure (text in, names or addresses out); `gather()` and `protected_addresses()` are the
impure entry points. The lab's own links (named lbp-*) are left out, so a running lab can be checked
against the machine too.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from testbed.addressing import NAME_PREFIX, InterfaceAddress, Protected

PROTECT_VARIABLE = "LBPAIR_LAB_PROTECT"
RESOLVE_TIMEOUT_S = 15.0
# What pip and go use when nothing is configured; always protected, configured or not.
PIP_DEFAULT_URLS = ("https://pypi.org/simple", "https://files.pythonhosted.org/")
GO_DEFAULT_PROXY = "https://proxy.golang.org,direct"
GO_DEFAULT_SUMDB = "sum.golang.org"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy")

Resolver = Callable[[str], list[ipaddress.IPv4Address]]


@dataclass(frozen=True)
class Machine:
    """Everything choose_plan() needs to know about the machine."""

    routes: tuple[dict[str, Any], ...]
    interface_addresses: tuple[InterfaceAddress, ...]
    protected: tuple[Protected, ...]
    # Names that should have been protected but did not resolve ("name (source): reason").
    unresolved: tuple[str, ...] = ()


# --- pure parsers ------------------------------------------------------------------------------------


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _uncommented_lines(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def hosts_file_entries(text: str) -> list[tuple[ipaddress.IPv4Address, tuple[str, ...]]]:
    """(address, names) of every IPv4 line of an /etc/hosts file."""
    entries = []
    for line in _uncommented_lines(text):
        address, *names = line.split()
        parsed = _ipv4(address)
        if parsed is not None:
            entries.append((parsed, tuple(names)))
    return entries


def resolv_conf_nameservers(text: str) -> list[ipaddress.IPv4Address]:
    servers = []
    for line in _uncommented_lines(text.replace(";", "#")):
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and (address := _ipv4(words[1])) is not None:  # noqa: PLR2004
            servers.append(address)
    return servers


def url_host(url: str) -> str | None:
    """The host of a URL ("http://host:3128/x" -> "host"); a bare "host[:port]" counts as a URL too."""
    url = url.strip().strip("\"'")
    if not url or url.startswith(("/", "file:", "cdrom:", "copy:")):
        return None
    split = urlsplit(url if "://" in url else f"//{url}")
    try:
        return split.hostname or None
    except ValueError:
        return None


def apt_one_line_uris(text: str) -> list[str]:
    """URIs of one-line apt sources (`deb [options] uri suite [components]`)."""
    uris = []
    for line in _uncommented_lines(text):
        line = re.sub(r"\[[^\]]*\]", " ", line)  # noqa: PLW2901 - options may contain spaces
        words = line.split()
        if len(words) >= 2 and words[0] in {"deb", "deb-src"}:  # noqa: PLR2004
            uris.append(words[1])
    return uris


def apt_deb822_uris(text: str) -> list[str]:
    """URIs of deb822 apt sources (`URIs:` fields, folded lines included; `Enabled: no` stanzas skipped)."""
    uris = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        current = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and current is not None:
                fields[current] += " " + line.strip()
            elif ":" in line:
                current, _, value = line.partition(":")
                current = current.strip().lower()
                fields[current] = value.strip()
        if fields.get("enabled", "yes").lower() != "no":
            uris += fields.get("uris", "").split()
    return uris


_APT_PROXY = re.compile(r'Acquire::[\w+-]+::Proxy(?:::[\w.-]+)?\s+"([^"]+)"', re.IGNORECASE)


def apt_conf_proxies(text: str) -> list[str]:
    """Proxy URLs of `Acquire::http::Proxy "url";` lines (also per-host ones; DIRECT/false skipped)."""
    return [url for url in _APT_PROXY.findall(text) if url.lower() not in {"direct", "false"}]


def pip_config_urls(text: str) -> list[str]:
    """index-url, extra-index-url, find-links (URLs only) and trusted-host values of a pip config file."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return []
    values = []
    for section in parser.sections():
        for key in ("index-url", "extra-index-url", "find-links", "trusted-host"):
            values += parser.get(section, key, fallback="").split()
    return values


def go_env_values(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a Go env file (the user's `go env -w` file or $GOROOT/go.env)."""
    values = {}
    for line in _uncommented_lines(text):
        key, separator, value = line.partition("=")
        if separator:
            values[key.strip()] = value.strip()
    return values


def goproxy_urls(value: str) -> list[str]:
    """The proxies of a GOPROXY list ("https://a,https://b|direct"); "direct" and "off" are not hosts."""
    return [
        entry
        for entry in re.split(r"[,|]", value)
        if entry.strip() and entry.strip() not in {"direct", "off"}
    ]


def gosumdb_url(value: str) -> str | None:
    """GOSUMDB is "off", "name", "name+key" or "name+key url"; the URL (or the name) is what go dials."""
    words = value.split()
    if not words or words[0] == "off":
        return None
    return words[1] if len(words) > 1 else words[0].split("+", 1)[0]


def protect_entries(value: str) -> tuple[list[ipaddress.IPv4Network], list[str]]:
    """LBPAIR_LAB_PROTECT: (networks, host names); an address counts as a /32 network."""
    networks, names = [], []
    for token in re.split(r"[,\s]+", value.strip()):
        if not token:
            continue
        try:
            networks.append(ipaddress.IPv4Network(token, strict=False))
        except ValueError:
            if ":" not in token:  # IPv6 does not matter to an IPv4-only lab
                names.append(token)
    return networks, names


# --- gathering (impure) --------------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return ""


def _under(root: Path, path: str | Path) -> Path:
    return root / str(path).lstrip("/")


def package_manager_urls(environment: Mapping[str, str], root: Path = Path("/")) -> dict[str, list[str]]:
    """URLs (or bare hosts) the package managers and proxies would dial, each with where it came from."""
    found: dict[str, list[str]] = {}

    def add(urls: Iterable[str], source: str) -> None:
        for url in urls:
            found.setdefault(url, []).append(source)

    apt = _under(root, "/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        add(apt_one_line_uris(_read(path)), "apt source")
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        add(apt_deb822_uris(_read(path)), "apt source")
    for path in [apt / "apt.conf", *sorted((apt / "apt.conf.d").glob("*"))]:
        add(apt_conf_proxies(_read(path)), "apt proxy")

    add(PIP_DEFAULT_URLS, "pip index")
    for variable in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"):
        add(environment.get(variable, "").split(), "pip index")
    home = environment.get("HOME", "/root")
    config_home = environment.get("XDG_CONFIG_HOME", f"{home}/.config")
    config_dirs = environment.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    pip_files = [
        *(f"{directory}/pip/pip.conf" for directory in config_dirs if directory),
        "/etc/pip.conf",
        f"{home}/.pip/pip.conf",
        f"{config_home}/pip/pip.conf",
        f"{sys.prefix}/pip.conf",
        *([environment["PIP_CONFIG_FILE"]] if environment.get("PIP_CONFIG_FILE") else []),
    ]
    for pip_file in pip_files:
        add(pip_config_urls(_read(_under(root, pip_file))), "pip index")

    go_files = [environment.get("GOENV") or f"{config_home}/go/env"]
    goroot = environment.get("GOROOT") or _goroot(environment)
    if goroot:
        go_files.append(f"{goroot}/go.env")
    go_settings = [go_env_values(_read(_under(root, go_file))) for go_file in go_files]
    go_settings.append({key: environment[key] for key in ("GOPROXY", "GOSUMDB") if key in environment})
    add(goproxy_urls(GO_DEFAULT_PROXY), "Go module proxy")
    add([GO_DEFAULT_SUMDB], "Go checksum database")
    for settings in go_settings:
        add(goproxy_urls(settings.get("GOPROXY", "")), "Go module proxy")
        sumdb = gosumdb_url(settings.get("GOSUMDB", ""))
        add([sumdb] if sumdb else [], "Go checksum database")

    for variable in PROXY_VARIABLES:
        for spelling in (variable, variable.upper()):
            add([environment[spelling]] if environment.get(spelling) else [], f"proxy in {spelling}")
    return found


def _goroot(environment: Mapping[str, str]) -> str | None:
    go = shutil.which("go", path=environment.get("PATH"))
    return str(Path(go).resolve().parent.parent) if go else None


def resolve_ipv4(name: str) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses `name` resolves to, through the machine's own resolver configuration."""
    infos = socket.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return sorted({ipaddress.IPv4Address(info[4][0]) for info in infos})


def resolve_all(
    names: Mapping[str, list[str]], resolve: Resolver, timeout: float = RESOLVE_TIMEOUT_S
) -> tuple[list[Protected], list[str]]:
    """Protected entries for every name (looked up in parallel, bounded in time) and the failures."""
    if not names:
        return [], []
    protected: list[Protected] = []
    unresolved: list[str] = []
    executor = ThreadPoolExecutor(max_workers=min(8, len(names)), thread_name_prefix="lab-resolve")
    futures = {name: executor.submit(resolve, name) for name in sorted(names)}
    wait_for_futures(futures.values(), timeout=timeout)
    for name, future in futures.items():
        source = f"{_labels(names[name])} {name}"
        if not future.done():
            unresolved.append(f"{source}: no answer within {timeout:g} s")
        elif (error := future.exception()) is not None:
            unresolved.append(f"{source}: {error}")
        else:
            protected += [Protected(ipaddress.IPv4Network(address), source) for address in future.result()]
    executor.shutdown(wait=False, cancel_futures=True)
    return protected, unresolved


def _labels(sources: Iterable[str]) -> str:
    return "/".join(dict.fromkeys(sources))


def merge_protected(entries: Iterable[Protected]) -> list[Protected]:
    """One entry per network, naming every reason it is protected, in first-seen order."""
    reasons: dict[ipaddress.IPv4Network, list[str]] = {}
    for entry in entries:
        reasons.setdefault(entry.network, []).append(entry.source)
    return [Protected(network, ", ".join(dict.fromkeys(sources))) for network, sources in reasons.items()]


def protected_addresses(
    environment: Mapping[str, str], root: Path = Path("/"), resolve: Resolver = resolve_ipv4
) -> tuple[list[Protected], list[str]]:
    """(protected entries, one per network, and the names that did not resolve) for this machine; `root`
    and `resolve` are there for tests."""
    protected: list[Protected] = []
    names: dict[str, list[str]] = {}
    for address, host_names in hosts_file_entries(_read(_under(root, "/etc/hosts"))):
        label = " ".join(host_names) or "an entry"
        protected.append(Protected(ipaddress.IPv4Network(address), f"{label} in /etc/hosts"))
    for address in resolv_conf_nameservers(_read(_under(root, "/etc/resolv.conf"))):
        protected.append(Protected(ipaddress.IPv4Network(address), "resolver in /etc/resolv.conf"))
    for url, sources in package_manager_urls(environment, root).items():
        host = url_host(url)
        if host is None:
            continue
        literal = _ipv4(host)
        if literal is not None:
            protected.append(Protected(ipaddress.IPv4Network(literal), f"{_labels(sources)} {host}"))
        elif ":" not in host:
            names.setdefault(host, []).extend(sources)
    networks, extra_names = protect_entries(environment.get(PROTECT_VARIABLE, ""))
    protected += [Protected(network, f"in {PROTECT_VARIABLE}") for network in networks]
    for name in extra_names:
        names.setdefault(name, []).append(PROTECT_VARIABLE)
    resolved, unresolved = resolve_all(names, resolve)
    return merge_protected(protected + resolved), unresolved


def _ip_json(*args: str) -> list[dict[str, Any]]:
    completed = subprocess.run(
        ["ip", "-4", "-j", *args], capture_output=True, text=True, timeout=30, check=True
    )
    listed = completed.stdout.strip()
    return list(json.loads(listed)) if listed else []


def root_routes() -> list[dict[str, Any]]:
    """`ip -4 -j route show table all` of the root namespace, without routes over the lab's own links."""
    return [route for route in _ip_json("route", "show", "table", "all") if not _lab_link(route.get("dev"))]


def root_interface_addresses() -> list[InterfaceAddress]:
    """IPv4 addresses of the root namespace's interfaces, the lab's own links left out."""
    return [
        InterfaceAddress(link["ifname"], ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}"))
        for link in _ip_json("addr", "show")
        if not _lab_link(link.get("ifname"))
        for info in link.get("addr_info", [])
        if "local" in info
    ]


def _lab_link(name: object) -> bool:
    return isinstance(name, str) and name.startswith(NAME_PREFIX)


def gather(environment: Mapping[str, str] | None = None) -> Machine:
    """This machine, now (reads files, runs `ip`, resolves host names)."""
    protected, unresolved = protected_addresses(os.environ if environment is None else environment)
    return Machine(
        routes=tuple(root_routes()),
        interface_addresses=tuple(root_interface_addresses()),
        protected=tuple(protected),
        unresolved=tuple(unresolved),
    )
