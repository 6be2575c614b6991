"""Adopting a hand-built pair end to end: the seed tutorial's own nginx and keepalived files installed by hand
on the lab's lb1 and lb2 (tests/golden/inputs/adopt-seed, addresses moved onto the lab's plan), serving
through the VIP; `python -m lbpair.adopt` reads both nodes over SSH and prints the manifests; they are
applied with kubectl and the operator (as the chart's ServiceAccount) takes the nodes over.

What is asserted is what a user sees: the command's output and exit status, every host answering through
the VIP the same way before and after (status and body, per Host header and path), no failed request while
the operator takes over (a client per host opening a new connection every 50 ms), the pair's status, and
the files on the nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from testbed.cluster import REPO_ROOT, ControlPlane
from testbed.lab import Lab
from testbed.operator import OperatorProcess, deploy_documents, tear_down_on_shared_nodes, wait_for
from testbed.traffic import RequestLoop

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-adopt-e2e"
PAIR = "seed"
NODES = ("lb1", "lb2")
SEED_FILES = REPO_ROOT / "tests" / "golden" / "inputs" / "adopt-seed"
# (Host header, path): every server block and location of the seed's LB.conf.
REQUESTS = (
    ("www.example.com", "/"),
    ("www.example.com", "/a/b"),
    ("oa.example.com", "/"),
    ("dev.example.com", "/svn/"),
    ("dev.example.com", "/submin/x"),
)
HAND_BUILT_PATHS = ("/etc/nginx/vhosts", "/etc/keepalived/keepalived.conf", "/etc/keepalived/chk_nginx.sh")


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


def answers(lab: Lab) -> dict[tuple[str, str], Answer]:
    vip = lab.plan.vip_primary
    found = {}
    for host, path in REQUESTS:
        response = lab.http_get_via(vip, host, path, timeout=3.0)
        found[host, path] = Answer(response.status, response.body)
    return found


def all_served(found: dict[tuple[str, str], Answer]) -> dict[tuple[str, str], Answer] | None:
    return found if all(answer.status == 200 for answer in found.values()) else None


def install_hand_built(lab: Lab, node: str) -> None:
    """What the tutorial's reader does on each node: write the files, start nginx and keepalived."""
    number = NODES.index(node) + 1
    files = {
        "/etc/nginx/nginx.conf": SEED_FILES / "nginx.conf",
        "/etc/nginx/vhosts/LB.conf": SEED_FILES / "LB.conf",
        "/etc/keepalived/keepalived.conf": SEED_FILES / f"keepalived-lb{number}.conf",
        "/etc/keepalived/chk_nginx.sh": SEED_FILES / "chk_nginx.sh",
    }
    lab.exec(node, "mkdir", "-p", "/etc/nginx/vhosts", "/var/cache/nginx/seed")
    for path, source in files.items():
        lab.exec(node, "tee", path, stdin_text=lab.plan.translate_text(source.read_text()))
    lab.exec(node, "chmod", "755", "/etc/keepalived/chk_nginx.sh")
    restart(lab, node, "nginx")
    restart(lab, node, "keepalived")


def restart(lab: Lab, node: str, unit: str, *, check: bool = True) -> None:
    # The daemons keep the descriptors they were started with (nginx's cache processes keep stderr):
    # they must not be this command's pipes, or the command never ends.
    lab.exec(node, "sh", "-c", f"systemctl restart {unit} </dev/null >/dev/null 2>&1", check=check)


def put_back_stock(lab: Lab, node: str, stock_nginx_conf: str) -> None:
    """The node as the lab booted it (stock nginx, no keepalived), for the modules that run after this one."""
    lab.exec(node, "systemctl", "stop", "keepalived", check=False)
    lab.exec(node, "rm", "-rf", *HAND_BUILT_PATHS, check=False)
    lab.exec(node, "tee", "/etc/nginx/nginx.conf", stdin_text=stock_nginx_conf, check=False)
    restart(lab, node, "nginx", check=False)


def run_import(lab: Lab) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "lbpair.adopt", "--name", PAIR, "--namespace", NAMESPACE,
               "--known-hosts", str(lab.known_hosts_path), "--key", str(lab.ssh_key_path)]  # fmt: skip
    for node in NODES:
        command += ["--node", str(lab.mgmt_address(node))]
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT / "operator"), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": python_path},
    )


@dataclass
class HandBuilt:
    lab: Lab
    before: dict[tuple[str, str], Answer]


@pytest.fixture(scope="module")
def hand_built(lab: Lab) -> Iterator[HandBuilt]:
    stock = {node: lab.exec(node, "cat", "/etc/nginx/nginx.conf").stdout for node in NODES}
    try:
        for node in NODES:
            install_hand_built(lab, node)
        vip = str(lab.plan.vip_primary)
        wait_for(
            lambda: lab.vip_holders(vip) == ["lb1"], timeout=30, what="the hand-built lb1 holding the VIP"
        )
        before = wait_for(
            lambda: all_served(answers(lab)),
            timeout=30,
            what="every host served through the VIP by the hand-built pair",
        )
        yield HandBuilt(lab, before)
    finally:
        for node in NODES:
            put_back_stock(lab, node, stock[node])


