"""Planned drain and failover drills through the coordinator, on scripted fake nodes: what a user sees in
the maintenance file on each node, status (nodes[].maintenance, the Maintenance condition, lastDrill) and
events. The e2e tests (tests/e2e/test_drain.py) prove the same with the real keepalived."""

from __future__ import annotations

import datetime
import types

import pytest

from lbpair.build.keepalived import MAINTENANCE_PATH
from lbpair.drill import DRILL_ANNOTATION, DrillFailedError, vip_gap
from lbpair.model.status import DrillStatus, NodeStatus
from lbpair.nodes.client import NodeError, NodeUnreachableError
from lbpair.nodes.drill import VipSample, parse_vip_samples
from lbpair.nodes.observe import VrrpInstanceState
from tests.unit.test_reconcile import VIP, World, make_world, reasons

ADDRESS = VIP.split("/")[0]


@pytest.fixture
def world() -> World:
    made = make_world()
    made.run_pass()
    return made


def ask(world: World, node: int, maintenance: str) -> None:
    world.resources.pair["spec"]["nodes"][node]["maintenance"] = maintenance


def maintenance_files(world: World) -> tuple[str, str]:
    return world.lb1.files[MAINTENANCE_PATH].content, world.lb2.files[MAINTENANCE_PATH].content


def node(world: World, name: str) -> NodeStatus:
    (found,) = [n for n in world.sink.last_pair_status().nodes if n.name == name]
    return found


def keepalived_moves_the_vip(world: World, *, to: str) -> None:
    """What the real keepalived does with the maintenance file: the drained node goes to FAULT."""
    drained, peer = (world.lb1, world.lb2) if to == "lb2" else (world.lb2, world.lb1)
    drained.vips, peer.vips = set(), {VIP}
    drained.vrrp = (VrrpInstanceState("lbpair_1", "FAULT", 0),)
    peer.vrrp = ()


def test_every_node_runs_an_undrained_maintenance_file_by_default(world: World) -> None:
    assert maintenance_files(world) == ("0\n", "0\n")
    assert world.condition("Maintenance") == ("False", "InService", "no node is drained")
    assert [n.maintenance for n in world.sink.last_pair_status().nodes] == ["None", "None"]


def test_a_drained_node_is_drained_once_its_peer_holds_the_vip_and_undrain_brings_it_back(
    world: World,
) -> None:
    ask(world, 0, "Drain")
    first = world.run_pass()
    files_when_asked, maintenance_when_asked = maintenance_files(world), node(world, "lb1").maintenance
    keepalived_moves_the_vip(world, to="lb2")
    drained_events = world.run_pass()
    drained = world.condition("Maintenance")
    ask(world, 0, "None")
    world.lb1.vrrp = ()
    back_events = world.run_pass()

    assert files_when_asked == ("1\n", "0\n")
    assert maintenance_when_asked == "Draining"
    assert "NodeDrained lb1 is drained" not in reasons(first)
    assert drained[:2] == ("True", "Drained")
    assert "safe to stop nginx or reboot lb1" in drained[2]
    assert "NodeDrained lb1 is drained" in reasons(drained_events)
    assert maintenance_files(world) == ("0\n", "0\n")
    assert node(world, "lb1").maintenance == "None"
    assert "NodeUndrained lb1 is back in service" in reasons(back_events)


def test_draining_the_only_reachable_node_is_refused_and_told_once(world: World) -> None:
    world.lb2.failing["observe"] = NodeUnreachableError("198.51.100.12:22: timed out")
    world.run_pass()
    ask(world, 0, "Drain")
    refused_events = world.run_pass()
    again = world.run_pass()

    assert maintenance_files(world)[0] == "0\n"
    status, reason, message = world.condition("Maintenance")
    assert (status, reason) == ("False", "DrainRefused")
    assert message == "lb1 not drained: its peer lb2 is unreachable; draining lb1 would leave no node serving"
    assert node(world, "lb1").maintenance == "Refused"
    assert [e.reason for e in refused_events].count("DrainRefused") == 1
    assert "DrainRefused" not in [e.reason for e in again]


def test_when_both_nodes_are_asked_to_drain_only_one_is(world: World) -> None:
    ask(world, 0, "Drain")
    ask(world, 1, "Drain")
    world.run_pass()

    assert maintenance_files(world) == ("1\n", "0\n")
    assert node(world, "lb2").maintenance == "Refused"
    assert "lb2 not drained: its peer lb1 is drained" in world.condition("Maintenance")[2]


def test_a_drain_in_effect_is_lifted_when_the_peer_stops_serving(world: World) -> None:
    ask(world, 0, "Drain")
    world.run_pass()
    keepalived_moves_the_vip(world, to="lb2")
    world.run_pass()
    world.lb2.services["nginx"] = False
    world.run_pass()  # observes lb2 without nginx
    world.run_pass()

    assert maintenance_files(world)[0] == "0\n"
    assert node(world, "lb1").maintenance == "Refused"
    assert "its peer lb2 is not healthy (nginx not running)" in world.condition("Maintenance")[2]


