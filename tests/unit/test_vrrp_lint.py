"""The VRRP linter: single-object rules refused at admission (the CEL rules, and the same rules in the
model, which these tests drive: tests/e2e/test_vrrp_lint.py sends the same table to a real API server),
and the cross-pair rule, a shared virtual router id on one segment, reported in each pair's status."""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest

from lbpair.build.router_ids import RouterIdClaim, router_id_condition
from lbpair.config import OperatorConfig
from lbpair.events import Event
from lbpair.metrics import PrometheusRecorder
from lbpair.model import SpecError, parse_pair
from lbpair.model.status import PairStatus, find_condition
from lbpair.reconcile import Reconciler
from tests.unit.corpus import parse_path, with_value
from tests.unit.fake_node import FakeNode, FakeNodes
from tests.unit.samples import Sample, sample
from tests.unit.test_reconcile import VIP, FakeClock, RecordingSink

AT = "2026-11-30T12:00:00Z"


@dataclass(frozen=True)
class LintCase:
    """A change to the seed pair that a rule refuses, naming `field`, and a fix that it accepts."""

    name: str
    bad: dict[str, Any]
    field: str
    message: str
    fixed: dict[str, Any]


SEED_CASES = (
    LintCase(
        "adverts rarer than the check, with a weight",
        {"spec.vrrp.advertIntervalMilliseconds": 3000},  # the seed checks every 2 s with weight -5
        "spec.vrrp.advertIntervalMilliseconds",
        "must not exceed healthCheck.intervalSeconds when healthCheck.weight is not 0",
        {"spec.vrrp.advertIntervalMilliseconds": 3000, "spec.healthCheck.intervalSeconds": 3},
    ),
    LintCase(
        "nopreempt with a non-zero weight",
        {"spec.vrrp.preempt": {"mode": "NoPreempt"}},
        "spec.healthCheck.weight",
        "healthCheck.weight must be 0 with vrrp.preempt.mode NoPreempt",
        {"spec.vrrp.preempt": {"mode": "NoPreempt"}, "spec.healthCheck.weight": 0},
    ),
    LintCase(
        "equal priorities",
        {"spec.nodes[1].priority": 101},
        "spec.nodes",
        "the two nodes must have different priorities",
        {"spec.nodes[1].priority": 100},
    ),
    LintCase(
        "unicast peering with both peers on one address",
        {"spec.vrrp.peering": "Unicast", "spec.nodes[1].vrrpAddress": "198.51.100.11"},
        "spec.nodes",
        "the two nodes must have different vrrpAddress values",
        {"spec.vrrp.peering": "Unicast", "spec.nodes[1].vrrpAddress": "198.51.100.13"},
    ),
    LintCase(
        "VIP outside the nodes' network",
        {"spec.vips[0].address": "198.51.101.10/24"},
        "spec.vips",
        "every VIP must lie in the network of both nodes' vrrpAddress",
        {"spec.vips[0].address": "198.51.100.20/24"},
    ),
)


