"""The operator's Prometheus metrics on the real lab, scraped over HTTP as Prometheus would: what an SRE
alerts on (the pair Ready, the VIP held by lb1, both nodes reachable, passes counted), an edit going
live counted as an applied pass with its reloads and the nodes' new config hash, and a failover counted
with the VIP's new holder."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.metrics import Scrape, scrape
from testbed.operator import OperatorProcess, deploy_sample, tear_down_on_shared_nodes, wait_for

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-metrics"
PAIR = {"namespace": NAMESPACE, "pair": "seed"}
PROBE_INTERVAL_SECONDS = 1.0


class Scraped:
    """The seed sample with the operator running and its metrics on `port`."""

    def __init__(self, cluster: ControlPlane, lab: Lab, port: int) -> None:
        self.cluster, self.lab, self.port = cluster, lab, port
        self.vip = str(lab.plan.vip_primary)

    def scrape(self) -> Scrape:
        return scrape(self.port)

    def applied_passes(self) -> float:
        return self.scrape().value("lbpair_passes_total", **PAIR, outcome="applied") or 0

    def served(self, host: str) -> bool:
        return self.lab.http_get_via(self.vip, host, "/").succeeded

    def config_hashes(self, found: Scrape, node: str) -> list[str]:
        """The config_hash labels of the node's lbpair_node_config_info series."""
        return [
            dict(labels)["config_hash"]
            for name, labels in found.samples
            if name == "lbpair_node_config_info" and {*PAIR.items(), ("node", node)} <= labels
        ]

    def counted(self, name: str, **labels: str) -> float:
        return self.scrape().value(name, **PAIR, **labels) or 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def scraped(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    port = free_port()
    operator = OperatorProcess(
        deploy_sample(cluster, lab, NAMESPACE),
        tmp_path_factory.mktemp("operator") / "operator.log",
        probe_interval_seconds=PROBE_INTERVAL_SECONDS,
        settings={"LBPAIR_METRICS_PORT": str(port)},
    )
    deployed = Scraped(cluster, lab, port)
    operator.start()
    try:
        wait_for(lambda: deployed.served("www.example.com"), timeout=90, what="the seed's www served")
        yield deployed
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR["pair"]])


def test_scrape_shows_the_pair_ready_with_the_vip_on_lb1_and_both_nodes_reachable(scraped: Scraped) -> None:
    found: Scrape = wait_for(
        lambda: (s := scraped.scrape()).value("lbpair_pair_ready", **PAIR) == 1 and s,
        timeout=30,
        what="lbpair_pair_ready 1",
    )

    assert (found.value("lbpair_passes_total", **PAIR, outcome="applied") or 0) >= 1
    assert found.value("lbpair_passes_total", **PAIR, outcome="error") == 0
    assert (found.value("lbpair_pass_duration_seconds_count", **PAIR) or 0) >= 1
    assert found.value("lbpair_node_vips_held", **PAIR, node="lb1") == 1
    assert found.value("lbpair_node_vips_held", **PAIR, node="lb2") == 0
    assert found.value("lbpair_node_reachable", **PAIR, node="lb1") == 1
    assert found.value("lbpair_node_reachable", **PAIR, node="lb2") == 1
    applied = {"outcome": "applied", "reason": "Applied"}
    assert (found.value("lbpair_node_rollouts_total", **PAIR, node="lb1", **applied) or 0) >= 1
    assert (found.value("lbpair_pair_last_applied_timestamp_seconds", **PAIR) or 0) > 0
    assert found.value("lbpair_pair_refused_objects", **PAIR) == 0
    assert found.value("lbpair_pair_split_brain", **PAIR) == 0
    assert (found.value("lbpair_node_reloads_total", **PAIR, node="lb1", service="nginx") or 0) >= 1
    assert found.value("lbpair_node_rollbacks_total", **PAIR, node="lb1") == 0
    assert found.value("lbpair_leader") == 1  # no Lease configured: the one operator acts
    for node in ("lb1", "lb2"):
        probed = found.value("lbpair_node_last_probe_timestamp_seconds", **PAIR, node=node) or 0
        assert time.time() - probed < 30
        (config_hash,) = scraped.config_hashes(found, node)
        assert found.value("lbpair_node_config_info", **PAIR, node=node, config_hash=config_hash) == 1


def test_an_edit_that_goes_live_counts_an_applied_pass(scraped: Scraped) -> None:
    before = scraped.scrape()
    applied = scraped.applied_passes()
    nginx_reloads = {**PAIR, "node": "lb1", "service": "nginx"}
    new_name = [{"op": "add", "path": "/spec/serverNames/-", "value": "metrics.example.com"}]

    scraped.cluster.kubectl(
        "-n", NAMESPACE, "patch", "virtualhost", "www", "--type=json", "-p", json.dumps(new_name)
    )

    wait_for(lambda: scraped.served("metrics.example.com"), timeout=30, what="the edit served")
    wait_for(lambda: scraped.applied_passes() > applied, timeout=30, what="an applied pass counted")
    after = scraped.scrape()
    last_applied = "lbpair_pair_last_applied_timestamp_seconds"
    assert (after.value(last_applied, **PAIR) or 0) > (before.value(last_applied, **PAIR) or 0)
    assert after.value("lbpair_pair_ready", **PAIR) == 1
    reloads = "lbpair_node_reloads_total"
    assert (after.value(reloads, **nginx_reloads) or 0) > (before.value(reloads, **nginx_reloads) or 0)
    # One config_info series per node, now with the new config's hash: the old one is gone.
    wait_for(
        lambda: scraped.config_hashes(scraped.scrape(), "lb1") != scraped.config_hashes(before, "lb1"),
        timeout=10,
        what="lb1's config hash moved",
    )
    assert len(scraped.config_hashes(scraped.scrape(), "lb1")) == 1


def test_a_failover_is_counted_and_the_vip_shown_on_its_new_holder(scraped: Scraped) -> None:
    failovers = scraped.counted("lbpair_failovers_total")
    try:
        scraped.lab.exec("lb1", "systemctl", "stop", "keepalived")  # lb2 takes the VIP over

        wait_for(
            lambda: scraped.counted("lbpair_failovers_total") > failovers,
            timeout=30,
            what="a failover counted",
        )
        found = scraped.scrape()
        assert found.value("lbpair_node_vips_held", **PAIR, node="lb2") == 1
        assert found.value("lbpair_node_vips_held", **PAIR, node="lb1") == 0
        assert found.value("lbpair_pair_split_brain", **PAIR) == 0
    finally:
        scraped.lab.exec("lb1", "systemctl", "start", "keepalived")
    # Preempt (the seed's default): lb1 takes the VIP back, which is a failover too.
    wait_for(
        lambda: scraped.counted("lbpair_node_vips_held", node="lb1") == 1, timeout=30, what="VIP back on lb1"
    )
    wait_for(
        lambda: scraped.counted("lbpair_failovers_total") >= failovers + 2,
        timeout=10,
        what="failback counted",
    )
