"""What a Prometheus scrape of the operator shows after passes over the seed pair on fake nodes: the
recorder served on a free port and read over HTTP, as Prometheus reads it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbpair.model.common import ObjectRef
from lbpair.nodes.client import NodeError, NodeUnreachableError
from lbpair.nodes.operations import ValidationFailedError
from testbed.metrics import Scrape, scrape
from tests.unit.samples import NAMESPACE
from tests.unit.test_reconcile import NGINX_CONF, REFUSAL, VIP, World, make_world, refuse_on_both_nodes

PAIR = {"namespace": NAMESPACE, "pair": "seed"}
SEED = ObjectRef(NAMESPACE, "seed")


class Served:
    """The seed pair's world with its metrics served, scraped on demand."""

    def __init__(self, world: World, port: int) -> None:
        self.world, self.port = world, port

    def run_pass(self) -> Scrape:
        """A pass, its events posted as the pair's daemon posts them (handlers.converge)."""
        self.world.metrics.events_posted(SEED, self.world.run_pass())
        return scrape(self.port)

    def passes(self, found: Scrape, outcome: str) -> float | None:
        return found.value("lbpair_passes_total", **PAIR, outcome=outcome)

    def rollouts(self, found: Scrape, node: str, outcome: str, reason: str) -> float | None:
        labels = {**PAIR, "node": node, "outcome": outcome, "reason": reason}
        return found.value("lbpair_node_rollouts_total", **labels)

    def config_hashes(self, found: Scrape, node: str) -> list[str]:
        return [
            dict(labels)["config_hash"]
            for name, labels in found.samples
            if name == "lbpair_node_config_info" and ("node", node) in labels
        ]


@pytest.fixture
def served() -> Iterator[Served]:
    world = make_world()
    endpoint = world.metrics.serve(0)
    try:
        yield Served(world, endpoint.port)
    finally:
        endpoint.stop()


def test_first_pass_shows_the_pair_ready_the_vip_on_lb1_and_both_nodes_applied(served: Served) -> None:
    found = served.run_pass()

    assert {o: served.passes(found, o) for o in ("applied", "unchanged", "rejected", "error")} == {
        "applied": 1,
        "unchanged": 0,
        "rejected": 0,
        "error": 0,
    }
    assert found.value("lbpair_pass_duration_seconds_count", **PAIR) == 1
    assert found.value("lbpair_pair_ready", **PAIR) == 1
    assert found.value("lbpair_node_vips_held", **PAIR, node="lb1") == 1
    assert found.value("lbpair_node_vips_held", **PAIR, node="lb2") == 0
    assert found.value("lbpair_node_reachable", **PAIR, node="lb1") == 1
    assert found.value("lbpair_node_reachable", **PAIR, node="lb2") == 1
    assert served.rollouts(found, "lb1", "applied", "Applied") == 1
    assert served.rollouts(found, "lb2", "applied", "Applied") == 1
    assert (found.value("lbpair_pair_last_applied_timestamp_seconds", **PAIR) or 0) > 0
    assert found.value("lbpair_pair_refused_objects", **PAIR) == 0
    assert "process_resident_memory_bytes" in found.names()


def test_a_pass_with_nothing_to_change_counts_as_unchanged_and_keeps_the_apply_time(served: Served) -> None:
    applied = served.run_pass()

    found = served.run_pass()

    assert (served.passes(found, "applied"), served.passes(found, "unchanged")) == (1, 1)
    last_applied = "lbpair_pair_last_applied_timestamp_seconds"
    assert found.value(last_applied, **PAIR) == applied.value(last_applied, **PAIR)
    assert served.rollouts(found, "lb1", "applied", "Applied") == 1


def test_a_refused_config_counts_a_failed_rollout_with_its_reason(served: Served) -> None:
    served.world.lb2.failing["validate"] = ValidationFailedError(REFUSAL)

    found = served.run_pass()

    assert served.passes(found, "rollout-failed") == 1
    assert served.rollouts(found, "lb2", "failed", "Rejected") == 1
    assert served.rollouts(found, "lb1", "applied", "Applied") is None  # never tried: lb2 goes first
    assert found.value("lbpair_pair_last_applied_timestamp_seconds", **PAIR) is None


def test_an_unreachable_holder_shows_unreachable_and_the_pair_not_ready(served: Served) -> None:
    served.run_pass()
    served.world.lb1.failing["observe"] = NodeUnreachableError("203.0.113.11:22: timed out")
    served.world.lb1.vips.clear()

    found = served.run_pass()

    assert found.value("lbpair_node_reachable", **PAIR, node="lb1") == 0
    assert found.value("lbpair_node_vips_held", **PAIR, node="lb1") == 0
    assert found.value("lbpair_pair_ready", **PAIR) == 0


def test_an_object_the_nodes_refuse_is_counted_as_left_out(served: Served) -> None:
    served.run_pass()
    refuse_on_both_nodes(served.world, "refused.example.com", names_file=True)
    dev = served.world.resources.vhost("dev")
    dev["spec"]["serverNames"] = ["refused.example.com"]
    dev["metadata"]["generation"] = 2

    found = served.run_pass()

    assert found.value("lbpair_pair_refused_objects", **PAIR) == 1
    assert served.rollouts(found, "lb2", "failed", "Rejected") == 1
    assert served.rollouts(found, "lb2", "applied", "Applied") == 2  # without it, right after
    assert found.value("lbpair_pair_ready", **PAIR) == 1


