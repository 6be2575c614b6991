"""API writes and node work stay proportional to change on a pair carrying a few hundred VirtualHosts:
a pass with nothing to change writes nothing to the API and reloads nothing; one edit writes only the
edited object and the pair (whose nodes now run a new config hash); writes that change no spec (an
annotation, another controller's status) wake no pass. Seen the way a user sees it: every write to the
objects through a watch on the API server, the operator's log of passes, and the nginx master and worker
processes on both nodes (a reload replaces the workers)."""

from __future__ import annotations

import collections
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
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
# Long enough that passes woken by a write stand out from the periodic ones; edits wake a pass at once.
PROBE_INTERVAL_SECONDS = 4.0
LB_NODES = ("lb1", "lb2")
PLURALS = ("loadbalancerpairs", "upstreams", "virtualhosts")


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
        return sites_versions(self.cluster)

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

    def nginx_processes(self) -> dict[str, str]:
        """Per node, the PIDs of nginx's master and worker processes: a reload replaces every worker."""
        return {
            node: self.lab.exec(node, "pgrep", "-f", "nginx: (master|worker) process", check=False).stdout
            for node in LB_NODES
        }

    def served(self, host: str) -> bool:
        return self.lab.http_get_via(self.vip, host, "/").succeeded


class Writes:
    """Every write to the namespace's pairs, Upstreams and VirtualHosts while in the `with` block, as the
    API server's watch reports them (one MODIFIED event per write, whoever makes it)."""

    def __init__(self, cluster: ControlPlane) -> None:
        self.cluster = cluster
        self._directory = tempfile.TemporaryDirectory(prefix="lbpair-writes-")
        self._watches: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.count: collections.Counter[str] = collections.Counter()

    def __enter__(self) -> Writes:
        for plural in PLURALS:
            output = Path(self._directory.name) / f"{plural}.json"
            command = [
                str(self.cluster.bin_dir / "kubectl"),
                f"--kubeconfig={self.cluster.kubeconfig}",
                *("-n", NAMESPACE, "get", plural, "--watch", "--output-watch-events", "-o", "json"),
                "--request-timeout=600s",  # bounded even if the test never gets to stop it
            ]
            with output.open("wb") as stdout:
                watch = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL)
            self._watches.append((watch, output))
        # The watch starts with every object as ADDED: once all are listed, later writes are seen.
        listed = len(sites_versions(self.cluster))
        wait_for(lambda: len(self._events()) >= listed, timeout=60, what="the watches listing every object")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for watch, _ in self._watches:
            watch.terminate()
            watch.wait(timeout=10)
        self.count.update(
            f"{event['object']['kind']}/{event['object']['metadata']['name']}"
            for event in self._events()
            if event["type"] != "ADDED"
        )
        self._directory.cleanup()

    def _events(self) -> list[dict[str, Any]]:
        decoder, events = json.JSONDecoder(), []
        for _, output in self._watches:
            text, position = output.read_text(errors="replace"), 0
            while True:
                while position < len(text) and text[position].isspace():
                    position += 1
                try:
                    event, position = decoder.raw_decode(text, position)
                except json.JSONDecodeError:
                    break  # the end, or an event still being written
                events.append(event)
        return events


def sites_versions(cluster: ControlPlane) -> dict[str, str]:
    """kind/name -> resourceVersion of every object the operator may write."""
    listed = json.loads(cluster.kubectl("-n", NAMESPACE, "get", ",".join(PLURALS), "-o", "json").stdout)
    return {
        f"{item['kind']}/{item['metadata']['name']}": item["metadata"]["resourceVersion"]
        for item in listed["items"]
    }


