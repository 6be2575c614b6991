"""The agent's one-round-trip rollout (`roll-out`, `activate`) run for real by sh on a temporary tree, with
a stand-in nginx: a master that serves the marker of its config on a loopback port (the status endpoint)
and loads its config again on HUP, as nginx does; `nginx -T` refuses a config that says `refuse`. A
stand-in systemctl records what it is asked. The command lines are the operator's (lbpair.nodes)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lbpair.isolation import node_at_fault
from lbpair.nodes.layout import NodeLayout
from lbpair.nodes.observe import parse_probe
from lbpair.nodes.operations import (
    RESTORE_FAILED_STATUS,
    ROLLED_BACK_STATUS,
    VALIDATION_REFUSED_STATUS,
    Activation,
    build_roll_out_args,
)
from tests.unit.test_agent_script import Node

FAKE_NGINX = """#!/usr/bin/python3
# Stand-in nginx. `nginx -T -q -c CONF`: refuses a config that says "refuse", else dumps it. `nginx CONF
# PORTFILE`: the master, serving the marker of CONF at /lbpair/config-hash and loading CONF again on HUP.
import http.server, pathlib, signal, sys
if "-T" in sys.argv:
    conf = sys.argv[sys.argv.index("-c") + 1]
    if "refuse" in pathlib.Path(conf).read_text():
        print(f'nginx: [emerg] unknown directive "refuse" in {conf}:1', file=sys.stderr)
        sys.exit(1)
    print(f"# configuration file {conf}:\\n{pathlib.Path(conf).read_text()}")
    sys.exit(0)
conf, port_file = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ignores_hup = pathlib.Path(str(conf) + ".ignore-hup")
loaded = [conf.read_text().strip()]
def reload(*_):
    with open(str(conf) + ".hups", "a") as hups:
        hups.write("hup\\n")
    if not ignores_hup.exists():
        loaded[0] = conf.read_text().strip()
signal.signal(signal.SIGHUP, reload)
class Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (loaded[0] + "\\n").encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *_):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Status)
port_file.write_text(str(server.server_address[1]))
server.serve_forever(poll_interval=0.01)
"""
FAKE_KEEPALIVED = "#!/bin/sh\nexit 0\n"
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
case $1 in
is-active) if [ -e "$SYSTEMCTL_LOG.$2-active" ]; then echo active; else echo inactive && exit 3; fi ;;
esac
"""