# --- drills ---------------------------------------------------------------------------------------------


def request_drill(world: World, token: str) -> None:
    world.resources.pair["metadata"].setdefault("annotations", {})[DRILL_ANNOTATION] = token


def last_drill(world: World) -> DrillStatus:
    drill = world.sink.last_pair_status().last_drill
    assert drill is not None
    return drill


def script_round_trip(world: World) -> None:
    """What each node's watch sees: lb1 loses the VIP at 10.000 and lb2 gets it at 10.040; on the way back
    lb2 loses it at 20.000 and lb1 gets it at 20.025 (the nodes' clocks, in seconds)."""
    world.lb1.watches = [
        [VipSample(9700000, True), VipSample(10000000, False)],
        [VipSample(19700000, False), VipSample(20025000, True)],
    ]
    world.lb2.watches = [
        [VipSample(9700000, False), VipSample(10040000, True)],
        [VipSample(19700000, True), VipSample(20000000, False)],
    ]


def test_a_drill_moves_the_vip_there_and_back_and_records_it_once(world: World) -> None:
    request_drill(world, "2026-11-30-a")
    script_round_trip(world)
    events = world.run_pass()
    again = world.run_pass()

    drill = last_drill(world)
    assert (drill.token, drill.result, drill.vip, drill.from_node, drill.to_node) == (
        "2026-11-30-a",
        "Succeeded",
        ADDRESS,
        "lb1",
        "lb2",
    )
    assert (drill.takeover_seconds, drill.failback_seconds) == (0.04, 0.025)
    assert [e.reason for e in events if e.reason.startswith("Drill")] == ["DrillSucceeded"]
    assert not [e for e in again if e.reason.startswith("Drill")]
    assert last_drill(world) == drill
    assert maintenance_files(world) == ("0\n", "0\n")


def test_a_failback_where_both_nodes_held_the_vip_for_a_moment_left_nothing_unserved(world: World) -> None:
    request_drill(world, "overlap")
    script_round_trip(world)
    world.lb1.watches[1][1] = VipSample(19990000, True)  # lb1 preempts 10 ms before lb2 lets go
    world.run_pass()

    drill = last_drill(world)
    assert (drill.result, drill.failback_seconds) == ("Succeeded", 0.0)
    assert drill.message.endswith("failback: both nodes held it for 0.010 s")


def test_a_drill_is_refused_while_the_peer_is_unhealthy(world: World) -> None:
    world.lb2.services["nginx"] = False
    world.run_pass()
    request_drill(world, "t1")
    events = world.run_pass()

    drill = last_drill(world)
    assert drill.result == "Refused"
    assert "lb2" in drill.message
    assert [e.reason for e in events if e.reason.startswith("Drill")] == ["DrillRefused"]
    assert maintenance_files(world) == ("0\n", "0\n")


def test_a_drill_whose_vip_does_not_move_fails_and_leaves_both_nodes_undrained(world: World) -> None:
    request_drill(world, "t2")
    world.run_pass()

    drill = last_drill(world)
    assert (drill.result, drill.message) == ("Failed", f"{ADDRESS} did not leave lb1")
    assert maintenance_files(world) == ("0\n", "0\n")


def test_a_drill_is_refused_while_a_drain_is_asked_for(world: World) -> None:
    ask(world, 1, "Drain")
    world.run_pass()
    request_drill(world, "t3")
    world.run_pass()

    assert last_drill(world).result == "Refused"
    assert "maintenance" in last_drill(world).message


def test_watch_output_parses_into_samples_and_the_gap_is_between_the_two_changes() -> None:
    left = parse_vip_samples("1764460800000000 1\n1764460800120000 0\n")
    reached = parse_vip_samples("1764460800000100 0\n1764460800150000 1\n")

    assert left == [VipSample(1764460800000000, True), VipSample(1764460800120000, False)]
    assert vip_gap(ADDRESS, "lb1", left, "lb2", reached) == 0.03
    with pytest.raises(DrillFailedError, match="did not reach lb2"):
        vip_gap(ADDRESS, "lb1", left, "lb2", reached[:1])
    with pytest.raises(NodeError):
        parse_vip_samples("")


def test_a_later_pass_with_nothing_changed_writes_no_pair_status(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Maintenance condition keeps its lastTransitionTime, so an idle pass a minute later writes nothing
    (the API-writes e2e test once saw the pair written on every pass)."""
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
    clock = types.SimpleNamespace(datetime=types.SimpleNamespace(now=lambda _tz: later), UTC=datetime.UTC)
    monkeypatch.setattr("lbpair.reconcile.datetime", clock)
    writes = len(world.sink.writes)

    world.run_pass()

    assert len(world.sink.writes) == writes
