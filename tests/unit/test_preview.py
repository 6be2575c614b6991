"""A paused pair (spec.paused) over scripted fake nodes: what the user sees in status, events and the preview
ConfigMap, and that nothing live changes on either node until the pair is unpaused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from lbpair.config import OperatorConfig
from lbpair.metrics import PrometheusRecorder
from lbpair.model.common import ObjectMeta
from lbpair.model.status import PreviewStatus
from lbpair.nodes.client import NodeUnreachableError
from lbpair.reconcile import Reconciler
from tests.unit.fake_node import FakeNode, FakeNodes
from tests.unit.samples import SEED_AUTH_PASS, sample
from tests.unit.test_reconcile import VIP, FakeClock, RecordingSink, World, reasons

NGINX_CONF = "/etc/nginx/nginx.conf"


@dataclass
class RecordingConfigMaps:
    """The PreviewSink of unit tests: the ConfigMaps as the API server would hold them."""

    maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    writes: int = 0

    def put_config_map(self, owner: ObjectMeta, name: str, data: Mapping[str, str]) -> None:
        self.maps[owner.namespace, name] = dict(data)
        self.writes += 1


@dataclass
class PausedWorld(World):
    config_maps: RecordingConfigMaps = field(default_factory=RecordingConfigMaps)

    def pause(self, *, paused: bool = True) -> None:
        self.resources.pair["spec"]["paused"] = paused
        self.resources.pair["metadata"]["generation"] = (
            self.resources.pair["metadata"].get("generation", 1) + 1
        )

    def preview(self) -> PreviewStatus:
        preview = self.sink.last_pair_status().preview
        assert preview is not None
        return preview

    def config_map(self) -> dict[str, str]:
        return self.config_maps.maps["demo", "seed-preview"]


def make_paused_world(*samples: str) -> PausedWorld:
    lb1 = FakeNode("lb1", addresses={"198.51.100.11/24"}, vips={VIP})
    lb2 = FakeNode("lb2", addresses={"198.51.100.12/24"})
    sink, maps, clock = RecordingSink(), RecordingConfigMaps(), FakeClock()
    factory, metrics = FakeNodes({"lb1": lb1, "lb2": lb2}), PrometheusRecorder()
    config = OperatorConfig(verify_timeout_seconds=0.3)
    reconciler = Reconciler(factory, sink, metrics, config, clock, previews=maps)
    resources = sample(*(samples or ("seed-tutorial.yaml",)))
    return PausedWorld(resources, lb1, lb2, sink, reconciler, clock, factory, metrics, maps)


@pytest.fixture
def world() -> PausedWorld:
    return make_paused_world()


def edit_www(world: PausedWorld, url: str) -> None:
    """Proxy the www VirtualHost's / to `url` instead of its Upstream."""
    host = world.resources.vhost("www")
    host["spec"]["locations"] = [{"path": "/", "url": url}]
    host["metadata"]["generation"] = host["metadata"].get("generation", 1) + 1


def test_a_paused_new_pair_validates_on_the_backup_and_puts_nothing_live(world: PausedWorld) -> None:
    world.pause()
    events = world.run_pass()

    assert world.lb1.manifest == {}
    assert world.lb2.manifest == {}
    assert "roll_out" not in world.lb1.calls + world.lb2.calls
    assert world.lb2.calls.count("validate") == 1
    assert "stage" not in world.lb1.calls
    preview = world.preview()
    assert (preview.node, preview.validated, preview.config_map) == ("lb2", True, "seed-preview")
    assert preview.files_added > 3
    assert preview.files_changed == preview.files_removed == 0
    assert world.condition("Programmed")[:2] == ("False", "Paused")
    assert "see ConfigMap seed-preview" in world.condition("Programmed")[2]
    assert reasons(events) == ["Previewed lb2"]
    data = world.config_map()
    assert f"A {NGINX_CONF}\n" in data["files"]
    assert f"+++ b{NGINX_CONF}" in data["diff"]
    assert f"configHash: {preview.config_hash}" in data["summary"]


def test_an_edit_while_paused_is_shown_as_a_diff_and_goes_live_only_on_unpausing(world: PausedWorld) -> None:
    world.run_pass()
    live = {node.name: dict(node.files) for node in (world.lb1, world.lb2)}
    world.pause()
    edit_www(world, "http://198.18.0.12/new/")
    world.run_pass()

    assert {node.name: node.files for node in (world.lb1, world.lb2)} == live
    preview = world.preview()
    # The host's file, and the status server's, which serves the config hash.
    assert (preview.files_added, preview.files_changed, preview.files_removed) == (0, 2, 0)
    diff = world.config_map()["diff"]
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert any("proxy_pass http://198.18.0.12/new/;" in line for line in added)
    assert any(line.startswith("-") and "proxy_pass" in line for line in diff.splitlines())
    assert world.config_map()["files"].splitlines() == [
        "M /etc/nginx/lbpair/status.conf",
        "M /etc/nginx/lbpair/vhost_demo_www.conf",
    ]

    world.pause(paused=False)
    world.run_pass()
    status = world.sink.last_pair_status()
    assert status.preview is None
    assert world.condition("Programmed")[:2] == ("True", "Applied")
    assert {node.name: node.applied_config_hash for node in status.nodes}["lb2"] == preview.config_hash
    assert any("198.18.0.12/new/" in managed.content for managed in world.lb2.files.values())


def test_a_config_the_validators_refuse_is_reported_and_never_goes_live(world: PausedWorld) -> None:
    world.run_pass()
    live = dict(world.lb2.files)
    world.lb2.refuses = {"198.18.0.99": True}
    world.pause()
    edit_www(world, "http://198.18.0.99/")
    events = world.run_pass()

    preview = world.preview()
    assert not preview.validated
    assert "invalid value" in preview.message
    assert world.condition("Programmed")[:2] == ("False", "PreviewRejected")
    assert reasons(events) == ["PreviewRejected lb2"]
    assert world.lb2.files == live
    assert "validated: false" in world.config_map()["summary"]


def test_an_unchanged_preview_is_not_made_nor_published_again(world: PausedWorld) -> None:
    world.pause()
    world.run_pass()
    calls, writes = len(world.lb2.calls), world.config_maps.writes
    events = world.run_pass()

    assert events == []
    assert world.config_maps.writes == writes
    assert world.lb2.calls[calls:] == ["observe", "probe_backends"]  # no stage, no validation


def test_secrets_never_reach_the_preview() -> None:
    world = make_paused_world("seed-tutorial.yaml", "tls-virtualhost.yaml")
    world.pause()
    world.run_pass()

    data = world.config_map()
    assert "PRIVATE KEY" not in data["diff"]
    assert "# secret file added: content not shown" in data["diff"]
    assert f"auth_pass {SEED_AUTH_PASS}" not in data["diff"]
    assert "auth_pass <redacted>" in data["diff"]
    assert any(line.endswith(".key") for line in data["files"].splitlines())


def test_a_preview_the_node_could_not_make_is_reported_and_made_on_the_next_pass(world: PausedWorld) -> None:
    world.pause()
    world.lb2.failing_once["stage"] = NodeUnreachableError("lb2: connection reset")
    world.run_pass()

    assert world.condition("Programmed")[:2] == ("False", "PreviewFailed")
    assert "connection reset" in world.preview().message
    assert not world.preview().validated
    assert world.config_maps.writes == 0

    world.run_pass()
    assert world.preview().validated
    assert world.config_maps.writes == 1
    assert world.lb2.manifest == {}
