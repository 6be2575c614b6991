"""spec.firewall on the lab: the seed pair (multicast VRRP, fast adverts) with nftables rules on both nodes.

What a user sees: the table on both nodes; the VIP served and only one node holding it (the peers' VRRP
passes: a dropped advert would make both masters); failover still moving the VIP; a lab address that is
not allowed reaching a port the pair does not list gets no answer at all (dropped, not refused); VRRP
adverts from a third lab namespace (the client) counted as refused while the VIP stays put; a ruleset
that would lock the operator out of SSH rolled back with a RolledBack event naming the field; turning the
firewall off deletes the table, and the same port refuses at once again.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from testbed.addressing import CLIENT, Segment
from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    deploy_documents,
    load_sample_on_lab,
    tear_down_on_shared_nodes,
    wait_for,
)

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-firewall-e2e"
PAIR = "seed"
HOST = "www.example.com"
NODES = ("lb1", "lb2")
UNLISTED_PORT = 8443  # no listener of the pair, nothing listens there
CURL_REFUSED, CURL_TIMED_OUT = 7, 28
ROGUE_ADVERTS = 20
# A VRRPv3 advert for the pair's router id with the highest priority, sent by the client: were it
# admitted, the holder would step down to it.
ROGUE_SENDER = """
import socket, struct, sys, time
source, group, vip, count = sys.argv[1], "224.0.0.18", sys.argv[2], int(sys.argv[3])
def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
advert = struct.pack("!BBBBHH", 0x31, 51, 255, 1, 10, 0) + socket.inet_aton(vip)
pseudo = socket.inet_aton(source) + socket.inet_aton(group) + struct.pack("!BBH", 0, 112, len(advert))
advert = advert[:6] + struct.pack("!H", checksum(pseudo + advert)) + advert[8:]
sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
for _ in range(count):
    sender.sendto(advert, (group, 0))
    time.sleep(0.05)
"""


@dataclass
class Deployed:
    cluster: ControlPlane
    lab: Lab

    @property
    def vip(self) -> str:
        return str(self.lab.plan.vip_primary)

    def kubectl(self, *args: str) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args).stdout

    def patch_firewall(self, firewall: dict[str, Any]) -> None:
        patch = json.dumps({"spec": {"firewall": firewall}})
        self.kubectl("patch", "lbpair", PAIR, "--type=merge", "-p", patch)

    def conditions(self) -> dict[str, str]:
        status = json.loads(self.kubectl("get", "lbpair", PAIR, "-o", "json")).get("status", {})
        return {c["type"]: c["status"] for c in status.get("conditions", [])}

    def ready(self) -> bool:
        conditions = self.conditions()
        return conditions.get("Ready") == "True" and conditions.get("Programmed") == "True"

    def events(self, reason: str) -> list[dict[str, Any]]:
        listed = self.kubectl("get", "events", "--field-selector", f"reason={reason}", "-o", "json")
        return list(json.loads(listed)["items"])

    def nft(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.lab.exec(node, "nft", *args, check=False)

    def has_table(self, node: str) -> bool:
        return self.nft(node, "list", "table", "inet", "lbpair").returncode == 0

    def ssh_sources(self, node: str) -> str:
        return self.nft(node, "list", "set", "inet", "lbpair", "ssh_sources").stdout

    def counter(self, node: str, name: str) -> int:
        listed = json.loads(self.nft(node, "-j", "list", "counter", "inet", "lbpair", name).stdout)
        (counter,) = [item["counter"] for item in listed["nftables"] if "counter" in item]
        return int(counter["packets"])

    def curl_exit_from_client(self, port: int) -> int:
        """curl's exit status for http://VIP:port/ from the client (front network), at most 2 s."""
        url = f"http://{self.vip}:{port}/"
        return self.lab.exec(
            CLIENT, "curl", "-s", "-o", "/dev/null", "--max-time", "2", url, check=False
        ).returncode


@pytest.fixture(scope="module")
def deployed(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    documents = load_sample_on_lab(lab)
    (pair,) = [document for document in documents if document["kind"] == "LoadBalancerPair"]
    pair["spec"]["vrrp"] = {"virtualRouterId": 51, "peering": "Multicast"}  # VRRPv3, 100 ms adverts
    pair["spec"]["healthCheck"] = {"restartNginx": False}  # a killed nginx stays down: the peer must serve
    pair["spec"]["firewall"] = {"enabled": True, "sshSourceCIDRs": [str(lab.plan.mgmt)]}
    operator_kubeconfig = deploy_documents(cluster, lab, NAMESPACE, documents)
    operator = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    try:
        deployment = Deployed(cluster, lab)
        wait_for(deployment.ready, timeout=120, what="pair Ready")
        yield deployment
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])
        for node in NODES:  # the pair's deletion (Restore) deletes the table: a node left clean
            assert not deployed_table(lab, node), f"table inet lbpair left on {node}"