@pytest.fixture(scope="module")
def operator(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> OperatorProcess:
    return OperatorProcess(
        deploy_sample(cluster, lab, NAMESPACE),
        tmp_path_factory.mktemp("operator") / "operator.log",
        probe_interval_seconds=PROBE_INTERVAL_SECONDS,
        # Only what changes may be written: no periodic refresh of lastProbeTime during the test.
        settings={"LBPAIR_STATUS_REFRESH_SECONDS": "3600"},
    )


@pytest.fixture(scope="module")
def sites(cluster: ControlPlane, lab: Lab, operator: OperatorProcess) -> Iterator[Sites]:
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
    settle(sites)
    processes = sites.nginx_processes()
    assert all(processes.values()), processes

    with Writes(sites.cluster) as writes:
        time.sleep(4 * PROBE_INTERVAL_SECONDS)  # four more passes

    assert writes.count == {}
    assert sites.nginx_processes() == processes


def test_writes_that_change_no_spec_wake_no_pass_and_write_nothing(
    sites: Sites, operator: OperatorProcess
) -> None:
    settle(sites)
    processes = sites.nginx_processes()
    log_offset = len(operator.log())
    started = time.monotonic()

    with Writes(sites.cluster) as writes:
        for number in range(10):  # a write every 0.5 s or so: each would wake a pass if such writes did
            name = f"site{number}"
            if number % 2:
                sites.kubectl("annotate", "--overwrite", "virtualhost", name, f"example.com/note=n{number}")
            else:  # another controller writing status, then putting back the operator's
                body = json.loads(sites.kubectl("get", "virtualhost", name, "-o", "json"))
                cleared: dict[str, Any] = {"conditions": []}
                for patched in (cleared, body["status"]):
                    sites.kubectl(
                        *("patch", "virtualhost", name, "--subresource=status", "--type=merge"),
                        *("-p", json.dumps({"status": patched})),
                    )
            time.sleep(0.5)
        time.sleep(PROBE_INTERVAL_SECONDS)
    window = time.monotonic() - started

    passes = operator.log_lines_since(log_offset).count("pass pair=")
    assert passes <= window / PROBE_INTERVAL_SECONDS + 1, f"{passes} passes in {window:.1f} s"
    # The only writes are the ones just made: the operator wrote nothing.
    assert dict(writes.count) == {f"VirtualHost/site{number}": 2 - number % 2 for number in range(10)}
    assert sites.nginx_processes() == processes


def test_one_edit_writes_the_edited_object_and_the_pair_only(sites: Sites) -> None:
    settle(sites)
    processes = sites.nginx_processes()

    with Writes(sites.cluster) as writes:
        sites.apply([site(7, "renamed.writes.example.com")])
        wait_for(lambda: sites.served("renamed.writes.example.com"), timeout=60, what="the new name served")
        settle(sites)

    # The edit itself, then the operator: the edited object's status once, the pair's (its nodes' new
    # config hash) at most twice (the rollout of each node may land in its own write).
    assert set(writes.count) == {"VirtualHost/site7", f"LoadBalancerPair/{PAIR}"}
    assert writes.count["VirtualHost/site7"] == 2
    assert writes.count[f"LoadBalancerPair/{PAIR}"] <= 2
    after = sites.nginx_processes()
    assert after != processes  # new workers: the edit was loaded
    assert {node: after[node].split()[0] for node in LB_NODES} == {  # by a reload of the same master
        node: processes[node].split()[0] for node in LB_NODES
    }


def test_the_nodes_nginx_config_passes_nginx_t_without_warnings(sites: Sites) -> None:
    """The validator's output, as an administrator on the node sees it, at a few hundred VirtualHosts (the
    server-name hash is sized for them)."""
    for node in LB_NODES:
        result = sites.lab.exec(node, "nginx", "-t", check=False)

        assert result.returncode == 0, result.stderr
        assert "[warn]" not in result.stderr, result.stderr


def test_a_restarted_operator_writes_no_attached_status_and_reloads_nothing(
    sites: Sites, operator: OperatorProcess
) -> None:
    settle(sites)
    processes = sites.nginx_processes()

    with Writes(sites.cluster) as writes:
        operator.stop()
        log_offset = len(operator.log())
        operator.start()
        wait_for(
            lambda: "pass pair=" in operator.log_lines_since(log_offset),
            timeout=120,
            what="a pass of the restarted operator",
        )
        settle(sites)

    # At most the pair's own status (its probe times) is written again; every attached object keeps its.
    assert set(writes.count) <= {f"LoadBalancerPair/{PAIR}"}, writes.count
    assert sites.nginx_processes() == processes
