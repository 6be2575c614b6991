"""The lab's extra pairs of LB nodes in the address plan (pure parts): host numbers, VIPs, the variable."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter

import pytest

from testbed.addressing import (
    DOCUMENTATION_PLAN,
    MAX_PAIRS,
    AddressPlan,
    AddressPlanError,
    Role,
    Segment,
    pairs_from_environment,
)
from testbed.operator import VRRP_ROUTER_ID_BASE

MOST_PAIRS = AddressPlan(
    DOCUMENTATION_PLAN.front, DOCUMENTATION_PLAN.back, DOCUMENTATION_PLAN.mgmt, pairs=MAX_PAIRS
)


def test_the_default_plan_has_one_pair_and_the_hosts_it_always_had() -> None:
    assert DOCUMENTATION_PLAN.pairs == 1
    assert list(DOCUMENTATION_PLAN.hosts) == ["lb1", "lb2", "be1", "be2", "client"]
    assert DOCUMENTATION_PLAN.lb_nodes == ("lb1", "lb2")


def test_a_second_pair_gets_its_own_host_numbers_and_vips_on_the_same_networks() -> None:
    plan = AddressPlan(DOCUMENTATION_PLAN.front, DOCUMENTATION_PLAN.back, DOCUMENTATION_PLAN.mgmt, pairs=2)
    lb3, lb4 = (plan.hosts[name] for name in plan.pair_nodes(2))

    assert plan.pair_nodes(2) == ("lb3", "lb4")
    assert [str(lb3.interface(segment).address) for segment in Segment] == [
        "198.51.100.13/24",
        "198.18.0.3/24",
        "203.0.113.13/24",
    ]
    assert str(lb4.mgmt_address) == "203.0.113.14"
    assert [str(vip) for vip in plan.pair_vips(2)] == ["198.51.100.30", "198.51.100.40"]
    assert [str(vip) for vip in plan.vips] == ["198.51.100.10", "198.51.100.20"]  # pair 1's, as before
    assert plan.hosts["lb1"] == DOCUMENTATION_PLAN.hosts["lb1"]


def test_nodes_from_lb9_and_pairs_from_5_take_the_upper_host_numbers() -> None:
    lb9, lb10 = (MOST_PAIRS.hosts[name] for name in MOST_PAIRS.pair_nodes(5))
    last = MOST_PAIRS.hosts[f"lb{2 * MAX_PAIRS}"]

    assert MOST_PAIRS.pair_nodes(5) == ("lb9", "lb10")
    assert [str(lb9.interface(segment).address) for segment in Segment] == [
        "198.51.100.109/24",
        "198.18.0.109/24",
        "203.0.113.109/24",
    ]
    assert str(lb10.mgmt_address) == "203.0.113.110"
    assert [str(vip) for vip in MOST_PAIRS.pair_vips(4)] == ["198.51.100.70", "198.51.100.80"]
    assert [str(vip) for vip in MOST_PAIRS.pair_vips(5)] == ["198.51.100.209", "198.51.100.210"]
    assert [str(vip) for vip in MOST_PAIRS.pair_vips(10)] == ["198.51.100.219", "198.51.100.220"]
    assert all(interface.address.ip.packed[-1] < 255 for interface in last.interfaces)
    assert MOST_PAIRS.pair_vips(MAX_PAIRS)[-1] < MOST_PAIRS.front.broadcast_address


def test_the_lab_holds_at_least_ten_pairs_with_a_vrrp_router_id_each() -> None:
    router_ids = [VRRP_ROUTER_ID_BASE + pair for pair in range(1, MAX_PAIRS + 1)]

    assert MAX_PAIRS >= 10  # issue 9: ten pairs (20 LB nodes) on one operator
    assert len(set(router_ids)) == MAX_PAIRS
    assert max(router_ids) <= 255  # VRRP's virtual router id is one byte


def test_with_the_most_pairs_no_two_hosts_or_vips_share_an_address() -> None:
    addresses = [
        (interface.segment, interface.address.ip)
        for host in MOST_PAIRS.hosts.values()
        for interface in host.interfaces
    ]
    addresses += [
        (Segment.FRONT, vip) for pair in range(1, MAX_PAIRS + 1) for vip in MOST_PAIRS.pair_vips(pair)
    ]
    addresses.append((Segment.MGMT, MOST_PAIRS.root_mgmt_address.ip))

    assert [address for address, count in Counter(addresses).items() if count > 1] == []
    assert sum(host.role is Role.LB for host in MOST_PAIRS.hosts.values()) == 2 * MAX_PAIRS
    assert MOST_PAIRS.lb_nodes == tuple(f"lb{number}" for number in range(1, 2 * MAX_PAIRS + 1))


def test_the_pair_count_round_trips_through_the_state_file_and_old_records_read_as_one_pair() -> None:
    recorded = json.loads(json.dumps(MOST_PAIRS.as_dict()))
    old_record = {"front": "198.51.100.0/24", "back": "198.18.0.0/24", "mgmt": "203.0.113.0/24"}

    assert AddressPlan.from_dict(recorded) == MOST_PAIRS
    assert AddressPlan.from_dict(old_record) == DOCUMENTATION_PLAN


def test_pairs_outside_the_plan_are_refused() -> None:
    network = ipaddress.IPv4Network("198.51.100.0/24")
    with pytest.raises(ValueError, match=f"pairs 1 to {MAX_PAIRS}"):
        AddressPlan(network, network, network, pairs=MAX_PAIRS + 1)
    with pytest.raises(ValueError, match="this plan has 1 pair"):
        DOCUMENTATION_PLAN.pair_vips(2)


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("", 1), (" 2 ", 2), (str(MAX_PAIRS), MAX_PAIRS)])
def test_lbpair_lab_pairs_sets_how_many_pairs_the_lab_starts_with(value: str | None, expected: int) -> None:
    environment = {} if value is None else {"LBPAIR_LAB_PAIRS": value}
    assert pairs_from_environment(environment) == expected


@pytest.mark.parametrize("value", ["0", str(MAX_PAIRS + 1), "two", "-1", "1.5"])
def test_a_bad_lbpair_lab_pairs_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(AddressPlanError, match=f"LBPAIR_LAB_PAIRS='{value}'.*1 to {MAX_PAIRS} pairs"):
        pairs_from_environment({"LBPAIR_LAB_PAIRS": value})