@dataclass
class Sandbox:
    node: Node
    layout: NodeLayout
    systemctl_log: Path
    master: subprocess.Popen[bytes]

    def served(self) -> str:
        url = f"http://127.0.0.1:{self.layout.status_port}/lbpair/config-hash"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode().strip())

    def roll_out(self, activation: Activation) -> subprocess.CompletedProcess[bytes]:
        return self.node.agent(*build_roll_out_args(self.layout, activation), check=False)

    def hups(self) -> int:
        """HUPs the stand-in nginx master got."""
        hups = Path(self.layout.nginx_config_path + ".hups")
        return len(hups.read_text().splitlines()) if hups.exists() else 0

    def systemctl_calls(self) -> list[str]:
        return self.systemctl_log.read_text().splitlines() if self.systemctl_log.exists() else []


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    if os.geteuid() != 0:
        pytest.fail("validate's private mount namespace needs root (CI runs as root)", pytrace=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in {
        "nginx": FAKE_NGINX,
        "keepalived": FAKE_KEEPALIVED,
        "systemctl": FAKE_SYSTEMCTL,
    }.items():
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    node = Node(tmp_path / "node", bin_dir)
    systemctl_log = tmp_path / "systemctl.log"
    node.env = {"SYSTEMCTL_LOG": str(systemctl_log)}
    Path(f"{systemctl_log}.keepalived-active").touch()
    node.install({"etc/nginx/nginx.conf": "old", "etc/keepalived/keepalived.conf": "k1"})
    port_file = tmp_path / "port"
    master = subprocess.Popen([str(bin_dir / "nginx"), node.path("etc/nginx/nginx.conf"), str(port_file)])
    deadline = time.monotonic() + 10
    while not port_file.exists() or not port_file.read_text():
        assert master.poll() is None, "the stand-in nginx exited"
        assert time.monotonic() < deadline, "the stand-in nginx did not start"
        time.sleep(0.02)
    (tmp_path / "nginx.pid").write_text(f"{master.pid}\n")
    layout = NodeLayout(
        nginx_service="nginx",
        keepalived_service="keepalived",
        nginx_config_path=node.path("etc/nginx/nginx.conf"),
        keepalived_config_path=node.path("etc/keepalived/keepalived.conf"),
        status_port=int(port_file.read_text()),
        nginx_pid_path=str(tmp_path / "nginx.pid"),
    )
    try:
        yield Sandbox(node, layout, systemctl_log, master)
    finally:
        master.send_signal(signal.SIGKILL)
        master.wait()


def activation(marker: str, *services: str, swap: bool = True, verify_timeout: float = 5.0) -> Activation:
    return Activation(f"config-{marker}", marker, services, verify_timeout, swap=swap)


def test_a_one_file_change_goes_live_in_one_command_reloading_only_nginx_by_hup(sandbox: Sandbox) -> None:
    sandbox.node.stage(
        {"etc/nginx/nginx.conf": "new", "etc/keepalived/keepalived.conf": "k1"}, {"etc/nginx/nginx.conf"}
    )

    result = sandbox.roll_out(activation("new", "nginx"))

    assert result.returncode == 0, result.stderr.decode()
    assert sandbox.served() == "new"  # verified by the node before it answered
    assert sandbox.node.read("etc/nginx/nginx.conf") == "new"
    observation = parse_probe(result.stdout.decode())
    assert observation.live_hash == "config-new"
    assert observation.running("keepalived")
    assert (sandbox.node.state / "live").read_text() == "config-new\n"
    assert sandbox.hups() == 1
    assert "reload keepalived" not in sandbox.systemctl_calls()  # its files did not change
    assert not any(
        call.endswith("nginx") and not call.startswith("is-active") for call in sandbox.systemctl_calls()
    )
    assert "== timings" in result.stdout.decode()


def test_a_keepalived_only_change_reloads_keepalived_and_leaves_nginx_alone(sandbox: Sandbox) -> None:
    sandbox.node.stage(
        {"etc/nginx/nginx.conf": "old", "etc/keepalived/keepalived.conf": "k2"},
        {"etc/keepalived/keepalived.conf"},
    )

    result = sandbox.roll_out(activation("old", "keepalived"))

    assert result.returncode == 0, result.stderr.decode()
    assert sandbox.node.read("etc/keepalived/keepalived.conf") == "k2"
    assert "reload keepalived" in sandbox.systemctl_calls()
    assert sandbox.hups() == 0  # nginx's files did not change


def test_a_refused_config_exits_65_with_the_validators_message_and_changes_nothing(sandbox: Sandbox) -> None:
    sandbox.node.stage(
        {"etc/nginx/nginx.conf": "refuse", "etc/keepalived/keepalived.conf": "k1"}, {"etc/nginx/nginx.conf"}
    )

    result = sandbox.roll_out(activation("refuse", "nginx"))

    assert result.returncode == VALIDATION_REFUSED_STATUS
    assert 'unknown directive "refuse"' in result.stdout.decode()
    assert sandbox.node.read("etc/nginx/nginx.conf") == "old"
    assert sandbox.served() == "old"
    assert sandbox.hups() == 0
    assert sandbox.systemctl_calls() == []


def test_a_reload_beyond_the_masters_open_file_limit_is_refused_before_the_swap(sandbox: Sandbox) -> None:
    # A reload opens every log file of the new config while the master still holds the old ones.
    _, hard = resource.prlimit(sandbox.master.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(sandbox.master.pid, resource.RLIMIT_NOFILE, (64, hard))
    logs = "".join(f"    access_log /var/log/nginx/site-{n}.access.log main;\n" for n in range(60))
    conf = f"error_log /var/log/nginx/error.log;\nhttp {{\n{logs}}}"
    sandbox.node.stage(
        {"etc/nginx/nginx.conf": conf, "etc/keepalived/keepalived.conf": "k1"}, {"etc/nginx/nginx.conf"}
    )

    result = sandbox.roll_out(activation(conf, "nginx"))

    assert result.returncode == VALIDATION_REFUSED_STATUS
    message = result.stdout.decode()
    assert f"nginx's master (pid {sandbox.master.pid}) may hold 64 open files" in message
    assert "opens 61 log files" in message  # the 60 access logs and the error log
    assert "LimitNOFILE" in message
    assert node_at_fault(message)  # the node's limit: no tenant's object is blamed for it
    assert sandbox.node.read("etc/nginx/nginx.conf") == "old"
    assert sandbox.served() == "old"
    assert sandbox.hups() == 0


def test_a_config_within_the_masters_open_file_limit_goes_live(sandbox: Sandbox) -> None:
    _, hard = resource.prlimit(sandbox.master.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(sandbox.master.pid, resource.RLIMIT_NOFILE, (64, hard))
    conf = "access_log /var/log/nginx/site-1.access.log main; error_log /var/log/nginx/error.log;"
    sandbox.node.stage(
        {"etc/nginx/nginx.conf": conf, "etc/keepalived/keepalived.conf": "k1"}, {"etc/nginx/nginx.conf"}
    )

    result = sandbox.roll_out(activation(conf, "nginx"))

    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert sandbox.served() == conf
    assert sandbox.hups() == 1


def test_nginx_not_serving_the_new_config_is_rolled_back_on_the_node(sandbox: Sandbox) -> None:
    sandbox.node.stage(
        {"etc/nginx/nginx.conf": "v2", "etc/keepalived/keepalived.conf": "k1"}, {"etc/nginx/nginx.conf"}
    )
    assert sandbox.roll_out(activation("v2", "nginx")).returncode == 0
    Path(sandbox.layout.nginx_config_path + ".ignore-hup").touch()
    sandbox.node.stage(
        {"etc/nginx/nginx.conf": "v3", "etc/keepalived/keepalived.conf": "k1"}, {"etc/nginx/nginx.conf"}
    )

    result = sandbox.roll_out(activation("v3", "nginx", verify_timeout=0.2))

    assert result.returncode == ROLLED_BACK_STATUS
    stderr = result.stderr.decode()
    assert "nginx does not serve the new config after reload (serves 'v2', expected v3)" in stderr
    assert "restored the last-known-good config" in stderr
    assert sandbox.node.read("etc/nginx/nginx.conf") == "v2"  # the last good is back
    assert not (sandbox.node.state / "live").exists()


def test_nginx_not_answering_at_all_fails_with_one_message_not_one_per_poll(sandbox: Sandbox) -> None:
    sandbox.master.send_signal(signal.SIGKILL)  # nothing listens on the status port any more
    sandbox.master.wait()

    result = sandbox.roll_out(activation("other", "nginx", swap=False, verify_timeout=0.3))

    assert result.returncode == RESTORE_FAILED_STATUS
    stderr = result.stderr.decode()
    assert "nginx does not serve the new config after reload (serves 'nothing', expected other)" in stderr
    assert "refused" not in stderr  # the ~15 polls' connection errors stay out of the status message


def test_keepalived_not_running_after_the_reload_is_rolled_back_on_the_node(sandbox: Sandbox) -> None:
    sandbox.node.stage(
        {"etc/nginx/nginx.conf": "v2", "etc/keepalived/keepalived.conf": "k1"}, {"etc/nginx/nginx.conf"}
    )
    assert sandbox.roll_out(activation("v2", "nginx")).returncode == 0
    Path(f"{sandbox.systemctl_log}.keepalived-active").unlink()
    sandbox.node.stage(
        {"etc/nginx/nginx.conf": "v2", "etc/keepalived/keepalived.conf": "k2"},
        {"etc/keepalived/keepalived.conf"},
    )

    result = sandbox.roll_out(activation("v2", "keepalived"))

    assert result.returncode == ROLLED_BACK_STATUS
    assert "keepalived (keepalived) is not running after reload" in result.stderr.decode()
    assert sandbox.node.read("etc/keepalived/keepalived.conf") == "k1"


def test_a_failure_with_nothing_to_restore_says_the_restore_failed_too(sandbox: Sandbox) -> None:
    # Files that were never swapped by the agent (no backup), never verified, and nginx serves other.
    result = sandbox.roll_out(activation("other", "nginx", swap=False, verify_timeout=0.1))

    assert result.returncode == RESTORE_FAILED_STATUS
    stderr = result.stderr.decode()
    assert "nginx does not serve the new config" in stderr
    assert "no backup to restore" in stderr
    assert "restoring the last-known-good config failed too" in stderr
    assert sandbox.node.read("etc/nginx/nginx.conf") == "old"


def test_files_live_but_never_verified_are_verified_without_a_swap(sandbox: Sandbox) -> None:
    result = sandbox.roll_out(activation("old", "nginx", "keepalived", swap=False))

    assert result.returncode == 0, result.stderr.decode()
    assert parse_probe(result.stdout.decode()).live_hash == "config-old"