def test_a_failed_pass_counts_as_an_error(served: Served) -> None:
    served.world.lb1.failing["observe"] = RecursionError("maximum recursion depth exceeded")

    found = served.run_pass()

    assert served.passes(found, "error") == 1
    assert found.value("lbpair_pair_ready", **PAIR) == 0


def test_a_deleted_pair_leaves_no_series_behind(served: Served) -> None:
    served.run_pass()
    resources = served.world.resources

    assert served.world.reconciler.remove_from_nodes(resources.pair, resources.secret_lookup) == ""

    found = scrape(served.port)
    assert not [name for name, labels in found.samples if ("pair", "seed") in labels]


def test_each_reload_on_a_node_is_counted_per_service(served: Served) -> None:
    first = served.run_pass()
    served.world.resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 3

    found = served.run_pass()

    for node in (served.world.lb1, served.world.lb2):
        for service in ("nginx", "keepalived"):
            reloads = sum(service in each for each in node.reloaded)
            labels = {**PAIR, "node": node.name, "service": service}
            assert found.value("lbpair_node_reloads_total", **labels) == reloads
    assert served.world.lb1.reloaded[-1] == ["nginx"]  # the edit touched nginx's files alone
    nginx_on_lb1 = {**PAIR, "node": "lb1", "service": "nginx"}
    assert found.value("lbpair_node_reloads_total", **nginx_on_lb1) == (
        (first.value("lbpair_node_reloads_total", **nginx_on_lb1) or 0) + 1
    )


def test_a_rollback_is_counted_on_its_node(served: Served) -> None:
    served.run_pass()
    served.world.resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 3
    served.world.lb2.failing_once["reload"] = NodeError("reload failed (exit 1)")

    found = served.run_pass()

    assert found.value("lbpair_node_rollbacks_total", **PAIR, node="lb2") == 1
    assert found.value("lbpair_node_rollbacks_total", **PAIR, node="lb1") == 0
    assert served.rollouts(found, "lb2", "failed", "RolledBack") == 1


def test_hand_edits_reverted_are_counted(served: Served) -> None:
    first = served.run_pass()
    edited = served.world.lb1.files[NGINX_CONF]
    served.world.lb1.files[NGINX_CONF] = type(edited)(edited.path, edited.content + "# edited by hand\n")

    found = served.run_pass()

    assert first.value("lbpair_drift_reverts_total", **PAIR) == 0
    assert found.value("lbpair_drift_reverts_total", **PAIR) == 1


def test_a_failover_is_counted_and_the_vip_shown_on_its_new_holder(served: Served) -> None:
    first = served.run_pass()
    served.world.lb1.vips.clear()
    served.world.lb2.vips.add(VIP)

    found = served.run_pass()

    assert first.value("lbpair_failovers_total", **PAIR) == 0
    assert found.value("lbpair_failovers_total", **PAIR) == 1
    assert found.value("lbpair_node_vips_held", **PAIR, node="lb2") == 1
    assert found.value("lbpair_pair_split_brain", **PAIR) == 0


def test_split_brain_shows_while_both_nodes_hold_the_vip_and_is_counted_once(served: Served) -> None:
    served.run_pass()
    served.world.lb2.vips.add(VIP)

    during = [served.run_pass(), served.run_pass()]
    served.world.lb2.vips.clear()
    healed = served.run_pass()

    assert [found.value("lbpair_pair_split_brain", **PAIR) for found in [*during, healed]] == [1, 1, 0]
    assert healed.value("lbpair_split_brains_total", **PAIR) == 1


def test_config_info_names_the_hash_each_node_runs_and_only_that_one(served: Served) -> None:
    first = served.run_pass()
    served.world.resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 3

    found = served.run_pass()

    assert served.config_hashes(first, "lb1") != served.config_hashes(found, "lb1")
    for node in (served.world.lb1, served.world.lb2):
        assert served.config_hashes(found, node.name) == [node.live_hash]


def test_last_probe_time_stays_at_the_last_answer_of_an_unreachable_node(served: Served) -> None:
    first = served.run_pass()
    served.world.lb2.failing["observe"] = NodeUnreachableError("203.0.113.12:22: timed out")

    found = served.run_pass()

    probed = "lbpair_node_last_probe_timestamp_seconds"
    assert (first.value(probed, **PAIR, node="lb2") or 0) > 0
    assert found.value(probed, **PAIR, node="lb2") == first.value(probed, **PAIR, node="lb2")
    assert (found.value(probed, **PAIR, node="lb1") or 0) >= (first.value(probed, **PAIR, node="lb1") or 0)


def test_the_leader_gauge_says_whether_this_process_acts(served: Served) -> None:
    served.world.metrics.leading(False)
    standing_by = scrape(served.port).value("lbpair_leader")
    served.world.metrics.leading(True)

    assert (standing_by, scrape(served.port).value("lbpair_leader")) == (0, 1)
