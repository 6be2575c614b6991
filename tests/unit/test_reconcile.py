"""The coordinator over scripted fake nodes: every rollout branch, as a user would see it in status,
events and the files on each node. The e2e tests prove the same on real nodes; these reach the failure
paths that a real nginx is hard to drive into on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from lbpair import isolated_rollout
from lbpair.config import OperatorConfig
from lbpair.events import Event
from lbpair.metrics import PrometheusRecorder
from lbpair.model.common import ObjectRef
from lbpair.model.status import PairStatus, StatusModel, find_condition
from lbpair.nodes.client import NodeError, NodeUnreachableError
from lbpair.nodes.observe import VrrpInstanceState
from lbpair.nodes.operations import NodeOwnedElsewhereError, ValidationFailedError
from lbpair.reconcile import Reconciler
from tests.unit.fake_node import FakeNode, FakeNodes
from tests.unit.samples import NAMESPACE, Sample, sample

VIP = "198.51.100.10/24"
NGINX_CONF = "/etc/nginx/nginx.conf"
REFUSAL = 'nginx: [emerg] host not found in upstream "backend.invalid"'


@dataclass
class RecordingSink:
    """The StatusSink of unit tests: keeps every write, as the API server would."""

    writes: list[tuple[str, str, StatusModel]] = field(default_factory=list)

    def patch_status(self, plural: str, namespace: str, name: str, status: StatusModel) -> None:
        self.writes.append((plural, name, status))

    def last_pair_status(self) -> PairStatus:
        statuses = [status for plural, _, status in self.writes if plural == "loadbalancerpairs"]
        assert isinstance(statuses[-1], PairStatus)
        return statuses[-1]


@dataclass
class FakeClock:
    """The rollout backoff's clock: moves only when a test says so, so a slow machine cannot change a
    test's outcome."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class World:
    """The seed pair, its two fake nodes (lb1 holds the VIP), and what the operator wrote."""

    resources: Sample
    lb1: FakeNode
    lb2: FakeNode
    sink: RecordingSink
    reconciler: Reconciler
    clock: FakeClock
    factory: FakeNodes
    metrics: PrometheusRecorder

    def run_pass(self) -> list[Event]:
        return self.reconciler.run_pass(self.resources.resources())

    def condition(self, condition_type: str) -> tuple[str, str, str]:
        found = find_condition(self.sink.last_pair_status().conditions, condition_type)
        assert found is not None
        return found.status, found.reason, found.message


def make_world(pair_sample: str = "seed-tutorial.yaml", **config: Any) -> World:  # OperatorConfig fields
    lb1 = FakeNode("lb1", addresses={"198.51.100.11/24"}, vips={VIP})
    lb2 = FakeNode("lb2", addresses={"198.51.100.12/24"})
    sink = RecordingSink()
    settings = OperatorConfig(**{"verify_timeout_seconds": 0.3, **config})
    clock, factory = FakeClock(), FakeNodes({"lb1": lb1, "lb2": lb2})
    metrics = PrometheusRecorder()
    reconciler = Reconciler(factory, sink, metrics, settings, clock)
    return World(sample(pair_sample), lb1, lb2, sink, reconciler, clock, factory, metrics)


@pytest.fixture
def world() -> World:
    return make_world()


def reasons(events: list[Event]) -> list[str]:
    """Each event's reason and what it is about: an attached object, or the node its message names."""
    return [f"{event.reason} {event.regarding or event.message.split(':')[0]}" for event in events]


def test_first_pass_programs_the_backup_first_then_the_holder(world: World) -> None:
    events = world.run_pass()

    assert reasons(events) == ["Applied lb2", "Applied lb1"]
    assert NGINX_CONF in world.lb1.files
    assert NGINX_CONF in world.lb2.files
    assert world.lb1.live_hash
    assert world.lb2.live_hash
    assert world.condition("Ready")[:2] == ("True", "Serving")
    assert world.condition("Programmed")[:2] == ("True", "Applied")
    status = world.sink.last_pair_status()
    assert status.vip_holders == "198.51.100.10=lb1"
    assert [(n.name, n.vrrp_state, n.applied_config_hash == "") for n in status.nodes] == [
        ("lb1", "Master", False),
        ("lb2", "Backup", False),
    ]
    attached = {name: s for plural, name, s in world.sink.writes if plural != "loadbalancerpairs"}
    assert sorted(attached) == ["dev", "lb-oa", "lb-www", "oa", "www"]


