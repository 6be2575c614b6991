"""Pure parsing of what a node reports (the agent's `probe` output) into typed observations."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import TypeGuard

# keepalived's numeric VRRP states (vrrp.h: VRRP_STATE_INIT .. VRRP_STATE_FAULT).
_VRRP_STATES = {0: "INIT", 1: "BACKUP", 2: "MASTER", 3: "FAULT"}
# The agent copies at most 1 MiB of the dump; a few instances take a few KiB.
MAX_VRRP_DUMP_CHARS = 1024 * 1024


@dataclass(frozen=True)
class VrrpInstanceState:
    name: str
    state: str
    effective_priority: int


@dataclass(frozen=True)
class ManagedFileState:
    """A file the operator manages on a node: the hash it applied, and the hash found now."""

    applied_sha256: str
    actual_sha256: str | None  # None: the file is gone

    @property
    def drifted(self) -> bool:
        return self.applied_sha256 != self.actual_sha256


@dataclass(frozen=True)
class NginxWatchState:
    """The node-side nginx watcher as the node reports it."""

    running: bool
    hash: str  # sha256 of the program and config it runs
    nginx_serving: bool  # what it last told keepalived


@dataclass(frozen=True)
class NodeObservation:
    """One node as it is, measured; nothing here is assumed from what was pushed."""

    hostname: str
    services: dict[str, bool]
    addresses: frozenset[ipaddress.IPv4Interface]
    managed_files: dict[str, ManagedFileState]
    vrrp: tuple[VrrpInstanceState, ...] = field(default=())
    live_hash: str = ""  # the config hash the services were last verified to run ("" after a swap)
    owner: str = ""  # "UID NAMESPACE/NAME" of the pair that has the node; "" while no pair has it
    nginx_watch: NginxWatchState | None = None  # None: no watcher ever ran on the node

    def holds(self, vip: ipaddress.IPv4Address) -> bool:
        return any(interface.ip == vip for interface in self.addresses)

    def running(self, service: str) -> bool:
        return self.services.get(service, False)


def split_sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("== "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return sections


def parse_addresses(lines: list[str]) -> frozenset[ipaddress.IPv4Interface]:
    """`ip -o -4 addr show` lines: `2: eth0    inet 198.51.100.10/24 ... scope global secondary eth0`."""
    found = set()
    for line in lines:
        words = line.split()
        if "inet" in words:
            found.add(ipaddress.IPv4Interface(words[words.index("inet") + 1]))
    return frozenset(found)


def parse_managed_files(lines: list[str]) -> dict[str, ManagedFileState]:
    """`APPLIED ACTUAL PATH` lines; ACTUAL is `missing` for a managed file that is gone."""
    files: dict[str, ManagedFileState] = {}
    for line in lines:
        applied, actual, path = line.split(" ", 2)
        files[path] = ManagedFileState(applied, None if actual == "missing" else actual)
    return files


def parse_vrrp(lines: list[str]) -> tuple[VrrpInstanceState, ...]:
    """keepalived's JSON dump. Anything but a well-formed dump (keepalived down, the dump torn or cut off,
    garbage, nesting too deep for the parser, fields of the wrong type) reads as no data: the VRRP state
    is unknown, and the rest of the probe still counts."""
    text = "\n".join(lines).strip()
    if not text or len(text) > MAX_VRRP_DUMP_CHARS:
        return ()
    try:
        dump = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return ()
    if not isinstance(dump, list):
        return ()
    instances = []
    for entry in dump:
        if not isinstance(entry, dict) or "data" not in entry:
            continue
        instance = _vrrp_instance(entry["data"])
        if instance is None:
            return ()
        instances.append(instance)
    return tuple(sorted(instances, key=lambda instance: instance.name))


def _vrrp_instance(data: object) -> VrrpInstanceState | None:
    if not isinstance(data, dict):
        return None
    name, state, priority = data.get("iname"), data.get("state"), data.get("effective_priority")
    if not isinstance(name, str) or not _is_int(state) or not _is_int(priority):
        return None
    return VrrpInstanceState(name=name, state=_VRRP_STATES.get(state, "UNKNOWN"), effective_priority=priority)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_nginx_watch(lines: list[str]) -> NginxWatchState | None:
    """`running|stopped HASH up|down`; anything else reads as no watcher."""
    words = lines[0].split() if lines else []
    if len(words) != 3 or words[0] not in {"running", "stopped"} or words[2] not in {"up", "down"}:  # noqa: PLR2004
        return None
    return NginxWatchState(running=words[0] == "running", hash=words[1][:64], nginx_serving=words[2] == "up")


def parse_probe(text: str) -> NodeObservation:
    sections = split_sections(text)
    services = {}
    for line in sections.get("services", []):
        name, _, state = line.partition(" ")
        services[name] = state.strip() == "active"
    return NodeObservation(
        hostname=(sections.get("hostname") or [""])[0].strip(),
        services=services,
        addresses=parse_addresses(sections.get("addresses", [])),
        managed_files=parse_managed_files(sections.get("files", [])),
        vrrp=parse_vrrp(sections.get("vrrp", [])),
        live_hash=(sections.get("live") or [""])[0].strip(),
        owner=(sections.get("owner") or [""])[0].strip(),
        nginx_watch=parse_nginx_watch(sections.get("nginx-watch", [])),
    )