def seed_pair(changes: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(sample("seed-tutorial.yaml").pair)
    for path, value in changes.items():
        document = with_value(document, parse_path(path), value)
    return document


@pytest.mark.parametrize("case", SEED_CASES, ids=lambda case: case.name)
def test_a_vrrp_trap_is_refused_naming_the_field_and_its_fix_accepted(case: LintCase) -> None:
    with pytest.raises(SpecError) as refused:
        parse_pair(seed_pair(case.bad))

    assert any(p.startswith(case.field) and case.message in p for p in refused.value.problems), refused.value
    parse_pair(seed_pair(case.fixed))


def test_the_advert_rule_leaves_weight_0_and_track_process_alone() -> None:
    slow_adverts = {"spec.vrrp.advertIntervalMilliseconds": 3000}
    parse_pair(seed_pair({**slow_adverts, "spec.healthCheck.weight": 0}))
    parse_pair(seed_pair({**slow_adverts, "spec.healthCheck.method": "TrackProcess"}))


def test_unicast_peering_always_has_both_peers() -> None:
    """A pair is exactly two nodes, each with its own vrrpAddress: a unicast peer cannot be missing."""
    one_node = seed_pair({"spec.vrrp.peering": "Unicast"})
    del one_node["spec"]["nodes"][1]
    no_address = seed_pair({"spec.vrrp.peering": "Unicast"})
    del no_address["spec"]["nodes"][1]["vrrpAddress"]

    for document, field in ((one_node, "spec.nodes"), (no_address, "spec.nodes[1].vrrpAddress")):
        with pytest.raises(SpecError) as refused:
            parse_pair(document)
        assert any(problem.startswith(field) for problem in refused.value.problems), refused.value


def claim(pair: str, router_ids: set[int], *networks: str) -> RouterIdClaim:
    return RouterIdClaim(pair, frozenset(router_ids), frozenset(map(ipaddress.IPv4Network, networks)))


@pytest.mark.parametrize(
    ("other", "shared"),
    [
        (claim("b/two", {51}, "198.51.100.0/24"), True),
        (claim("b/two", {51}, "198.51.100.0/25"), True),  # overlapping networks are one segment
        (claim("b/two", {51}, "198.51.101.0/24"), False),  # another segment
        (claim("b/two", {52}, "198.51.100.0/24"), False),
        (claim("a/one", {51}, "198.51.100.0/24"), False),  # itself
    ],
)
def test_a_router_id_is_shared_only_on_an_overlapping_network(other: RouterIdClaim, shared: bool) -> None:
    own = claim("a/one", {51}, "198.51.100.0/24")

    condition = router_id_condition(own, [other], at=AT)

    assert (condition.status, condition.reason) == (
        ("True", "VirtualRouterIdShared") if shared else ("False", "Unique")
    )
    if shared:
        assert condition.message.startswith(
            "virtual_router_id 51 is also used by pair b/two on 198.51.100.0/24"
        )


class Pairs:
    """Two pairs managed by one operator (one Reconciler), on fake nodes."""

    def __init__(self, first: Sample, second: Sample) -> None:
        lb1 = FakeNode("lb1", addresses={"198.51.100.11/24"}, vips={VIP})
        lb2 = FakeNode("lb2", addresses={"198.51.100.12/24"})
        self.sink = RecordingSink()
        self.samples = {"seed": first, "edge": second}
        self.reconciler = Reconciler(
            FakeNodes({"lb1": lb1, "lb2": lb2}),
            self.sink,
            PrometheusRecorder(),
            OperatorConfig(verify_timeout_seconds=0.3),
            FakeClock(),
        )

    def run_pass(self, name: str) -> list[Event]:
        return self.reconciler.run_pass(self.samples[name].resources())

    def conflict(self, name: str) -> tuple[str, str, str]:
        statuses = [s for plural, n, s in self.sink.writes if plural == "loadbalancerpairs" and n == name]
        last = statuses[-1]
        assert isinstance(last, PairStatus)
        found = find_condition(last.conditions, "VirtualRouterIdConflict")
        assert found is not None
        return found.status, found.reason, found.message


def conflict_events(events: list[Event]) -> list[str]:
    return [f"{event.type} {event.reason}" for event in events if event.reason == "VirtualRouterIdShared"]


def test_two_pairs_sharing_a_router_id_on_one_segment_both_get_the_condition_and_one_event() -> None:
    edge = sample("active-active.yaml")
    edge.pair["spec"]["vrrp"]["virtualRouterId"] = 50  # its second instance takes 51, the seed's id
    pairs = Pairs(sample("seed-tutorial.yaml"), edge)

    assert conflict_events(pairs.run_pass("seed")) == []
    assert pairs.conflict("seed")[:2] == ("False", "Unique")
    assert conflict_events(pairs.run_pass("edge")) == ["Warning VirtualRouterIdShared"]
    assert pairs.conflict("edge") == (
        "True",
        "VirtualRouterIdShared",
        "virtual_router_id 51 is also used by pair demo/seed on 198.51.100.0/24 (keepalived tells pairs on "
        "a segment apart by virtual_router_id only)",
    )
    assert conflict_events(pairs.run_pass("seed")) == ["Warning VirtualRouterIdShared"]
    assert pairs.conflict("seed")[2].startswith("virtual_router_id 51 is also used by pair demo/edge")
    assert conflict_events(pairs.run_pass("seed")) == []  # once per transition

    edge.pair["spec"]["vrrp"]["virtualRouterId"] = 70
    edge.pair["metadata"]["generation"] = 2
    pairs.run_pass("edge")
    pairs.run_pass("seed")
    assert pairs.conflict("edge")[:2] == ("False", "Unique")
    assert pairs.conflict("seed")[:2] == ("False", "Unique")
