"""One active operator: two operator processes on the same control plane and lab pair, each as the chart's
ServiceAccount with exactly the chart's RBAC (its Lease Role included) and the Lease the chart's
Deployment names. Only the Lease holder pushes; the other stands by; killing the holder (SIGKILL, as an
OOM kill or a lost node would) hands over within the Lease's duration."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from testbed.cluster import REPO_ROOT, ControlPlane
from testbed.lab import Lab
from testbed.metrics import scrape
from testbed.operator import (
    OPERATOR_NAMESPACE,
    RELEASE,
    OperatorProcess,
    deploy_sample,
    tear_down_on_shared_nodes,
    wait_for,
)
from tests.e2e.test_metrics import free_port

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-single"
PAIR = "seed"
HANDOVER_SLACK_SECONDS = 15.0
"""Beyond the Lease's duration: the standby's next look (2 s), one coalesced pass, and a busy machine."""


def chart_leader_settings(cluster: ControlPlane) -> dict[str, str]:
    """The LBPAIR_LEADER_* variables the chart's Deployment gives the operator."""
    chart = str(REPO_ROOT / "charts" / "lbpair-operator")
    rendered = cluster.helm("template", RELEASE, chart, "--namespace", OPERATOR_NAMESPACE).stdout
    (deployment,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("LBPAIR_LEADER_")}


@dataclass
class Candidate:
    operator: OperatorProcess
    metrics_port: int

    def identity(self) -> str:
        """As the operator logged it on taking the Lease ("" while it has not)."""
        for line in self.operator.log().splitlines():
            if "leading: holds Lease" in line:
                return line.rsplit(" as ", 1)[1].strip()
        return ""

    def leader_gauge(self) -> float | None:
        return scrape(self.metrics_port).value("lbpair_leader")


@dataclass
class TwoOperators:
    cluster: ControlPlane
    lab: Lab
    first: Candidate
    second: Candidate
    lease_seconds: float

    def served(self, host: str) -> bool:
        return self.lab.http_get_via(str(self.lab.plan.vip_primary), host, "/").succeeded

    def add_server_name(self, host: str) -> None:
        patch = [{"op": "add", "path": "/spec/serverNames/-", "value": host}]
        self.cluster.kubectl(
            "-n", NAMESPACE, "patch", "virtualhost", "www", "--type=json", "-p", json.dumps(patch)
        )

    def lease_holder(self) -> str:
        lease = self.cluster.kubectl(
            "-n",
            OPERATOR_NAMESPACE,
            "get",
            "lease",
            RELEASE,
            "-o",
            "jsonpath={.spec.holderIdentity}",
            check=False,
        )
        return lease.stdout.strip()


def operator_with_metrics(kubeconfig: Path, log: Path, settings: dict[str, str]) -> Candidate:
    port = free_port()
    process = OperatorProcess(kubeconfig, log, settings={**settings, "LBPAIR_METRICS_PORT": str(port)})
    return Candidate(process, port)


@pytest.fixture(scope="module")
def two(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoOperators]:
    kubeconfig = deploy_sample(cluster, lab, NAMESPACE)
    settings = chart_leader_settings(cluster)
    logs = tmp_path_factory.mktemp("operators")
    first = operator_with_metrics(kubeconfig, logs / "first.log", settings)
    second = operator_with_metrics(kubeconfig, logs / "second.log", settings)
    both = TwoOperators(cluster, lab, first, second, float(settings["LBPAIR_LEADER_LEASE_SECONDS"]))
    first.operator.start()
    try:
        wait_for(first.identity, timeout=60, what="the first operator holding the Lease")
        second.operator.start()
        wait_for(lambda: "standing by" in second.operator.log(), timeout=60, what="the second standing by")
        wait_for(lambda: both.served("www.example.com"), timeout=90, what="the seed's www served")
        yield both
    finally:
        active = second.operator if second.operator.running() and second.identity() else first.operator
        standby = first.operator if active is second.operator else second.operator
        tear_down_on_shared_nodes(cluster, active, [NAMESPACE], [PAIR])
        standby.stop_and_show_log()
        cluster.kubectl("-n", OPERATOR_NAMESPACE, "delete", "lease", RELEASE, check=False)


def test_only_the_lease_holder_pushes_an_edit(two: TwoOperators) -> None:
    first_offset = len(two.first.operator.log())

    two.add_server_name("single.example.com")

    wait_for(lambda: two.served("single.example.com"), timeout=30, what="the edit served")
    applied = f"pass pair={NAMESPACE}/{PAIR} outcome=applied"  # logged once the pass wrote its status
    wait_for(lambda: applied in two.first.operator.log_lines_since(first_offset), timeout=10, what=applied)
    assert two.lease_holder() == two.first.identity()
    second_log = two.second.operator.log()
    assert (
        f"standing by: Lease {OPERATOR_NAMESPACE}/{RELEASE} is held by {two.first.identity()}" in second_log
    )
    assert "pass pair=" not in second_log
    assert "node rollout" not in second_log
    assert (two.first.leader_gauge(), two.second.leader_gauge()) == (1, 0)


def test_killing_the_holder_hands_over_within_the_lease_time(two: TwoOperators) -> None:
    two.first.operator.kill()
    killed = time.monotonic()
    two.add_server_name("handover.example.com")  # made while no operator acts

    timeout = two.lease_seconds + HANDOVER_SLACK_SECONDS
    wait_for(two.second.identity, timeout=timeout, what="the second operator taking the Lease")
    took_over = time.monotonic() - killed
    wait_for(lambda: two.served("handover.example.com"), timeout=timeout, what="the edit served")
    served = time.monotonic() - killed

    print(f"handover: Lease taken {took_over:.1f} s and the edit live {served:.1f} s after SIGKILL")
    assert two.lease_holder() == two.second.identity()
    assert two.second.leader_gauge() == 1
    assert served < timeout
