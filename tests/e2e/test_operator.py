"""The operator end to end: real API server, real nodes, the operator running as the chart's ServiceAccount.

The tests share one deployment of the seed sample and run in file order; each leaves the pair Ready (faults
are undone in `finally`), and the last one deletes it. What they assert is what a user sees: traffic
through the VIP, `kubectl get`, status conditions, events, and files on the nodes.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lbpair.model import SECRET_LABEL
from testbed.addressing import CLIENT, Segment
from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    OperatorProcess,
    attached_object,
    deploy_sample,
    wait_for,
    weak_tls_secret,
)
from testbed.traffic import RequestLoop

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-e2e"
PAIR = "seed"
STATE_FILE = "/var/lib/lbpair/manifest"
VHOST_FILE = f"/etc/nginx/lbpair/vhost_{NAMESPACE}_www.conf"
TO_LB_OA = {"path": "/", "upstreamRef": {"name": "lb-oa"}}


class Deployment:
    """The seed sample applied in NAMESPACE with the operator running; helpers to look at it."""

    def __init__(self, cluster: ControlPlane, lab: Lab, operator: OperatorProcess) -> None:
        self.cluster, self.lab, self.operator = cluster, lab, operator
        # The lab's addresses (its plan is chosen per machine); the sample was applied translated to them.
        self.vip = str(lab.plan.vip_primary)
        self.client_address = str(lab.plan.hosts[CLIENT].address(Segment.FRONT))
        self.backend = {name: str(lab.plan.hosts[name].address(Segment.BACK)) for name in ("be1", "be2")}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args, input=input, check=check).stdout

    def apply(self, documents: list[dict[str, Any]]) -> None:
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        )

    def pair(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.kubectl("get", "lbpair", PAIR, "-o", "json"))
        return document

    def condition(self, condition_type: str) -> dict[str, Any]:
        for condition in self.pair().get("status", {}).get("conditions", []):
            if condition["type"] == condition_type:
                return dict(condition)
        return {}

    def wait_condition(
        self, condition_type: str, field: str, value: str, timeout: float = 30
    ) -> dict[str, Any]:
        """Until the pair's condition has `field` == `value`; returns the condition."""
        condition: dict[str, Any] = wait_for(
            lambda: (found := self.condition(condition_type)).get(field) == value and found,
            timeout=timeout,
            what=f"{condition_type} {field}={value}",
        )
        return condition

    def wait_attached_condition(
        self, plural: str, name: str, condition_type: str, status: str, timeout: float = 30
    ) -> dict[str, Any]:
        """Until the Upstream's or VirtualHost's condition has `status`; returns the condition."""

        def condition() -> dict[str, Any]:
            document = json.loads(self.kubectl("get", plural, name, "-o", "json"))
            found = [
                c for c in document.get("status", {}).get("conditions", []) if c["type"] == condition_type
            ]
            return dict(found[0]) if found and found[0]["status"] == status else {}

        found: dict[str, Any] = wait_for(
            condition, timeout=timeout, what=f"{plural}/{name} {condition_type}={status}"
        )
        return found

    def holders(self) -> str:
        return str(self.pair().get("status", {}).get("vipHolders", ""))

    def events(self, reason: str) -> list[dict[str, Any]]:
        listed = json.loads(
            self.kubectl("get", "events", "--field-selector", f"reason={reason}", "-o", "json")
        )
        return list(listed["items"])

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_for(
            lambda: (
                self.condition("Ready").get("status") == "True"
                and self.condition("Programmed").get("status") == "True"
            ),
            timeout=timeout,
            what="pair Ready and Programmed",
        )

    def wait_settled(self, quiet_seconds: float = 3.0) -> None:
        """Until no node push has happened for `quiet_seconds` (earlier changes may still be rolling out)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            applied = len(self.events("Applied"))
            time.sleep(quiet_seconds)
            if len(self.events("Applied")) == applied:
                return
        raise TimeoutError("the operator kept pushing for 60 s")

    def node_file(self, node: str, path: str) -> str:
        return self.lab.exec(node, "cat", path).stdout


@pytest.fixture(scope="module")
def deployment(
    cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    operator_kubeconfig = deploy_sample(cluster, lab, NAMESPACE)
    operator = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    deployed = Deployment(cluster, lab, operator)
    operator.start()
    try:
        deployed.wait_ready()
        yield deployed
    finally:
        operator.stop_and_show_log(60)


def test_seed_sample_serves_each_host_and_path_from_the_right_backends(deployment: Deployment) -> None:
    www = deployment.lab.http_get_via(deployment.vip, "www.example.com", "/")
    oa = deployment.lab.http_get_via(deployment.vip, "oa.example.com", "/")
    svn = deployment.lab.http_get_via(deployment.vip, "dev.example.com", "/svn/trunk")
    dev_root = deployment.lab.http_get_via(deployment.vip, "dev.example.com", "/")
    unknown = deployment.lab.http_get_via(deployment.vip, "unknown.example.com", "/")
    listed = deployment.kubectl("get", "lbpairs")

    assert www.succeeded, www
    assert "port=80 " in www.body
    assert "host=www.example.com" in www.body
    assert oa.succeeded, oa
    assert "port=8080 " in oa.body
    # /svn proxies to a URL on be1, exactly as the seed's proxy_pass http://.../svn/ does.
    assert svn.succeeded, svn
    assert "backend=be1" in svn.body
    assert "path=/svn/" in svn.body
    assert f"x-real-ip={deployment.client_address}" in www.body
    assert dev_root.status == 404  # dev has /svn and /submin only
    assert unknown.status == 0  # a Host no VirtualHost declares gets no answer at all
    assert "Empty reply" in unknown.error
    header, row = listed.splitlines()[:2]
    assert header.split() == ["NAME", "VIPS", "HOLDER", "MODE", "HEALTHY", "READY", "AGE"]
    assert row.split()[:6] == [PAIR, deployment.vip, f"{deployment.vip}=lb1", "ActivePassive", "2/2", "True"]
    for kind in ("virtualhosts", "upstreams"):
        programmed = deployment.kubectl(
            "get", kind, "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Programmed')].status}"
        )
        assert set(programmed.split()) == {"True"}, (kind, programmed)


def test_both_nodes_run_the_rendered_config_and_status_reports_its_hash(deployment: Deployment) -> None:
    nodes = {node["name"]: node for node in deployment.pair()["status"]["nodes"]}

    for name in ("lb1", "lb2"):
        assert (nodes[name]["reachable"], nodes[name]["nginxRunning"], nodes[name]["keepalivedRunning"]) == (
            True,
            True,
            True,
        )
        # What the node recorded as verified live after its reload is what status reports.
        assert deployment.node_file(name, "/var/lib/lbpair/live").strip() == nodes[name]["appliedConfigHash"]
        upstream = deployment.node_file(name, f"/etc/nginx/lbpair/upstream_{NAMESPACE}_lb-www.conf")
        assert f"server {deployment.backend['be1']}:80" in upstream
    served = {
        name: deployment.lab.exec(name, "curl", "-s", "http://127.0.0.1:18099/lbpair/config-hash").stdout
        for name in ("lb1", "lb2")
    }
    assert served["lb1"] == served["lb2"]  # identical nginx config on both nodes, as in the seed
    assert nodes["lb1"]["appliedConfigHash"] != nodes["lb2"]["appliedConfigHash"]  # keepalived differs
    assert (nodes["lb1"]["vrrpState"], nodes["lb2"]["vrrpState"]) == ("Master", "Backup")
    assert nodes["lb1"]["vipsHeld"] == [deployment.vip]


def test_nginx_death_on_the_holder_moves_the_vip_and_preempt_brings_it_back(deployment: Deployment) -> None:
    # The seed's check script restarts a dead nginx; a node whose nginx cannot start must hand over the VIP.
    deployment.kubectl(
        "patch", "lbpair", PAIR, "--type=merge", "-p", '{"spec":{"healthCheck":{"restartNginx":false}}}'
    )
    wait_for(
        lambda: "systemctl start" not in deployment.node_file("lb1", "/etc/keepalived/lbpair-check-nginx.sh"),
        timeout=30,
        what="check script that no longer restarts nginx",
    )
    deployment.wait_ready()
    failovers_before = len(deployment.events("FailoverDetected"))
    try:
        deployment.lab.exec("lb1", "systemctl", "stop", "nginx")

        wait_for(
            lambda: deployment.holders() == f"{deployment.vip}=lb2", timeout=20, what="VIP on lb2 in status"
        )
        lb1 = next(node for node in deployment.pair()["status"]["nodes"] if node["name"] == "lb1")
        served = deployment.lab.http_get_via(deployment.vip, "www.example.com", "/")
        assert deployment.lab.vip_holders(deployment.vip) == ["lb2"]
        assert served.succeeded, served
        assert not lb1["nginxRunning"]
        assert deployment.condition("Degraded")["status"] == "True"
        wait_for(
            lambda: len(deployment.events("FailoverDetected")) > failovers_before, timeout=10, what="event"
        )
    finally:
        deployment.lab.exec("lb1", "systemctl", "start", "nginx")

    # Preempt (the seed's default): the recovered higher-priority node takes the VIP back.
    wait_for(lambda: deployment.holders() == f"{deployment.vip}=lb1", timeout=20, what="VIP back on lb1")
    deployment.wait_ready()


def test_an_object_nginx_refuses_is_left_out_while_another_tenants_edit_goes_live(
    deployment: Deployment,
) -> None:
    # Valid for the schema and the model, refused by nginx -t: a legacy certificate with a 1024-bit key.
    weak = weak_tls_secret(NAMESPACE, "legacy-tls")
    refused = attached_object(
        "VirtualHost",
        NAMESPACE,
        "renewed-shop",
        PAIR,
        {
            "serverNames": ["renewed.example.com"],
            "listen": [{"port": 443, "protocol": "HTTPS"}],
            "tls": {"secretName": "legacy-tls"},
            "locations": [TO_LB_OA],
        },
    )
    spec = json.loads(deployment.kubectl("get", "virtualhost", "www", "-o", "json"))["spec"]
    www_before = attached_object("VirtualHost", NAMESPACE, "www", PAIR, copy.deepcopy(spec))
    spec["serverNames"].append("www-edited.example.com")
    www = attached_object("VirtualHost", NAMESPACE, "www", PAIR, spec)
    with RequestLoop(deployment.lab, host="oa.example.com", interval=0.1, max_seconds=30) as requests:
        try:
            deployment.apply([weak, refused])
            deployment.apply([www])  # the other tenant, meanwhile
            wait_for(
                lambda: deployment.lab.http_get_via(deployment.vip, "www-edited.example.com", "/").succeeded,
                timeout=30,
                what="the other tenant's edit served through the VIP",
            )
            accepted = deployment.wait_attached_condition("virtualhost", "renewed-shop", "Accepted", "False")
            assert "refused by the validators on" in accepted["message"]
            assert "ee key too small" in accepted["message"]
            events = deployment.kubectl(
                "get",
                "events",
                "-o",
                "json",
                "--field-selector",
                "involvedObject.kind=VirtualHost,involvedObject.name=renewed-shop,reason=Rejected",
            )
            assert json.loads(events)["items"], "no Rejected event on the refused VirtualHost"
            deployment.wait_ready()  # the pair itself is not blocked
            for node in ("lb1", "lb2"):
                listed = deployment.lab.exec(node, "ls", "/etc/nginx/lbpair").stdout
                assert f"vhost_{NAMESPACE}_renewed-shop.conf" not in listed
        finally:
            deployment.kubectl("delete", "virtualhost", "renewed-shop", "--ignore-not-found")
            deployment.kubectl("delete", "secret", "legacy-tls", "--ignore-not-found")
            deployment.apply([www_before])
        deployment.wait_ready()

    assert len(requests.responses) >= 5, "the request loop barely ran"
    assert requests.failed == []


def test_config_that_fails_on_reload_is_rolled_back_on_that_node_only(deployment: Deployment) -> None:
    # Something else already listens on 8089 on lb2 (the backup, rolled out first). The pair declares a
    # listener there: nginx -t passes, the reload cannot bind, nginx keeps serving the old config, and the
    # operator restores the old files.
    squatter = deployment.lab.exec(
        "lb2", "sh", "-c", "nohup socat TCP-LISTEN:8089,fork,reuseaddr /dev/null >/dev/null 2>&1 & echo $!"
    ).stdout.strip()
    listeners = [{"port": 80, "protocol": "HTTP"}, {"port": 443, "protocol": "HTTPS"}]
    with_8089 = {"spec": {"listeners": [*listeners, {"port": 8089, "protocol": "HTTP"}]}}
    lb1_before = deployment.node_file("lb1", "/etc/nginx/nginx.conf")
    try:
        deployment.kubectl("patch", "lbpair", PAIR, "--type=merge", "-p", json.dumps(with_8089))
        rolled_back = wait_for(lambda: deployment.events("RolledBack"), timeout=60, what="RolledBack event")
        assert "lb2" in rolled_back[0]["message"]
        assert "8089" not in deployment.node_file("lb2", "/etc/nginx/nginx.conf")
        assert deployment.node_file("lb1", "/etc/nginx/nginx.conf") == lb1_before  # never touched
        assert deployment.condition("Programmed")["status"] == "False"
        assert deployment.lab.http_get_via(deployment.vip, "www.example.com", "/").succeeded
    finally:
        deployment.kubectl(
            "patch", "lbpair", PAIR, "--type=merge", "-p", json.dumps({"spec": {"listeners": None}})
        )
        deployment.lab.exec("lb2", "kill", squatter, check=False)
    deployment.wait_ready()


def test_a_reload_past_the_nginx_masters_open_file_limit_is_refused_before_the_swap(
    deployment: Deployment,
) -> None:
    # lb2's master (the backup, rolled out first) may hold only a few files more than it holds now, as under
    # a unit's low LimitNOFILE; each new VirtualHost's access log is one more file a reload opens.
    pid = deployment.lab.exec("lb2", "cat", "/run/nginx.pid").stdout.strip()
    held = int(deployment.lab.exec("lb2", "sh", "-c", f"ls /proc/{pid}/fd | wc -l").stdout)
    limits = deployment.lab.exec("lb2", "cat", f"/proc/{pid}/limits").stdout
    soft = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))
    hosts = [
        attached_object(
            "VirtualHost", NAMESPACE, f"logged-{index}", PAIR,
            {"serverNames": [f"logged-{index}.example.com"], "locations": [TO_LB_OA]},
        )
        for index in range(8)
    ]  # fmt: skip
    lb1_before = deployment.node_file("lb1", "/etc/nginx/nginx.conf")
    deployment.lab.exec("lb2", "prlimit", f"--pid={pid}", f"--nofile={held + 20}:")
    try:
        deployment.apply(hosts)
        rejected = wait_for(
            lambda: [e["message"] for e in deployment.events("Rejected") if "Max open files" in e["message"]],
            timeout=60,
            what="Rejected event naming the limit",
        )
        message = rejected[0]
        assert f"nginx's master (pid {pid}) may hold {held + 20} open files" in message
        assert "LimitNOFILE" in message
        assert deployment.condition("Programmed")["status"] == "False"
        listed = deployment.lab.exec("lb2", "ls", "/etc/nginx/lbpair").stdout
        assert f"vhost_{NAMESPACE}_logged-0.conf" not in listed  # nothing swapped
        assert deployment.node_file("lb1", "/etc/nginx/nginx.conf") == lb1_before  # never touched
        assert deployment.lab.http_get_via(deployment.vip, "www.example.com", "/").succeeded
        for host in hosts:  # no tenant is blamed for the node's limit
            status = json.loads(
                deployment.kubectl("get", "virtualhost", host["metadata"]["name"], "-o", "json")
            )
            accepted = [c for c in status.get("status", {}).get("conditions", []) if c["type"] == "Accepted"]
            assert all(c["status"] == "True" for c in accepted)
    finally:
        deployment.kubectl("delete", "virtualhost", *[host["metadata"]["name"] for host in hosts])
        deployment.lab.exec("lb2", "prlimit", f"--pid={pid}", f"--nofile={soft}:")
    deployment.wait_ready()


def test_hand_edit_on_a_node_is_reverted_and_reported(deployment: Deployment) -> None:
    original = deployment.node_file("lb2", VHOST_FILE)
    deployment.lab.exec("lb2", "sh", "-c", f"echo '# hand edit' >> {VHOST_FILE}")

    wait_for(lambda: deployment.node_file("lb2", VHOST_FILE) == original, timeout=20, what="file reverted")
    reverted = wait_for(
        lambda: [e["message"] for e in deployment.events("DriftReverted") if VHOST_FILE in e["message"]],
        timeout=10,
        what="DriftReverted event naming the file",
    )

    assert reverted == [f"lb2: reverted hand edits of {VHOST_FILE}"]


def test_a_burst_of_changes_is_coalesced_into_few_pushes(deployment: Deployment) -> None:
    applied_before = len(deployment.events("Applied"))
    burst = [
        attached_object(
            "VirtualHost",
            NAMESPACE,
            f"burst-{index}",
            PAIR,
            {"serverNames": [f"burst-{index}.example.com"], "locations": [TO_LB_OA]},
        )
        for index in range(10)
    ]
    try:
        deployment.apply(burst)  # ten separate API writes from one client, as a GitOps sync makes them
        deployment.wait_ready()
        wait_for(
            lambda: deployment.lab.http_get_via(deployment.vip, "burst-9.example.com", "/").succeeded,
            timeout=20,
            what="burst-9 served",
        )
        pushes = len(deployment.events("Applied")) - applied_before
        assert pushes <= 4, f"{pushes} node pushes for 10 changes"  # 2 nodes x at most 2 passes
    finally:
        deployment.kubectl("delete", "virtualhost", *[d["metadata"]["name"] for d in burst])
    deployment.wait_ready()


def test_operator_restart_pushes_nothing_when_nothing_changed(deployment: Deployment) -> None:
    deployment.wait_settled()
    manifests_before = {
        node: deployment.lab.exec(node, "stat", "-c", "%Y.%Z", STATE_FILE).stdout for node in ("lb1", "lb2")
    }
    nginx_pids_before = {node: deployment.lab.exec(node, "pidof", "nginx").stdout for node in ("lb1", "lb2")}
    applied_before = len(deployment.events("Applied"))

    deployment.operator.stop()
    log_offset = len(deployment.operator.log())
    deployment.operator.start()
    wait_for(
        lambda: "Authentication (publickey) successful" in deployment.operator.log_lines_since(log_offset),
        timeout=30,
        what="the restarted operator logged in to the nodes",
    )
    time.sleep(5)  # several probe intervals after its first pass: any push would have happened by now

    assert [event["message"] for event in deployment.events("Applied")][applied_before:] == []
    assert {
        node: deployment.lab.exec(node, "stat", "-c", "%Y.%Z", STATE_FILE).stdout for node in ("lb1", "lb2")
    } == manifests_before
    assert {
        node: deployment.lab.exec(node, "pidof", "nginx").stdout for node in ("lb1", "lb2")
    } == nginx_pids_before
    deployment.wait_ready()


def test_unreachable_node_is_reported_the_other_is_still_reconciled_and_it_recovers(
    deployment: Deployment,
) -> None:
    upstream_file = f"/etc/nginx/lbpair/upstream_{NAMESPACE}_lb-oa.conf"
    be1, be2 = deployment.backend["be1"], deployment.backend["be2"]
    patch = json.dumps({"spec": {"servers": [{"address": be2, "port": 8080}]}})
    deployment.lab.power_off("lb2")
    try:
        degraded = deployment.wait_condition("Degraded", "reason", "NodeUnreachable", timeout=30)
        assert "lb2 unreachable" in degraded["message"]
        deployment.kubectl("patch", "upstream", "lb-oa", "--type=merge", "-p", patch)
        wait_for(
            lambda: be1 not in deployment.node_file("lb1", upstream_file),
            timeout=30,
            what="lb1 updated",
        )
        assert deployment.lab.http_get_via(deployment.vip, "oa.example.com", "/").succeeded
        assert deployment.condition("Programmed")["status"] == "False"
    finally:
        deployment.lab.power_on("lb2")
    deployment.wait_ready(timeout=90)
    assert be1 not in deployment.node_file("lb2", upstream_file)
    # The pass's events are posted after its status writes (and the backend probes between them).
    wait_for(lambda: deployment.events("NodeRecovered"), timeout=30, what="a NodeRecovered event")


def test_a_changed_secret_is_rendered_onto_the_nodes(deployment: Deployment) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "seed-vrrp-auth", "namespace": NAMESPACE, "labels": {SECRET_LABEL: "true"}},
        "type": "Opaque",
        "stringData": {"password": "2222"},
    }

    deployment.apply([secret])

    for node in ("lb1", "lb2"):
        wait_for(
            lambda node=node: (
                "auth_pass 2222" in deployment.node_file(node, "/etc/keepalived/keepalived.conf")
            ),
            timeout=30,
            what=f"new VRRP password on {node}",
        )
    deployment.wait_ready()


def test_wrong_pinned_host_key_is_refused_and_reported(deployment: Deployment) -> None:
    nodes = deployment.pair()["spec"]["nodes"]
    impostor_key = deployment.lab.host_key("lb1")  # lb2 claims to have lb1's key: not the key lb2 presents
    patch = [{"op": "replace", "path": "/spec/nodes/1/hostKey", "value": impostor_key}]
    assert nodes[1]["name"] == "lb2"
    try:
        deployment.kubectl("patch", "lbpair", PAIR, "--type=json", "-p", json.dumps(patch))
        lb2 = wait_for(
            lambda: next(
                (
                    n
                    for n in deployment.pair()["status"]["nodes"]
                    if n["name"] == "lb2" and not n["reachable"]
                ),
                None,
            ),
            timeout=30,
            what="lb2 unreachable in status",
        )
        assert "refusing to connect" in lb2["message"]
        assert deployment.condition("Degraded")["reason"] == "NodeUnreachable"
    finally:
        restore = [{"op": "replace", "path": "/spec/nodes/1/hostKey", "value": nodes[1]["hostKey"]}]
        deployment.kubectl("patch", "lbpair", PAIR, "--type=json", "-p", json.dumps(restore))
    deployment.wait_ready()


def test_split_brain_is_detected_and_reported(deployment: Deployment) -> None:
    deployment.lab.vrrp_partition("lb2")
    try:
        split = deployment.wait_condition("SplitBrain", "status", "True", timeout=30)
        assert "held by lb1 and lb2" in split["message"]
        assert deployment.holders() == f"{deployment.vip}=lb1+lb2"
        assert deployment.condition("Ready")["reason"] == "SplitBrain"
        assert deployment.events("SplitBrain")
    finally:
        deployment.lab.heal_partition()
    deployment.wait_ready()


def test_delete_waits_for_an_unreachable_node_then_restores_both_nodes(deployment: Deployment) -> None:
    deployment.lab.power_off("lb2")
    try:
        deployment.kubectl("delete", "lbpair", PAIR, "--wait=false")
        wait_for(lambda: deployment.events("CleanupPending"), timeout=30, what="CleanupPending event")
        assert deployment.pair()["metadata"]["finalizers"]
    finally:
        deployment.lab.power_on("lb2")
    wait_for(
        lambda: PAIR not in deployment.kubectl("get", "lbpairs", "-o", "name"),
        timeout=60,
        what="pair deleted",
    )
    for node in ("lb1", "lb2"):
        assert "Managed by lbpair-operator" not in deployment.node_file(node, "/etc/nginx/nginx.conf")
        assert deployment.lab.exec(node, "test", "-e", "/var/lib/lbpair", check=False).returncode != 0
        assert (
            deployment.lab.exec(node, "systemctl", "is-active", "keepalived", check=False).stdout.strip()
            != "active"
        )
    assert deployment.lab.vip_holders(deployment.vip) == []