def deployed_table(lab: Lab, node: str) -> bool:
    return lab.exec(node, "nft", "list", "table", "inet", "lbpair", check=False).returncode == 0


def test_the_table_is_loaded_on_both_nodes_and_the_vip_serves_from_one_holder(deployed: Deployed) -> None:
    for node in NODES:
        assert deployed.has_table(node)
        assert str(deployed.lab.plan.mgmt) in deployed.ssh_sources(node)
    # Both nodes hear each other's adverts through the firewall: one holder, not two masters.
    wait_for(lambda: deployed.lab.vip_holders(deployed.vip) == ["lb1"], timeout=10, what="VIP on lb1 only")
    response = deployed.lab.http_get_via(deployed.vip, HOST, "/")
    assert response.succeeded, response.error


def test_a_port_the_pair_does_not_list_is_dropped_for_a_lab_address(deployed: Deployed) -> None:
    refused_before = deployed.counter("lb1", "refused")

    status = deployed.curl_exit_from_client(UNLISTED_PORT)

    assert status == CURL_TIMED_OUT  # no RST: the SYN was dropped (without the firewall: refused, exit 7)
    assert deployed.counter("lb1", "refused") > refused_before


def test_vrrp_adverts_from_a_third_namespace_are_dropped_and_the_vip_stays(deployed: Deployed) -> None:
    source = str(deployed.lab.plan.host(CLIENT).address(Segment.FRONT))
    before = {node: deployed.counter(node, "vrrp_refused") for node in NODES}

    deployed.lab.exec(
        CLIENT, "python3", "-c", ROGUE_SENDER, source, deployed.vip, str(ROGUE_ADVERTS), timeout=15
    )

    for node in NODES:
        assert deployed.counter(node, "vrrp_refused") - before[node] >= ROGUE_ADVERTS
    assert deployed.lab.vip_holders(deployed.vip) == ["lb1"]


def test_failover_still_moves_the_vip_and_the_peer_serves(deployed: Deployed) -> None:
    lab = deployed.lab
    try:
        lab.exec("lb1", "pkill", "-KILL", "nginx")
        wait_for(
            lambda: lab.vip_holders(deployed.vip) == ["lb2"], timeout=5, interval=0.02, what="VIP on lb2"
        )
        served = wait_for(
            lambda: lab.http_get_via(deployed.vip, HOST, "/", timeout=1).succeeded, timeout=5, what="served"
        )
    finally:
        lab.exec("lb1", "systemctl", "start", "nginx")
    assert served
    wait_for(lambda: lab.vip_holders(deployed.vip) == ["lb1"], timeout=30, what="VIP back on lb1")
    wait_for(deployed.ready, timeout=60, what="Ready again")


def test_a_ruleset_that_would_lock_the_operator_out_is_rolled_back(deployed: Deployed) -> None:
    front = str(deployed.lab.plan.front)
    try:
        deployed.patch_firewall({"sshSourceCIDRs": [front]})
        rolled_back = wait_for(lambda: deployed.events("RolledBack"), timeout=60, what="RolledBack event")
        assert "sshSourceCIDRs" in rolled_back[0]["message"]
        assert deployed.conditions().get("Programmed") == "False"
        for node in NODES:  # the last good ruleset is loaded; the operator still reaches both nodes
            assert str(deployed.lab.plan.mgmt) in deployed.ssh_sources(node)
            assert front not in deployed.ssh_sources(node)
    finally:
        deployed.patch_firewall({"sshSourceCIDRs": [str(deployed.lab.plan.mgmt)]})
    wait_for(deployed.ready, timeout=120, what="Ready again")


def test_turning_the_firewall_off_deletes_the_table(deployed: Deployed) -> None:
    deployed.patch_firewall({"enabled": False, "sshSourceCIDRs": None})

    for node in NODES:
        wait_for(lambda node=node: not deployed.has_table(node), timeout=60, what=f"table gone on {node}")
    wait_for(deployed.ready, timeout=60, what="Ready")
    assert deployed.curl_exit_from_client(UNLISTED_PORT) == CURL_REFUSED
    assert deployed.lab.http_get_via(deployed.vip, HOST, "/").succeeded
