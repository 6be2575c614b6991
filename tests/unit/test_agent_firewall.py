"""The agent's firewall steps run for real: the rollout sandbox of test_agent_roll_out (sh on a temporary
tree, stand-in nginx and systemctl) with the real `nft`, which a shim runs in a network namespace of the
test's own, so the machine's rules are never touched. What a user would find on the node: the ruleset
file, the kernel's tables, the agent's exit status and message."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbpair.nodes.operations import ROLLED_BACK_STATUS, VALIDATION_REFUSED_STATUS, build_roll_out_args
from lbpair.render import render_template
from lbpair.render.firewall import FIREWALL_TABLE, FirewallRuleset, VrrpAdmission
from tests.unit.test_agent_roll_out import Sandbox, activation
from tests.unit.test_agent_roll_out import sandbox as rollout_sandbox

RULESET = "etc/keepalived/lbpair-firewall.nft"
BASE = {"etc/nginx/nginx.conf": "old", "etc/keepalived/keepalived.conf": "k1"}
OPERATOR = "203.0.113.1"
NFT_SHIM = """#!/bin/sh
exec nsenter --net=/proc/{pid}/ns/net /usr/sbin/nft "$@"
"""

__all__ = ["rollout_sandbox"]  # the fixture this module's `sandbox` builds on


@dataclasses.dataclass
class FirewallNode:
    sandbox: Sandbox
    netns_pid: int

    def nft(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["nsenter", f"--net=/proc/{self.netns_pid}/ns/net", "nft", *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)

    def tables(self) -> list[str]:
        return self.nft("list", "tables").stdout.splitlines()

    def roll_out(self, ruleset: str | None, ssh_client: str = OPERATOR) -> subprocess.CompletedProcess[bytes]:
        """Stage BASE with `ruleset` (None: without one) and roll it out as the operator does, its SSH
        session coming from `ssh_client`."""
        files = dict(BASE) | ({RULESET: ruleset} if ruleset is not None else {})
        node = self.sandbox.node
        node.stage(files)
        node.env["SSH_CONNECTION"] = f"{ssh_client} 50022 203.0.113.11 22"
        layout = dataclasses.replace(self.sandbox.layout, firewall_path=node.path(RULESET))
        services = layout.services_for([node.path(RULESET)])
        return node.agent(*build_roll_out_args(layout, activation("old", *services)), check=False)


@pytest.fixture
def sandbox(rollout_sandbox: Sandbox) -> Iterator[FirewallNode]:
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    try:
        shim = Path(str(rollout_sandbox.node.bin_dir)) / "nft"
        shim.write_text(NFT_SHIM.format(pid=holder.pid))
        shim.chmod(0o755)
        _wait_for_namespace(holder.pid)
        yield FirewallNode(rollout_sandbox, holder.pid)
    finally:
        holder.kill()
        holder.wait()


def _wait_for_namespace(pid: int) -> None:
    """Until unshare has entered its new namespace (its process starts in ours)."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/ns/net").readlink() == Path("/proc/self/ns/net").readlink():
        assert time.monotonic() < deadline, "the test's network namespace did not appear"
        time.sleep(0.01)


def ruleset(ssh_sources: list[str]) -> str:
    return render_template(
        "nftables.conf.j2",
        banner="test",
        firewall=FirewallRuleset(
            path="/unused",
            table=FIREWALL_TABLE,
            vrrp=[VrrpAdmission("eth0", "198.51.100.12", "224.0.0.18")],
            ssh_port=22,
            ssh_sources=ssh_sources,
            listener_ports=[80, 443],
            vips=["198.51.100.10"],
            listener_sources=None,
        ),
    )


def test_the_ruleset_goes_live_in_its_own_table_and_leaves_other_tables_alone(sandbox: FirewallNode) -> None:
    sandbox.nft("add", "table", "inet", "site")

    result = sandbox.roll_out(ruleset(["203.0.113.0/24"]))

    assert result.returncode == 0, result.stderr.decode()
    assert sandbox.tables() == ["table inet site", "table inet lbpair"]
    chain = sandbox.nft("list", "chain", "inet", "lbpair", "input").stdout
    assert "policy drop;" in chain
    assert "ip saddr 198.51.100.12 ip daddr 224.0.0.18 ip protocol vrrp accept" in chain


def test_a_ruleset_nft_refuses_is_never_loaded(sandbox: FirewallNode) -> None:
    broken = ruleset(["203.0.113.0/24"]).replace("policy drop;", "policy dorp;")

    result = sandbox.roll_out(broken)

    assert result.returncode == VALIDATION_REFUSED_STATUS
    assert "dorp" in result.stdout.decode()  # nft's own message, as the Rejected condition shows it
    assert sandbox.tables() == []
    assert sandbox.sandbox.node.read(RULESET) is None


def test_a_ruleset_that_would_cut_the_operators_ssh_is_rolled_back(sandbox: FirewallNode) -> None:
    assert sandbox.roll_out(ruleset(["203.0.113.0/24"])).returncode == 0
    good = sandbox.sandbox.node.read(RULESET)

    result = sandbox.roll_out(ruleset(["192.0.2.0/24"]))

    assert result.returncode == ROLLED_BACK_STATUS, result.stderr.decode()
    assert (
        "would refuse new SSH connections from the operator's address 203.0.113.1" in result.stderr.decode()
    )
    assert sandbox.sandbox.node.read(RULESET) == good
    elements = sandbox.nft("list", "set", "inet", "lbpair", "ssh_sources").stdout
    assert "203.0.113.0/24" in elements  # the last good ruleset is the one loaded
    assert "192.0.2.0/24" not in elements


def test_a_first_ruleset_that_would_cut_ssh_leaves_no_table(sandbox: FirewallNode) -> None:
    result = sandbox.roll_out(ruleset(["192.0.2.0/24"]))

    assert result.returncode == ROLLED_BACK_STATUS, result.stderr.decode()
    assert sandbox.tables() == []


def test_turning_the_firewall_off_deletes_its_table_only(sandbox: FirewallNode) -> None:
    sandbox.nft("add", "table", "inet", "site")
    assert sandbox.roll_out(ruleset(["203.0.113.0/24"])).returncode == 0

    result = sandbox.roll_out(None)

    assert result.returncode == 0, result.stderr.decode()
    assert sandbox.tables() == ["table inet site"]
    assert sandbox.sandbox.node.read(RULESET) is None


def test_uninstall_deletes_the_table(sandbox: FirewallNode) -> None:
    assert sandbox.roll_out(ruleset(["203.0.113.0/24"])).returncode == 0

    sandbox.sandbox.node.agent("uninstall")

    assert sandbox.tables() == []
