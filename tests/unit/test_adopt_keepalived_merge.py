"""Two nodes' keepalived.conf make one pair: each node's own settings go to its spec.nodes entry, what the
pair shares must agree, and a combination the model refuses is left out and named."""

from __future__ import annotations

import pytest

from lbpair.adopt.keepalived_map import KeepalivedImportError
from lbpair.model import parse_pair
from tests.unit.adopt_inputs import SEED_FILES, import_seed, seed_node


def keepalived(number: int, old: str, new: str) -> str:
    text = (SEED_FILES / f"keepalived-lb{number}.conf").read_text()
    assert old in text
    return text.replace(old, new)


def test_nodes_that_disagree_on_a_shared_setting_are_refused_naming_both_values() -> None:
    lb2 = seed_node(2, keepalived=keepalived(2, "virtual_router_id 51", "virtual_router_id 52"))

    with pytest.raises(
        KeepalivedImportError, match=r"disagree on vrrp .*virtualRouterId': 51.*virtualRouterId': 52"
    ):
        import_seed(seed_node(1), lb2)


def test_unicast_peers_and_sources_become_unicast_peering_and_vrrp_addresses() -> None:
    unicast = "unicast_src_ip 198.51.100.1{0}\n unicast_peer {{\n 198.51.100.1{1}\n }}"
    nodes = [
        seed_node(n, keepalived=keepalived(n, f"mcast_src_ip 198.51.100.1{n}", unicast.format(n, 3 - n)))
        for n in (1, 2)
    ]

    pair = next(doc for doc in import_seed(*nodes).documents if doc["kind"] == "LoadBalancerPair")

    spec = parse_pair(pair).spec
    assert spec.vrrp.peering == "Unicast"
    assert [(node.name, node.vrrp_address, node.priority) for node in spec.nodes] == [
        ("lb1", "198.51.100.11", 101),
        ("lb2", "198.51.100.12", 99),
    ]


def test_nopreempt_with_a_priority_weight_is_the_trap_the_model_refuses_so_the_weight_is_left_out() -> None:
    nodes = [
        seed_node(n, keepalived=keepalived(n, "advert_int 1", "advert_int 1\n nopreempt")) for n in (1, 2)
    ]

    imported = import_seed(*nodes)

    pair = parse_pair(next(doc for doc in imported.documents if doc["kind"] == "LoadBalancerPair")).spec
    assert (pair.vrrp.preempt.mode, pair.health_check.weight) == ("NoPreempt", 0)
    refused = "LoadBalancerPair seed: spec.healthCheck.weight: healthCheck.weight must be 0"
    assert any(str(note).startswith(refused) for note in imported.notes)


def test_a_vip_written_without_a_prefix_gets_the_node_network_s() -> None:
    pair = next(doc for doc in import_seed().documents if doc["kind"] == "LoadBalancerPair")

    assert pair["spec"]["vips"] == [{"address": "198.51.100.10/24"}]


def test_a_node_with_two_instances_and_one_with_one_is_refused() -> None:
    second = "\nvrrp_instance VI_2 {\n virtual_router_id 52\n}\n"
    lb1 = seed_node(1, keepalived=(SEED_FILES / "keepalived-lb1.conf").read_text() + second)

    with pytest.raises(KeepalivedImportError, match=r"vrrp_instance blocks per node \(.*: 2, .*: 1\)"):
        import_seed(lb1, seed_node(2))


def active_active(number: int, priorities: tuple[int, int]) -> str:
    """The seed's master-master variant: VI_1 (router id 51, VIP .10) and VI_2 (52, VIP .20) on each node."""
    first = keepalived(number, "priority 101" if number == 1 else "priority 99", f"priority {priorities[0]}")
    instance = first[first.index("vrrp_instance VI_1") :]
    second = (
        instance.replace("VI_1", "VI_2")
        .replace("virtual_router_id 51", "virtual_router_id 52")
        .replace(f"priority {priorities[0]}", f"priority {priorities[1]}")
        .replace("198.51.100.10", "198.51.100.20")
    )
    return first + "\n" + second


def test_two_instances_each_preferring_one_node_import_as_active_active() -> None:
    nodes = [
        seed_node(1, keepalived=active_active(1, (101, 99))),
        seed_node(2, keepalived=active_active(2, (99, 101))),
    ]

    imported = import_seed(*nodes)

    spec = parse_pair(next(doc for doc in imported.documents if doc["kind"] == "LoadBalancerPair")).spec
    assert spec.mode == "ActiveActive"
    assert (spec.vrrp.virtual_router_id, spec.vrrp.second_virtual_router_id) == (51, 52)
    assert [(vip.address, vip.preferred_node) for vip in spec.vips] == [
        ("198.51.100.10/24", "lb1"),
        ("198.51.100.20/24", "lb2"),
    ]
    assert [(node.name, node.priority) for node in spec.nodes] == [("lb1", 101), ("lb2", 99)]


def test_active_active_with_both_instances_preferring_one_node_is_refused() -> None:
    nodes = [
        seed_node(1, keepalived=active_active(1, (101, 101))),
        seed_node(2, keepalived=active_active(2, (99, 99))),
    ]

    with pytest.raises(
        KeepalivedImportError, match="each node must have the higher priority on one instance"
    ):
        import_seed(*nodes)


def test_nodes_with_different_vrrp_passwords_are_refused_without_printing_them() -> None:
    lb2 = seed_node(2, keepalived=keepalived(2, "auth_pass 1111", "auth_pass s3cret"))

    with pytest.raises(KeepalivedImportError) as refused:
        import_seed(seed_node(1), lb2)

    assert str(refused.value) == "the nodes disagree on the VRRP authentication (auth_pass)"
