"""Read a hand-built node's nginx and keepalived configuration over SSH (through the NodeClient seam), and
find a node's pinned host key in a known_hosts file.

Only reading commands run on the node (`cat`, a shell glob for nginx's include patterns, `ip -o -4 addr`),
each bounded by the session's deadline and output cap. Reading stops at MAX_FILES files: a configuration
that includes more is refused rather than read without end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from lbpair.adopt.nginx_conf import include_patterns
from lbpair.nodes.client import NodeClient, NodeError

MAX_FILES = 256
COMMAND_TIMEOUT_SECONDS = 15.0
_GLOB = 'for f in $1; do [ -f "$f" ] && printf "%s\\n" "$f"; done; true'


class ReadError(NodeError):
    """A file the import needs could not be read, or the configuration names too many files."""


@dataclass
class NodeFiles:
    """What one node runs: nginx's files by path (the main one first), keepalived.conf, and the IPv4
    addresses of its interfaces by interface name."""

    nginx_main: str
    nginx: dict[str, str] = field(default_factory=dict)
    keepalived: str = ""
    addresses: dict[str, list[ipaddress.IPv4Interface]] = field(default_factory=dict)


def read_node(client: NodeClient, nginx_main: str, keepalived_path: str) -> NodeFiles:
    files = NodeFiles(nginx_main=nginx_main)
    pending = [nginx_main]
    config_dir = str(Path(nginx_main).parent)
    while pending:
        path = pending.pop(0)
        if path in files.nginx:
            continue
        if len(files.nginx) >= MAX_FILES:
            raise ReadError(f"{client.name}: nginx's configuration names more than {MAX_FILES} files")
        text = _read(client, path)
        files.nginx[path] = text
        for pattern in include_patterns(path, text, config_dir):
            pending.extend(_glob(client, pattern))
    files.keepalived = _read(client, keepalived_path)
    files.addresses = parse_addresses(_run(client, "ip -o -4 addr show"))
    return files


def parse_addresses(output: str) -> dict[str, list[ipaddress.IPv4Interface]]:
    """`ip -o -4 addr show` -> {interface: [address/prefix, ...]} (lines that do not parse are skipped)."""
    addresses: dict[str, list[ipaddress.IPv4Interface]] = {}
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 4 and words[2] == "inet":  # noqa: PLR2004 - "N: IF inet ADDRESS"
            try:
                address = ipaddress.IPv4Interface(words[3])
            except ValueError:
                continue
            addresses.setdefault(words[1].split("@")[0], []).append(address)
    return addresses


def find_host_key(known_hosts: str, address: str, port: int) -> str | None:
    """The `TYPE BASE64` line known_hosts pins for the node (`address`, or `[address]:port` off port 22),
    plain or hashed (`|1|salt|hash`); revoked (`@revoked`) and CA (`@cert-authority`) lines never count."""
    wanted = address if port == 22 else f"[{address}]:{port}"  # noqa: PLR2004 - SSH's port
    for line in known_hosts.splitlines():
        words = line.split()
        if len(words) < 3 or words[0].startswith(("#", "@")):  # noqa: PLR2004 - hosts, type, key
            continue
        if any(_host_matches(pattern, wanted) for pattern in words[0].split(",")):
            return f"{words[1]} {words[2]}"
    return None


def _host_matches(pattern: str, wanted: str) -> bool:
    if not pattern.startswith("|1|"):
        return pattern == wanted
    try:
        salt, digest = (base64.b64decode(part) for part in pattern[3:].split("|", 1))
    except ValueError:
        return False
    return hmac.compare_digest(hmac.new(salt, wanted.encode(), hashlib.sha1).digest(), digest)


def _read(client: NodeClient, path: str) -> str:
    return _run(client, f"cat -- {shlex.quote(path)}")


def _glob(client: NodeClient, pattern: str) -> list[str]:
    # The pattern is an argument of the shell, expanded as a glob and never evaluated as code.
    return sorted(_run(client, f"sh -c {shlex.quote(_GLOB)} sh {shlex.quote(pattern)}").splitlines())


def _run(client: NodeClient, command: str) -> str:
    result = client.run(command, timeout=COMMAND_TIMEOUT_SECONDS)
    if not result.ok:
        raise ReadError(f"{client.name}: {command}: {result.stderr.strip() or f'exit {result.exit_status}'}")
    return result.stdout
