"""API writes and node work stay proportional to change on a pair carrying a few hundred VirtualHosts:
a pass with nothing to change writes nothing to the API and reloads nothing; one edit writes only the
edited object and the pair (whose nodes now run a new config hash). Seen the way a user sees it: each
object's resourceVersion, and the nginx worker processes on both nodes (a reload replaces them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    attached_object,
    deploy_sample,
    tear_down_on_shared_nodes,
    wait_for,
)

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-writes"
PAIR = "seed"
HOSTS = 300
PROBE_INTERVAL_SECONDS = 1.0
LB_NODES = ("lb1", "lb2")


def site(number: int, *names: str) -> dict[str, Any]:
    return attached_object(
        "VirtualHost",
        NAMESPACE,
        f"site{number}",
        PAIR,
        {
            "serverNames": [f"site{number}.writes.example.com", *names],
            "locations": [{"path": "/", "upstreamRef": {"name": "lb-www"}}],
        },
    )


class Sites:
    def __init__(self, cluster: ControlPlane, lab: Lab) -> None:
        self.cluster, self.lab = cluster, lab
        self.vip = str(lab.plan.vip_primary)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args, input=input).stdout

    def apply(self, documents: list[dict[str, Any]]) -> None:
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        self.kubectl("apply", "--server-side", "-f", "-", input=listed)

    def resource_versions(self) -> dict[str, str]:
        """kind/name -> resourceVersion of every object the operator may write."""
        listed = json.loads(self.kubectl("get", "lbpairs,upstreams,virtualhosts", "-o", "json"))
        return {
            f"{item['kind']}/{item['metadata']['name']}": item["metadata"]["resourceVersion"]
            for item in listed["items"]
        }

    def unprogrammed_sites(self) -> list[str]:
        """Sites not yet live on both nodes, with what their Programmed condition says."""
        listed = json.loads(self.kubectl("get", "virtualhosts", "-o", "json"))
        waiting = []
        for item in listed["items"]:
            programmed = [
                c for c in item.get("status", {}).get("conditions", []) if c["type"] == "Programmed"
            ]
            if not programmed or programmed[0]["status"] != "True":
                waiting.append(
                    f"{item['metadata']['name']}: {programmed[0]['message'] if programmed else '-'}"
                )
        return waiting

    def nginx_workers(self) -> dict[str, str]:
        """Per node, the PIDs of nginx's worker processes: a reload replaces every one of them."""
        return {
            node: self.lab.exec(node, "pgrep", "-f", "nginx: worker process", check=False).stdout
            for node in LB_NODES
        }

    def served(self, host: str) -> bool:
        return self.lab.http_get_via(self.vip, host, "/").succeeded


@pytest.fixture(scope="module")
def sites(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    operator = OperatorProcess(
        deploy_sample(cluster, lab, NAMESPACE),
        tmp_path_factory.mktemp("operator") / "operator.log",
        probe_interval_seconds=PROBE_INTERVAL_SECONDS,
        # Only what changes may be written: no periodic refresh of lastProbeTime during the test.
        settings={"LBPAIR_STATUS_REFRESH_SECONDS": "3600"},
    )
    deployed = Sites(cluster, lab)
    operator.start()
    try:
        deployed.apply([site(number) for number in range(HOSTS)])
        waiting: list[str] = []

        def all_programmed() -> bool:
            waiting[:] = deployed.unprogrammed_sites()
            return not waiting

        try:
            wait_for(all_programmed, timeout=180, what=f"{HOSTS} sites programmed")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; {len(waiting)} waiting, e.g. {waiting[:3]}") from None
        yield deployed
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])


def settle(sites: Sites) -> dict[str, str]:
    """Resource versions once they have stopped moving for three probe intervals."""
    before = sites.resource_versions()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(3 * PROBE_INTERVAL_SECONDS)
        after = sites.resource_versions()
        if after == before:
            return after
        before = after
    raise TimeoutError("the objects kept changing for 60 s")


def test_passes_with_nothing_to_change_write_nothing_and_reload_nothing(sites: Sites) -> None:
    versions = settle(sites)
    workers = sites.nginx_workers()
    assert all(workers.values()), workers

    time.sleep(5 * PROBE_INTERVAL_SECONDS)  # five more passes

    assert sites.resource_versions() == versions
    assert sites.nginx_workers() == workers


def test_one_edit_writes_the_edited_object_and_the_pair_only(sites: Sites) -> None:
    versions = settle(sites)

    sites.apply([site(7, "renamed.writes.example.com")])
    wait_for(lambda: sites.served("renamed.writes.example.com"), timeout=30, what="the new name served")
    changed = {name for name, version in settle(sites).items() if versions.get(name) != version}

    assert changed == {"VirtualHost/site7", f"LoadBalancerPair/{PAIR}"}
