"""The lab's refusal to start on a machine whose routes overlap its ranges (pure part)."""

from __future__ import annotations

from testbed.addressing import find_overlapping_routes


def test_address_plan_overlap_check_names_the_route() -> None:
    uplink = {"dst": "192.0.2.0/24", "dev": "eth0"}
    clashing = {"dst": "198.51.100.0/25", "gateway": "192.0.2.1", "dev": "eth0"}
    assert find_overlapping_routes([{"dst": "default", "gateway": "192.0.2.1"}, uplink]) == []
    overlaps = find_overlapping_routes([uplink, clashing])
    assert [(str(network), route) for network, route in overlaps] == [
        ("198.51.100.0/24", "198.51.100.0/25 via 192.0.2.1 dev eth0")
    ]
