"""Pure parts of the rollout: what differs, which services reload, which node goes first; and what one
node's rollout ships and reloads, on a fake node."""

from __future__ import annotations

import ipaddress

import pytest

from lbpair.model.files import ManagedFile
from lbpair.nodes.layout import NodeLayout
from lbpair.nodes.observe import ManagedFileState, NodeObservation
from lbpair.rollout import ConfigRejectedError, NodePlan, compare, roll_out_node, rollout_order
from tests.unit.fake_node import FakeNode

LAYOUT = NodeLayout(
    nginx_service="nginx",
    keepalived_service="keepalived",
    nginx_config_path="/etc/nginx/nginx.conf",
    keepalived_config_path="/etc/keepalived/keepalived.conf",
    status_port=18099,
    nginx_pid_path="/run/nginx.pid",
)
NGINX_CONF = ManagedFile("/etc/nginx/nginx.conf", "events {}\n")
KEEPALIVED_CONF = ManagedFile("/etc/keepalived/keepalived.conf", "global_defs {}\n")


def observation(
    files: dict[str, ManagedFileState], addresses: tuple[str, ...] = (), live_hash: str = ""
) -> NodeObservation:
    return NodeObservation(
        hostname="lb",
        services={"nginx": True, "keepalived": True},
        addresses=frozenset(ipaddress.IPv4Interface(address) for address in addresses),
        managed_files=files,
        live_hash=live_hash,
    )


PLAN = NodePlan(FakeNode("lb1"), (NGINX_CONF, KEEPALIVED_CONF), "config-hash", "nginx-hash")


def test_identical_files_running_verified_need_no_push() -> None:
    live = {f.path: ManagedFileState(f.sha256, f.sha256) for f in (NGINX_CONF, KEEPALIVED_CONF)}

    difference = compare(observation(live, live_hash="config-hash"), PLAN)

    assert not difference.any


def test_identical_files_never_verified_live_need_a_reload() -> None:
    # E.g. the operator stopped between swapping the files and reloading the services.
    live = {f.path: ManagedFileState(f.sha256, f.sha256) for f in (NGINX_CONF, KEEPALIVED_CONF)}

    difference = compare(observation(live, live_hash=""), PLAN)

    assert difference.changed == frozenset()
    assert difference.unverified
    assert difference.any


def test_changed_stale_and_hand_edited_files_are_told_apart() -> None:
    live = {
        NGINX_CONF.path: ManagedFileState("applied-earlier", "edited-by-hand"),
        "/etc/nginx/lbpair/vhost_old.conf": ManagedFileState("x", "x"),
    }

    difference = compare(observation(live), PLAN)

    assert difference.changed == {NGINX_CONF.path, KEEPALIVED_CONF.path, "/etc/nginx/lbpair/vhost_old.conf"}
    assert difference.drifted == {NGINX_CONF.path}


def test_only_the_services_whose_files_changed_reload() -> None:
    assert LAYOUT.services_for(["/etc/nginx/lbpair/upstream_a_b.conf"]) == ["nginx"]
    assert LAYOUT.services_for(["/etc/keepalived/keepalived.conf"]) == ["keepalived"]
    assert LAYOUT.services_for(["/etc/nginx-extra/x.conf"]) == []
    assert LAYOUT.services_for([NGINX_CONF.path, KEEPALIVED_CONF.path]) == ["nginx", "keepalived"]


def test_vip_holder_is_rolled_out_last() -> None:
    plans = [NodePlan(FakeNode(name), (NGINX_CONF,), "hash", "nginx-hash") for name in ("lb1", "lb2")]
    observations = {
        "lb1": observation({}, ("198.51.100.11/24", "198.51.100.10/24")),
        "lb2": observation({}, ("198.51.100.12/24",)),
    }

    order = rollout_order(plans, observations, ["198.51.100.10"])

    assert [plan.name for plan in order] == ["lb2", "lb1"]


def test_a_one_file_change_stages_that_file_and_reloads_only_its_service() -> None:
    vhost = ManagedFile("/etc/nginx/lbpair/vhost_a.conf", "server {}\n")
    live = (NGINX_CONF, KEEPALIVED_CONF, vhost)
    node = FakeNode("lb1", files={f.path: f for f in live}, manifest={f.path: f.sha256 for f in live})
    edited = ManagedFile(vhost.path, "server { listen 80; }\n")
    plan = NodePlan(node, (NGINX_CONF, KEEPALIVED_CONF, edited), "config-hash", "")
    difference = compare(node.observe(), plan)

    roll_out_node(plan, difference, LAYOUT, verify_timeout=0.5)

    assert node.staged == [edited]
    assert node.files[edited.path] == edited
    assert node.live_hash == "config-hash"  # verified and recorded as live
    assert node.services == {"nginx": True, "keepalived": True}
    assert node.reloaded == [["nginx"]]


def test_a_keepalived_only_change_reloads_only_keepalived() -> None:
    live = (NGINX_CONF, KEEPALIVED_CONF)
    node = FakeNode("lb1", files={f.path: f for f in live}, manifest={f.path: f.sha256 for f in live})
    edited = ManagedFile(KEEPALIVED_CONF.path, "global_defs { router_id lb1 }\n")
    plan = NodePlan(node, (NGINX_CONF, edited), "config-hash", "")

    observation = roll_out_node(plan, compare(node.observe(), plan), LAYOUT, verify_timeout=0.5)

    assert node.files[edited.path] == edited
    assert node.reloaded == [["keepalived"]]
    assert observation.live_hash == "config-hash"  # the node as verified, without another probe


def test_a_refused_config_changes_nothing_on_the_node() -> None:
    live = (NGINX_CONF, KEEPALIVED_CONF)
    node = FakeNode("lb1", files={f.path: f for f in live}, manifest={f.path: f.sha256 for f in live})
    node.refuses["listen 81"] = True
    edited = ManagedFile(NGINX_CONF.path, "events {}\nhttp { server { listen 81; } }\n")
    plan = NodePlan(node, (edited, KEEPALIVED_CONF), "config-hash", "")

    with pytest.raises(ConfigRejectedError, match="listen 81"):
        roll_out_node(plan, compare(node.observe(), plan), LAYOUT, verify_timeout=0.5)

    assert node.files[NGINX_CONF.path] == NGINX_CONF
    assert node.reloaded == []