def test_active_active_status_reports_every_vrrp_instance_with_its_vips() -> None:
    world = make_world("active-active.yaml")
    world.lb2.vips = {"198.51.100.20/24"}
    world.lb1.vrrp = (
        VrrpInstanceState("lbpair_1", "MASTER", 150),
        VrrpInstanceState("lbpair_2", "BACKUP", 100),
    )
    world.lb2.vrrp = (
        VrrpInstanceState("lbpair_1", "BACKUP", 100),
        VrrpInstanceState("lbpair_2", "MASTER", 150),
    )
    world.run_pass()
    shared = node_vrrp(world.sink.last_pair_status())
    holders_shared = world.sink.last_pair_status().vip_holders
    # nginx dies on lb1: weight 0 puts both its instances in FAULT, lb2 takes over the VIP lb1 held.
    world.lb1.services["nginx"] = False
    world.lb1.vips.clear()
    world.lb1.vrrp = (VrrpInstanceState("lbpair_1", "FAULT", 0), VrrpInstanceState("lbpair_2", "FAULT", 0))
    world.lb2.vips.add(VIP)
    world.lb2.vrrp = (
        VrrpInstanceState("lbpair_1", "MASTER", 100),
        VrrpInstanceState("lbpair_2", "MASTER", 150),
    )
    world.run_pass()
    failed_over = node_vrrp(world.sink.last_pair_status())

    assert holders_shared == "198.51.100.10=lb1,198.51.100.20=lb2"
    assert shared == {
        "lb1": (
            "Mixed",
            [("lbpair_1", "Master", 150, ["198.51.100.10"]), ("lbpair_2", "Backup", 100, ["198.51.100.20"])],
        ),
        "lb2": (
            "Mixed",
            [("lbpair_1", "Backup", 100, ["198.51.100.10"]), ("lbpair_2", "Master", 150, ["198.51.100.20"])],
        ),
    }
    assert failed_over == {
        "lb1": (
            "Fault",
            [("lbpair_1", "Fault", 0, ["198.51.100.10"]), ("lbpair_2", "Fault", 0, ["198.51.100.20"])],
        ),
        "lb2": (
            "Master",
            [("lbpair_1", "Master", 100, ["198.51.100.10"]), ("lbpair_2", "Master", 150, ["198.51.100.20"])],
        ),
    }
    assert world.sink.last_pair_status().vip_holders == "198.51.100.10=lb2,198.51.100.20=lb2"


def node_vrrp(status: PairStatus) -> dict[str, tuple[str, list[tuple[str, str, int, list[str]]]]]:
    """Per node: vrrpState and each of vrrpInstances as (name, state, effectivePriority, vips)."""
    return {
        node.name: (
            node.vrrp_state,
            [(i.name, i.state, i.effective_priority, i.vips) for i in node.vrrp_instances],
        )
        for node in status.nodes
    }


def test_a_pass_with_nothing_to_change_writes_nothing_anywhere(world: World) -> None:
    world.run_pass()
    calls, writes = (len(world.lb1.calls), len(world.lb2.calls)), len(world.sink.writes)

    events = world.run_pass()

    assert events == []
    assert len(world.sink.writes) == writes
    changing = {"stage", "roll_out", "swap", "reload", "restore", "mark_live"}
    assert not changing & set(world.lb1.calls[calls[0] :] + world.lb2.calls[calls[1] :])


def test_config_the_node_refuses_leaves_both_nodes_as_they_were_and_is_not_retried(world: World) -> None:
    world.lb2.failing["validate"] = ValidationFailedError(REFUSAL)  # whatever is staged: the pair's doing

    first = world.run_pass()
    second = world.run_pass()

    assert reasons(first) == ["Rejected lb2"]
    assert REFUSAL in first[0].message
    assert second == []  # the same refusal is not news
    assert world.lb1.files == {}
    assert world.lb2.files == {}
    # The refused config, and once without every attached object (still refused: no tenant is blamed);
    # not pushed again before the backoff.
    assert world.lb2.calls.count("stage") == 2
    status, reason, message = world.condition("Programmed")
    assert (status, reason) == ("False", "Rejected")  # refused: it will not go live as it is
    assert REFUSAL in message


