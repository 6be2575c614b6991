"""The kubelet node's pure parts: where its address range goes, its CNI network, its images, and the record
of the machine's state it restores from (testbed/nodehost.py, testbed/images.py)."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import tarfile
from pathlib import Path

import pytest

from testbed import machine
from testbed.addressing import DOCUMENTATION_PLAN, InterfaceAddress, Protected, choose_plan
from testbed.images import single_file_layer, write_docker_archive
from testbed.nodehost import HostRecord, NodeHostError, choose_node_network, cni_conflist

ROUTES = ({"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"}, {"dst": "192.0.2.0/24", "dev": "eth0"})
REGISTRY = Protected(ipaddress.IPv4Network("203.0.113.80/32"), "apt source deb.debian.org")


def facts(*interfaces: str, routes: tuple[dict[str, str], ...] = ROUTES) -> machine.Machine:
    addresses = tuple(
        InterfaceAddress(f"if{n}", ipaddress.IPv4Interface(a)) for n, a in enumerate(interfaces)
    )
    return machine.Machine(routes=routes, interface_addresses=addresses, protected=(REGISTRY,))


def test_the_node_takes_the_top_of_the_benchmarking_range() -> None:
    assert choose_node_network([], facts()) == ipaddress.IPv4Network("198.19.255.0/24")


def test_the_node_keeps_clear_of_the_machines_addresses_routes_and_the_lab() -> None:
    taken = facts("198.19.255.7/32", routes=(*ROUTES, {"dst": "198.19.254.0/23", "dev": "eth1"}))
    lab = [ipaddress.IPv4Network("198.19.253.0/24")]
    assert choose_node_network(lab, taken) == ipaddress.IPv4Network("198.19.252.0/24")


def test_a_lab_started_after_the_node_sees_its_address_and_keeps_its_own_plan() -> None:
    node = choose_node_network([], facts())
    record = HostRecord(network=str(node))
    with_node = facts(f"{record.node_address}/32")
    plan = choose_plan(with_node.routes, with_node.interface_addresses, with_node.protected)
    assert not any(network.overlaps(node) for network in plan.networks.values())
    assert plan.front == DOCUMENTATION_PLAN.front


def test_no_free_range_is_an_error_naming_the_range() -> None:
    everything = facts(routes=(*ROUTES, {"dst": "198.18.0.0/15", "dev": "eth1"}))
    with pytest.raises(NodeHostError, match=r"198\.18\.0\.0/15"):
        choose_node_network([], everything)


def test_pods_get_the_upper_half_of_the_range_on_a_bridge_without_gateway() -> None:
    record = HostRecord(network="198.19.255.0/24")
    assert str(record.node_address) == "198.19.255.1"
    conflist = json.loads(cni_conflist(record, Path("/x/ipam")))
    bridge = conflist["plugins"][0]
    assert (bridge["type"], bridge["isGateway"], bridge["ipMasq"]) == ("bridge", False, False)
    assert bridge["ipam"]["ranges"] == [
        [{"subnet": "198.19.255.0/24", "rangeStart": "198.19.255.128", "rangeEnd": "198.19.255.254"}]
    ]


def test_the_record_survives_the_state_file() -> None:
    record = HostRecord(
        network="198.19.255.0/24",
        sysctls={"kernel.panic": "1"},
        created_paths=["/var/lib/kubelet"],
        nft_tables=["ip filter"],
    )
    assert HostRecord.from_json(record.to_json()) == record


def test_the_docker_archive_is_what_docker_save_writes(tmp_path: Path) -> None:
    archive = tmp_path / "pause.tar"
    layer = single_file_layer("/pause", b"\x7fELF")
    write_docker_archive(archive, "localhost/lbpair/pause:1", layer, ["/pause"])
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        stored_layer = tar.extractfile("layer.tar").read()  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["localhost/lbpair/pause:1"]
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(stored_layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(stored_layer)) as layer_tar:
        pause = layer_tar.getmember("pause")
        assert (pause.mode, layer_tar.getmember("tmp").mode) == (0o755, 0o1777)
