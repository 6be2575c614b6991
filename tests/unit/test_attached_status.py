"""Attached objects' statuses across passes in which their spec does not change (same generation): what
the nodes or their references say still reaches the status, while a pass that changes nothing writes none
(each pass keeps an unchanged object's status as it is rather than building it anew: at 5,000
VirtualHosts that was half of an idle pass's CPU)."""

from __future__ import annotations

from lbpair.model.common import ObjectRef
from lbpair.model.status import AttachedStatus, find_condition
from lbpair.nodes.client import NodeUnreachableError
from tests.unit.samples import NAMESPACE, sample, tls_secret
from tests.unit.test_reconcile import World, make_world


def last_status(world: World, name: str) -> AttachedStatus:
    status = [s for _, written, s in world.sink.writes if written == name][-1]
    assert isinstance(status, AttachedStatus)
    return status


def condition(status: AttachedStatus, condition_type: str) -> tuple[str, str]:
    found = find_condition(status.conditions, condition_type)
    assert found is not None
    return found.status, found.message


def test_the_nodes_an_object_is_live_on_follow_the_nodes_with_its_conditions_unchanged() -> None:
    world = make_world()
    world.run_pass()
    assert last_status(world, "www").programmed_on == ["lb1", "lb2"]
    world.lb2.failing["observe"] = NodeUnreachableError("203.0.113.12:22: timed out")
    world.run_pass()
    assert last_status(world, "www").programmed_on == ["lb1"]
    assert condition(last_status(world, "www"), "Programmed") == ("False", "not live on every node yet")

    world.lb1.failing["observe"] = NodeUnreachableError("203.0.113.11:22: timed out")
    world.run_pass()

    # The conditions read as before; only the nodes differ, and the status says so.
    assert condition(last_status(world, "www"), "Programmed") == ("False", "not live on every node yet")
    assert last_status(world, "www").programmed_on == []


def test_a_new_reason_for_the_same_refusal_reaches_the_status() -> None:
    world = make_world()
    world.resources = sample("seed-tutorial.yaml", "tls-virtualhost.yaml")
    world.run_pass()
    assert condition(last_status(world, "shop"), "Accepted")[0] == "True"
    secrets = world.resources.secrets
    held = secrets.pop(ObjectRef(NAMESPACE, "shop-tls"))
    world.run_pass()
    missing = condition(last_status(world, "shop"), "Accepted")
    assert missing[0] == "False"

    secrets[ObjectRef(NAMESPACE, "shop-tls")] = tls_secret("not a certificate", "not a key")
    world.run_pass()

    unusable = condition(last_status(world, "shop"), "Accepted")
    assert unusable[0] == "False"
    assert unusable[1] != missing[1]  # the object's generation is the same; the message is the news
    secrets[ObjectRef(NAMESPACE, "shop-tls")] = held
    world.run_pass()
    assert condition(last_status(world, "shop"), "Accepted")[0] == "True"


def test_a_pass_that_changes_nothing_writes_no_attached_status() -> None:
    world = make_world()
    world.run_pass()
    written = len(world.sink.writes)

    world.run_pass()

    assert [
        name for _, name, _ in world.sink.writes[written:] if name != world.resources.pair["metadata"]["name"]
    ] == []