def refuse_on_both_nodes(world: World, text: str, *, names_file: bool) -> None:
    world.lb1.refuses[text] = world.lb2.refuses[text] = names_file


def site_file(name: str) -> str:
    return f"/etc/nginx/lbpair/vhost_{NAMESPACE}_{name}.conf"


def attached_condition(world: World, name: str, condition_type: str) -> tuple[str, str, str]:
    status = [s for _, written, s in world.sink.writes if written == name][-1]
    found = find_condition(getattr(status, "conditions", []), condition_type)
    assert found is not None
    return found.status, found.reason, found.message


@pytest.mark.parametrize("names_file", [True, False], ids=["blamed-by-file", "found-by-bisecting"])
def test_an_object_the_nodes_refuse_is_left_out_and_everyone_else_goes_live(
    world: World, names_file: bool
) -> None:
    world.run_pass()  # the seed is live
    refuse_on_both_nodes(world, "refused.example.com", names_file=names_file)
    dev = world.resources.vhost("dev")
    dev["spec"]["serverNames"] = ["refused.example.com"]
    dev["metadata"]["generation"] = 2
    world.resources.vhost("www")["spec"]["serverNames"].append("www2.example.com")
    world.resources.vhost("www")["metadata"]["generation"] = 2

    events = world.run_pass()

    assert reasons(events) == ["Applied lb2", "Applied lb1", "Rejected VirtualHost demo/dev"]
    assert "www2.example.com" in world.lb1.files[site_file("www")].content  # the other tenant's edit
    assert site_file("dev") not in world.lb1.files  # left out, on both nodes
    assert site_file("dev") not in world.lb2.files
    status, reason, message = attached_condition(world, "dev", "Accepted")
    assert (status, reason) == ("False", "Invalid")
    assert 'refused by the validators on lb2: nginx: [emerg] invalid value "refused.example.com"' in message
    assert world.condition("Programmed")[:2] == ("True", "Applied")  # the pair is not blocked
    stages = world.lb2.calls.count("stage")

    assert world.run_pass() == []  # not tried again while it stays as it is
    assert world.lb2.calls.count("stage") == stages

    dev["spec"]["serverNames"] = ["dev.example.com"]
    dev["metadata"]["generation"] = 3
    world.run_pass()
    assert "dev.example.com" in world.lb1.files[site_file("dev")].content
    assert attached_condition(world, "dev", "Programmed")[0] == "True"


def test_several_refused_objects_in_one_change_are_each_left_out(world: World) -> None:
    refuse_on_both_nodes(world, "refused-a.example.com", names_file=True)
    refuse_on_both_nodes(world, "refused-b.example.com", names_file=False)
    world.resources.vhost("dev")["spec"]["serverNames"] = ["refused-a.example.com"]
    world.resources.vhost("oa")["spec"]["serverNames"] = ["refused-b.example.com"]

    events = world.run_pass()

    assert sorted(reasons(events))[-2:] == ["Rejected VirtualHost demo/dev", "Rejected VirtualHost demo/oa"]
    assert site_file("www") in world.lb1.files
    assert not {site_file("dev"), site_file("oa")} & set(world.lb1.files)
    assert world.condition("Programmed")[:2] == ("True", "Applied")