def test_import_prints_valid_manifests_and_lists_what_it_cannot_express(hand_built: HandBuilt) -> None:
    imported = run_import(hand_built.lab)

    assert imported.returncode == 0, imported.stderr
    documents = [doc for doc in yaml.safe_load_all(imported.stdout) if doc]
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for doc in documents)
    assert kinds == [
        ("LoadBalancerPair", PAIR),
        ("Secret", f"{PAIR}-vrrp-auth"),
        ("Upstream", "lb-oa"),
        ("Upstream", "lb-www"),
        ("VirtualHost", "dev.example.com"),
        ("VirtualHost", "oa.example.com"),
        ("VirtualHost", "www.example.com"),
    ]
    pair = next(doc for doc in documents if doc["kind"] == "LoadBalancerPair")["spec"]
    lab = hand_built.lab
    assert [(n["name"], n["address"], n["hostKey"], n["priority"]) for n in pair["nodes"]] == [
        (node, str(lab.mgmt_address(node)), lab.host_key(node), priority)
        for node, priority in zip(NODES, (101, 99), strict=True)
    ]
    assert pair["vips"] == [{"address": lab.plan.translate_text("198.51.100.10/24")}]
    # Said twice: as a comment block above the documents, and on stderr.
    comments = imported.stdout.split("\n---\n")[0]
    for directive in ("fastcgi_buffers 8 256k", "notification_email", "smtp_server 127.0.0.1"):
        assert directive in imported.stderr
        assert any(line.startswith("#") and directive in line for line in comments.splitlines())


def test_the_operator_takes_the_pair_over_without_a_failed_request_and_serves_every_host_the_same(
    hand_built: HandBuilt, cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lab = hand_built.lab
    imported = run_import(lab)
    assert imported.returncode == 0, imported.stderr
    manifest = tmp_path_factory.mktemp("adopt") / "seed.yaml"
    manifest.write_text(imported.stdout)
    operator_kubeconfig = deploy_documents(cluster, lab, NAMESPACE, [])
    operator = OperatorProcess(operator_kubeconfig, manifest.parent / "operator.log")
    try:
        with ExitStack() as clients:
            loops = [
                clients.enter_context(
                    RequestLoop(lab, host=host, path=path, interval=0.05, max_requests=2000, max_seconds=120)
                )
                for host, path in REQUESTS
            ]
            print(cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(manifest)).stdout, file=sys.stderr)
            operator.start()
            wait_for(lambda: pair_ready(cluster), timeout=90, what="the adopted pair Ready, Programmed, 2/2")
            wait_for(lambda: managed_on_both(lab), timeout=30, what="the operator's files on both nodes")
            wait_for(
                lambda: all(len(loop.responses) > 40 for loop in loops), timeout=30, what="traffic after"
            )
        after = answers(lab)
        status = pair_status(cluster)
    finally:
        tear_down_on_shared_nodes(cluster, operator, [NAMESPACE], [PAIR])
    # Deleting the pair (deletionPolicy Restore) puts the user's files back and stops keepalived, as for any
    # deleted pair (its VIPs go with it); starting keepalived again brings the hand-built pair back.
    given_back = {node: lab.exec(node, "cat", "/etc/nginx/nginx.conf").stdout for node in NODES}
    keepalived_after_deletion = [
        lab.exec(node, "systemctl", "is-active", "keepalived", check=False).stdout.strip() for node in NODES
    ]
    for node in NODES:
        restart(lab, node, "keepalived")
    after_restart = wait_for(
        lambda: all_served(answers(lab)), timeout=30, what="the hand-built pair serving again"
    )

    sent = [response for loop in loops for response in loop.responses]
    print(
        f"takeover traffic: {len(sent)} requests, slowest {max(r.seconds for r in sent):.2f} s",
        file=sys.stderr,
    )
    assert [loop.failed for loop in loops] == [[] for _ in loops]
    assert after == hand_built.before
    assert status["vipHolders"] == f"{lab.plan.vip_primary}=lb1"
    assert status["healthyNodes"] == "2/2"
    assert given_back == {
        node: lab.plan.translate_text((SEED_FILES / "nginx.conf").read_text()) for node in NODES
    }
    assert keepalived_after_deletion == ["inactive", "inactive"]
    assert after_restart == hand_built.before


def pair_status(cluster: ControlPlane) -> dict[str, Any]:
    found = cluster.kubectl("-n", NAMESPACE, "get", "lbpair", PAIR, "-o", "json", check=False)
    return dict(json.loads(found.stdout).get("status", {})) if found.returncode == 0 else {}


def pair_ready(cluster: ControlPlane) -> bool:
    status = pair_status(cluster)
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return (conditions.get("Ready"), conditions.get("Programmed"), status.get("healthyNodes")) == (
        "True",
        "True",
        "2/2",
    )


def managed_on_both(lab: Lab) -> bool:
    return all(
        "Managed by lbpair-operator" in lab.exec(node, "head", "-n", "1", path).stdout
        for node in NODES
        for path in ("/etc/nginx/nginx.conf", "/etc/keepalived/keepalived.conf")
    )
