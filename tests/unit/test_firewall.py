"""spec.firewall from the pair to each node's ruleset file, and which reload a change of it asks for."""

from __future__ import annotations

import dataclasses
from typing import Any

from lbpair.render import render_pair
from tests.unit.samples import sample
from tests.unit.test_rollout import LAYOUT

RULESET = "/etc/keepalived/lbpair-firewall.nft"


def rulesets(**spec: Any) -> dict[str, str]:
    """Node → its ruleset file, for the seed pair with `spec` fields set."""
    resources = sample("seed-tutorial.yaml")
    resources.pair["spec"].update(spec)
    build = resources.build()
    assert build.problems == []
    return {
        name: node.files[RULESET].content
        for name, node in render_pair(build.state).items()
        if RULESET in node.files
    }


def chain_lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("chain input {")[1].splitlines()]


def test_off_by_default_no_node_gets_a_ruleset() -> None:
    assert rulesets() == {}


def test_each_node_admits_vrrp_from_its_peer_to_the_multicast_group() -> None:
    files = rulesets(firewall={"enabled": True})

    assert 'iifname "eth0" ip saddr 198.51.100.12 ip daddr 224.0.0.18 ip protocol vrrp accept' in chain_lines(
        files["lb1"]
    )
    assert 'iifname "eth0" ip saddr 198.51.100.11 ip daddr 224.0.0.18 ip protocol vrrp accept' in chain_lines(
        files["lb2"]
    )


def test_unicast_vrrp_is_admitted_to_the_nodes_own_address() -> None:
    vrrp = {"virtualRouterId": 51, "peering": "Unicast"}

    files = rulesets(firewall={"enabled": True}, vrrp=vrrp)

    assert (
        'iifname "eth0" ip saddr 198.51.100.12 ip daddr 198.51.100.11 ip protocol vrrp accept'
        in chain_lines(files["lb1"])
    )


def test_listeners_are_admitted_on_the_vips_only_and_the_rest_is_dropped() -> None:
    listeners = [{"port": 80, "protocol": "HTTP"}, {"port": 8443, "protocol": "HTTPS"}]

    lines = chain_lines(rulesets(firewall={"enabled": True}, listeners=listeners)["lb1"])

    assert "ip daddr { 198.51.100.10 } tcp dport { 80, 8443 } accept" in lines
    assert lines[-3:] == ['counter name "refused" drop', "}", "}"]
    assert "type filter hook input priority filter; policy drop;" in lines


def test_source_networks_are_normalised_for_nft_and_ssh_is_open_when_none_are_given() -> None:
    firewall = {
        "enabled": True,
        "sshSourceCIDRs": ["10.1.2.3/8", "10.9.0.0/16", "192.0.2.0/24"],
        "listenerSourceCIDRs": ["198.51.100.77/24"],
    }

    restricted = rulesets(firewall=firewall)["lb1"]
    open_ssh = rulesets(firewall={"enabled": True})["lb1"]

    # Host bits cleared, the network inside another merged: nft refuses both in a set.
    assert "elements = { 10.0.0.0/8, 192.0.2.0/24 }" in restricted
    assert "tcp dport { 80, 443 } ip saddr { 198.51.100.0/24 } accept" in restricted
    assert "elements = { 0.0.0.0/0 }" in open_ssh
    assert "tcp dport 22 ip saddr @ssh_sources accept" in open_ssh


def test_a_ruleset_change_asks_the_agent_to_load_it_and_reloads_neither_service() -> None:
    layout = dataclasses.replace(LAYOUT, firewall_path=RULESET)

    assert layout.services_for([RULESET]) == [f"firewall:{RULESET}"]
    assert layout.services_for(["/etc/keepalived/keepalived.conf"]) == ["keepalived"]
    assert layout.services_for(["/etc/nginx/nginx.conf", RULESET]) == ["nginx", f"firewall:{RULESET}"]