def test_a_pass_out_of_isolation_rounds_hands_over_to_the_next_without_a_backoff(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(isolated_rollout, "ISOLATION_ROUNDS", 2)
    refuse_on_both_nodes(world, "refused-a.example.com", names_file=True)
    refuse_on_both_nodes(world, "refused-b.example.com", names_file=True)
    world.resources.vhost("dev")["spec"]["serverNames"] = ["refused-a.example.com"]
    world.resources.vhost("oa")["spec"]["serverNames"] = ["refused-b.example.com"]

    world.run_pass()  # two rollouts, each refused: both objects found, the pass's rounds used up
    assert world.condition("Programmed")[:2] == ("False", "Rejected")
    world.run_pass()  # goes on at once without them (a new config, no backoff)

    assert world.condition("Programmed")[:2] == ("True", "Applied")
    assert site_file("www") in world.lb1.files
    assert not {site_file("dev"), site_file("oa")} & set(world.lb1.files)


def test_a_refused_config_is_retried_after_its_backoff_and_the_backoff_grows() -> None:
    world = make_world(retry_seconds=5, max_retry_seconds=100)
    world.lb2.failing["validate"] = ValidationFailedError(REFUSAL)
    world.run_pass()
    world.clock.advance(5)

    world.run_pass()  # due: pushed again, refused again
    world.clock.advance(9)
    world.run_pass()  # now the backoff is 10 s: not yet

    assert world.lb2.calls.count("validate") == 4  # per attempt: as it is, then without any attached object


def test_a_changed_config_is_pushed_at_once_even_during_a_backoff(world: World) -> None:
    world.lb2.failing["validate"] = ValidationFailedError(REFUSAL)
    world.run_pass()
    del world.lb2.failing["validate"]
    world.resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 3

    events = world.run_pass()

    assert reasons(events) == ["Applied lb2", "Applied lb1"]


def test_reload_failure_after_the_swap_restores_the_last_good_files(world: World) -> None:
    world.run_pass()
    good = dict(world.lb2.files)
    world.resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 3
    world.lb2.failing_once["reload"] = NodeError(
        "reload failed (exit 1): nginx.service: control process exited"
    )

    events = world.run_pass()

    assert reasons(events) == ["RolledBack lb2"]
    assert "restored the last-known-good config" in events[0].message
    assert world.lb2.files == good
    assert world.lb1.calls.count("swap") == 1  # the holder was never touched by the failed rollout
    assert world.condition("Programmed")[0] == "False"


def test_nginx_not_serving_the_new_config_is_rolled_back(world: World) -> None:
    world.run_pass()
    good = dict(world.lb2.files)
    world.lb2.nginx_ignores_reload = True
    world.resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 3

    events = world.run_pass()

    assert reasons(events) == ["RolledBack lb2"]
    assert "nginx does not serve the new config" in events[0].message
    assert world.lb2.files == good


def test_files_swapped_but_never_verified_are_restored_when_their_reload_fails(world: World) -> None:
    world.run_pass()
    good = dict(world.lb2.files)
    world.resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 3
    # The connection is lost there (the operator killed, say): the node is left as it is.
    world.lb2.failing_once["reload"] = NodeUnreachableError("operator killed between swap and reload")
    world.run_pass()  # the new files are on lb2, never verified
    assert world.lb2.files != good
    assert world.lb2.live_hash == ""
    world.lb2.failing_once["reload"] = NodeError("reload failed (exit 1)")
    restarted = Reconciler(
        FakeNodes({"lb1": world.lb1, "lb2": world.lb2}), world.sink, PrometheusRecorder(), OperatorConfig()
    )

    events = restarted.run_pass(world.resources.resources())

    assert reasons(events) == ["RolledBack lb2"]
    assert world.lb2.files == good


def test_a_failed_restore_is_reported_as_such(world: World) -> None:
    world.run_pass()
    world.resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 3
    world.lb2.failing["reload"] = NodeError("reload failed")
    world.lb2.failing["restore"] = NodeError(
        "restoring last-known-good config failed: No space left on device"
    )

    events = world.run_pass()

    assert reasons(events) == ["RestoreFailed lb2"]
    assert "No space left on device" in events[0].message


def test_node_lost_while_staging_stops_the_rollout_and_backs_off_like_any_failure() -> None:
    world = make_world(retry_seconds=5)
    world.lb2.failing_once["stage"] = NodeUnreachableError("203.0.113.12:22: connection reset")

    first = world.run_pass()
    world.clock.advance(4.9)
    world.run_pass()  # within the backoff: not pushed again

    assert reasons(first) == ["NodeUnreachable lb2"]
    assert world.lb1.files == {}
    assert world.lb2.files == {}
    assert world.lb2.calls.count("stage") == 1
    assert world.condition("Programmed")[:2] == ("False", "NodeUnreachable")
    assert "lb2: lost during rollout" in world.condition("Programmed")[2]
    world.clock.advance(0.1)
    events = world.run_pass()
    assert reasons(events) == ["Applied lb2", "Applied lb1"]


def test_unreachable_node_degrades_the_pair_and_the_other_is_still_programmed(world: World) -> None:
    world.lb2.failing["observe"] = NodeUnreachableError("203.0.113.12:22: timed out")

    events = world.run_pass()

    assert reasons(events) == ["Applied lb1", "NodeUnreachable lb2"]
    assert world.condition("Degraded")[:2] == ("True", "NodeUnreachable")
    assert world.condition("Ready")[:2] == ("True", "Serving")
    del world.lb2.failing["observe"]
    assert reasons(world.run_pass()) == ["Applied lb2", "NodeRecovered lb2 is reachable again"]


def test_hand_edits_are_reverted_and_reported(world: World) -> None:
    world.run_pass()
    edited = world.lb1.files[NGINX_CONF]
    world.lb1.files[NGINX_CONF] = type(edited)(edited.path, edited.content + "# edited by hand\n")

    events = world.run_pass()

    assert reasons(events) == ["DriftReverted lb1", "Applied lb1"]
    assert world.lb1.files[NGINX_CONF] == edited


def test_failover_seen_on_the_nodes_is_an_event_and_moves_the_holder(world: World) -> None:
    world.run_pass()
    world.lb1.vips.clear()
    world.lb2.vips.add(VIP)

    events = world.run_pass()

    assert reasons(events) == ["FailoverDetected 198.51.100.10 moved from lb1 to lb2"]
    assert world.sink.last_pair_status().vip_holders == "198.51.100.10=lb2"


def test_pair_without_its_ssh_key_is_rejected_once_and_its_secret_watched(world: World) -> None:
    del world.resources.secrets[ObjectRef(NAMESPACE, "lb-ssh")]

    first, second = world.run_pass(), world.run_pass()

    assert reasons(first) == ["Rejected LoadBalancerPair demo/seed"]
    assert "spec.ssh.privateKeySecretRef: Secret lb-ssh not found" in first[0].message
    assert second == []
    assert world.condition("Ready")[:2] == ("False", "SecretMissing")
    assert world.reconciler.pairs_using_secret(ObjectRef(NAMESPACE, "lb-ssh")) == [
        ObjectRef(NAMESPACE, "seed")
    ]
    assert world.lb1.calls == []


def test_invalid_attached_object_is_told_once_and_the_rest_is_programmed(world: World) -> None:
    world.resources.upstream("lb-oa")["spec"]["servers"][0]["port"] = 0

    events, again = world.run_pass(), world.run_pass()

    assert "Rejected Upstream demo/lb-oa" in reasons(events)
    assert "Rejected VirtualHost demo/oa" in reasons(events)
    assert not any(event.reason == "Rejected" for event in again)
    oa = [s for plural, name, s in world.sink.writes if name == "lb-oa"][-1]
    accepted = find_condition(getattr(oa, "conditions", []), "Accepted")
    assert accepted is not None
    assert accepted.status == "False"
    assert "spec.servers[0].port" in accepted.message
    assert world.condition("Programmed")[0] == "True"


def test_deletion_restores_the_nodes_and_stops_keepalived(world: World) -> None:
    world.run_pass()

    pending = world.reconciler.remove_from_nodes(world.resources.pair, world.resources.secret_lookup)

    assert pending == ""
    assert world.lb1.files == {}
    assert world.lb2.files == {}
    assert not world.lb1.services["keepalived"]
    assert not world.lb1.vips
    world.resources.pair["metadata"]["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    assert world.run_pass() == []  # a pass that still sees the pair never re-installs it
    assert world.lb1.files == {}


def test_deletion_of_an_unreachable_node_stays_pending(world: World) -> None:
    world.run_pass()
    world.lb2.failing["uninstall"] = NodeUnreachableError("203.0.113.12:22: timed out")

    pending = world.reconciler.remove_from_nodes(world.resources.pair, world.resources.secret_lookup)

    assert pending == "lb2: 203.0.113.12:22: timed out"
    assert world.lb1.files == {}


def test_a_converged_node_without_an_owner_is_claimed_without_a_push(world: World) -> None:
    world.run_pass()
    world.lb1.owner = ""  # as a node programmed before nodes had owners (an upgrade)

    world.run_pass()

    assert world.lb1.owner
    assert world.lb1.calls.count("stage") == 1  # the first pass's only
    assert world.condition("Programmed")[:2] == ("True", "Applied")


def test_deletion_leaves_a_node_another_pair_has_alone_and_is_not_held_up_by_it(world: World) -> None:
    world.run_pass()
    # What the node's agent answers this pair's commands once another pair has the node.
    world.lb2.failing["uninstall"] = NodeOwnedElsewhereError("this node belongs to LoadBalancerPair b/other")
    lb2_files = dict(world.lb2.files)

    pending = world.reconciler.remove_from_nodes(world.resources.pair, world.resources.secret_lookup)

    assert pending == ""
    assert world.lb1.files == {}
    assert world.lb2.files == lb2_files


def test_an_unexpected_error_turns_conditions_unknown_and_is_told_once(world: World) -> None:
    world.run_pass()
    assert world.condition("Ready")[0] == "True"
    world.lb1.failing["observe"] = RecursionError("maximum recursion depth exceeded")  # no layer expects it

    first, second = world.run_pass(), world.run_pass()

    assert [event.reason for event in first] == ["PassFailed"]
    assert "RecursionError" in first[0].message
    assert second == []
    assert {c.status for c in world.sink.last_pair_status().conditions} == {"Unknown"}
    assert world.condition("Ready")[1:] == ("PassFailed", first[0].message)
    del world.lb1.failing["observe"]
    world.run_pass()
    assert world.condition("Ready")[0] == "True"


ANOTHER_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQRkRzg4KUOyIsot76jLDCJVCrrbMlOAwBgosFBjUgx"


def replace_lb2(world: World, address: str, host_key: str | None = None) -> FakeNode:
    """The pair's lb2 is now at `address`: another machine (with its host key) or, without one, the same."""
    replacement = FakeNode("lb2", addresses={"198.51.100.13/24"})
    world.factory.nodes[f"lb2@{address}"] = replacement
    world.resources.pair["spec"]["nodes"][1]["address"] = address
    if host_key is not None:
        world.resources.pair["spec"]["nodes"][1]["hostKey"] = host_key
    world.resources.pair["metadata"]["generation"] = 2
    return replacement


def test_a_node_that_leaves_the_spec_is_cleaned_up_like_a_deleted_pairs_node(world: World) -> None:
    world.run_pass()
    former = world.lb2
    former.failing["uninstall"] = NodeUnreachableError("203.0.113.12:22: timed out")
    replacement = replace_lb2(world, "203.0.113.22", ANOTHER_HOST_KEY)

    events = world.run_pass()

    assert NGINX_CONF in replacement.files  # the new lb2 is programmed at once
    assert "CleanupPending lb2 203.0.113.12:22 left the spec" in [
        f"{event.reason} {event.message.split(': ')[0]}" for event in events
    ]
    status, reason, message = world.condition("Degraded")
    assert (status, reason) == ("True", "FormerNodeNotCleaned")
    assert (
        "lb2 203.0.113.12:22 left the spec and is not cleaned up yet: 203.0.113.12:22: timed out" in message
    )
    assert former.services["keepalived"]  # still holding on until it answers

    del former.failing["uninstall"]
    events = world.run_pass()

    assert [event.message for event in events if event.reason == "NodeReleased"] == [
        "lb2 203.0.113.12:22 left the spec: cleaned up"
    ]
    assert former.files == {}  # the operator's files gone, keepalived stopped: its VIPs go with it
    assert not former.services["keepalived"]
    assert world.condition("Degraded")[:2] == ("False", "AllNodesHealthy")


def test_a_node_whose_address_changed_is_not_mistaken_for_a_former_node(world: World) -> None:
    world.run_pass()
    same_machine = replace_lb2(world, "203.0.113.22")  # same host key: e.g. a renumbered management LAN
    same_machine.files, same_machine.manifest = world.lb2.files, world.lb2.manifest

    events = world.run_pass()

    assert [event.message for event in events if event.reason == "NodeReleased"] == [
        "lb2 203.0.113.12:22 left the spec: it is a current node under another address"
    ]
    assert world.lb2.files  # the same machine: its config stays, and so does keepalived with the VIPs
    assert world.lb2.services["keepalived"]
