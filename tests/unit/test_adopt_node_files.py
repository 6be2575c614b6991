"""Reading a node: only reading commands, includes followed through the node's own glob, a bound on the
number of files; the host key pinned from known_hosts (plain or hashed, never a revoked line); the command
refuses a node known_hosts does not pin before connecting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shlex
from pathlib import Path

import pytest

from lbpair.adopt.__main__ import main
from lbpair.adopt.node_files import MAX_FILES, ReadError, find_host_key, parse_addresses, read_node
from lbpair.nodes.client import CommandResult
from tests.unit.adopt_inputs import NGINX_MAIN, TARGETS

KEY = TARGETS[0].host_key


class ScriptedNode:
    """A node whose files are a dict; answers `cat -- PATH`, the include glob and `ip -o -4 addr show`."""

    name = "lb1"

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.commands: list[str] = []

    def run(self, command: str, *, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        self.commands.append(command)
        words = shlex.split(command)
        if words[:2] == ["cat", "--"]:
            if words[2] in self.files:
                return CommandResult(0, self.files[words[2]], "")
            return CommandResult(1, "", f"cat: {words[2]}: No such file or directory")
        if words[0] == "sh":
            prefix = words[-1].split("*")[0]
            return CommandResult(0, "".join(f"{p}\n" for p in self.files if p.startswith(prefix)), "")
        return CommandResult(
            0, "2: eth0    inet 198.51.100.11/24 brd 198.51.100.255 scope global eth0\\\n", ""
        )

    def close(self) -> None:
        return


def test_a_node_s_files_are_read_with_includes_followed() -> None:
    node = ScriptedNode({
        NGINX_MAIN: "http { include conf.d/*.conf; }\n",
        "/etc/nginx/conf.d/a.conf": "server { include snippets/x.conf; }\n",
        "/etc/nginx/snippets/x.conf": "listen 80;\n",
        "/etc/keepalived/keepalived.conf": "global_defs {\n}\n",
    })  # fmt: skip

    files = read_node(node, NGINX_MAIN, "/etc/keepalived/keepalived.conf")

    assert list(files.nginx) == [NGINX_MAIN, "/etc/nginx/conf.d/a.conf", "/etc/nginx/snippets/x.conf"]
    assert files.keepalived == "global_defs {\n}\n"
    assert [str(a) for a in files.addresses["eth0"]] == ["198.51.100.11/24"]
    assert all(c.split()[0] in ("cat", "sh", "ip") for c in node.commands)


def test_a_configuration_naming_more_files_than_the_bound_is_refused() -> None:
    many = {f"/etc/nginx/conf.d/{i}.conf": "" for i in range(MAX_FILES + 1)}
    node = ScriptedNode({NGINX_MAIN: "include conf.d/*.conf;\n", **many})

    with pytest.raises(ReadError, match=f"more than {MAX_FILES} files"):
        read_node(node, NGINX_MAIN, "/etc/keepalived/keepalived.conf")


def test_a_file_that_cannot_be_read_fails_with_the_node_s_message() -> None:
    with pytest.raises(ReadError, match="No such file or directory"):
        read_node(ScriptedNode({}), NGINX_MAIN, "/etc/keepalived/keepalived.conf")


def test_ip_addr_lines_give_each_interface_its_addresses() -> None:
    output = (
        "1: lo    inet 127.0.0.1/8 scope host lo\n2: eth0@if9    inet 198.51.100.11/24 scope global eth0\n"
    )

    assert {name: [str(a) for a in found] for name, found in parse_addresses(output).items()} == {
        "lo": ["127.0.0.1/8"],
        "eth0": ["198.51.100.11/24"],
    }


def hashed(host: str) -> str:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


@pytest.mark.parametrize(
    ("known_hosts", "address", "port", "found"),
    [
        (f"203.0.113.11 {KEY}\n", "203.0.113.11", 22, KEY),
        (f"lb1,203.0.113.11 {KEY} comment\n", "203.0.113.11", 22, KEY),
        (f"[203.0.113.11]:2222 {KEY}\n", "203.0.113.11", 2222, KEY),
        (f"203.0.113.11 {KEY}\n", "203.0.113.11", 2222, None),
        (f"{hashed('203.0.113.11')} {KEY}\n", "203.0.113.11", 22, KEY),
        (f"{hashed('203.0.113.12')} {KEY}\n", "203.0.113.11", 22, None),
        (f"@revoked 203.0.113.11 {KEY}\n", "203.0.113.11", 22, None),
        (f"203.0.113.111 {KEY}\n", "203.0.113.11", 22, None),
    ],
)
def test_the_pinned_host_key_comes_from_known_hosts(
    known_hosts: str, address: str, port: int, found: str | None
) -> None:
    assert find_host_key(known_hosts, address, port) == found


def test_a_node_known_hosts_does_not_pin_is_refused_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "known_hosts").write_text(f"203.0.113.12 {KEY}\n")
    (tmp_path / "key").write_text("not used\n")

    status = main(
        [
            "--node",
            "203.0.113.11",
            "--known-hosts",
            str(tmp_path / "known_hosts"),
            "--key",
            str(tmp_path / "key"),
        ]
    )

    assert status == 1
    assert "error: 203.0.113.11 is not in" in capsys.readouterr().err


def test_a_key_file_that_cannot_be_read_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "known_hosts").write_text(f"203.0.113.11 {KEY}\n")

    status = main(
        [
            "--node",
            "203.0.113.11",
            "--known-hosts",
            str(tmp_path / "known_hosts"),
            "--key",
            str(tmp_path / "missing"),
        ]
    )

    assert status == 1
    assert "No such file or directory" in capsys.readouterr().err
