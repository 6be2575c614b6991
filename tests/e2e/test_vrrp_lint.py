"""The VRRP linter from an administrator's point of view (issue 14 item 4): `kubectl apply` of a pair with a
VRRP trap is refused by the API server with the rule's message (the table of tests/unit/test_vrrp_lint.py,
whose fixes are accepted), and two pairs using one virtual router id on the lab's front network each get
the VirtualRouterIdConflict condition and a Warning event, which clear once one of them moves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.cluster import ControlPlane
from testbed.lab import Lab
from testbed.operator import (
    SEED_SAMPLE,
    OperatorProcess,
    deploy_documents,
    install_crds,
    lab_pair,
    load_manifests,
    load_sample_on_lab,
    wait_for,
)
from tests.unit.corpus import parse_path, with_value
from tests.unit.test_vrrp_lint import SEED_CASES, LintCase

pytestmark = pytest.mark.e2e

NAMESPACE = "lb-vrrp-lint"
SEED, NEIGHBOUR = "seed", "neighbour"
SEED_ROUTER_ID = 51


def seed_pair(changes: dict[str, Any]) -> dict[str, Any]:
    """The seed sample's pair changed as the table says; only ever sent as a server-side dry run, so on
    the documentation addresses it is written for (the lab is not needed)."""
    (pair,) = [d for d in load_manifests(SEED_SAMPLE) if d["kind"] == "LoadBalancerPair"]
    pair["metadata"]["name"] = "lint"
    for path, value in changes.items():
        pair = with_value(pair, parse_path(path), value)
    return pair


@pytest.fixture(scope="module")
def api(cluster: ControlPlane) -> ControlPlane:
    install_crds(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    return cluster


@pytest.mark.parametrize("case", SEED_CASES, ids=lambda case: case.name)
def test_kubectl_apply_of_a_vrrp_trap_is_refused_with_the_message(api: ControlPlane, case: LintCase) -> None:
    refused = api.kubectl(
        "-n", NAMESPACE, "apply", "--dry-run=server", "-f", "-",
        input=json.dumps(seed_pair(case.bad)), check=False,
    )  # fmt: skip

    assert refused.returncode != 0
    assert case.field in refused.stderr, refused.stderr
    assert case.message in refused.stderr
    accepted = api.kubectl(
        "-n", NAMESPACE, "apply", "--dry-run=server", "-f", "-",
        input=json.dumps(seed_pair(case.fixed)), check=False,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr


class Admin:
    def __init__(self, cluster: ControlPlane) -> None:
        self.cluster = cluster

    def kubectl(self, *args: str) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args).stdout

    def conflict(self, pair: str) -> dict[str, Any]:
        status = json.loads(self.kubectl("get", "lbpair", pair, "-o", "json")).get("status", {})
        for condition in status.get("conditions", []):
            if condition["type"] == "VirtualRouterIdConflict":
                return dict(condition)
        return {}

    def warnings(self, pair: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={pair},reason=VirtualRouterIdShared"
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("get", "events", "--field-selector", selector, "-o", "json")
        )["items"]
        return items


@pytest.fixture(scope="module")
def admin(cluster: ControlPlane, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    lab.resize(2)
    operator: OperatorProcess | None = None
    try:
        neighbour = lab_pair(lab, 2, NEIGHBOUR, NAMESPACE)
        neighbour["spec"]["vrrp"]["virtualRouterId"] = SEED_ROUTER_ID  # the seed's, on the same network
        kubeconfig = deploy_documents(cluster, lab, NAMESPACE, [*load_sample_on_lab(lab), neighbour])
        operator = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
        operator.start()
        yield Admin(cluster)
    finally:
        if operator is not None:
            cluster.kubectl(
                "-n", NAMESPACE, "delete", "lbpair", SEED, NEIGHBOUR, "--timeout=90s", check=False
            )
            operator.stop_and_show_log()
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        lab.resize(1)


def test_two_pairs_sharing_a_router_id_both_get_the_condition_and_an_event(admin: Admin) -> None:
    for pair, other in ((SEED, NEIGHBOUR), (NEIGHBOUR, SEED)):
        condition = wait_for(
            lambda pair=pair: (c := admin.conflict(pair)).get("status") == "True" and c,
            timeout=90,
            what=f"{pair} VirtualRouterIdConflict=True",
        )
        assert condition["reason"] == "VirtualRouterIdShared"
        assert (
            f"virtual_router_id {SEED_ROUTER_ID} is also used by pair {NAMESPACE}/{other}"
            in condition["message"]
        )
        (event,) = wait_for(lambda pair=pair: admin.warnings(pair), timeout=20, what=f"{pair}'s warning")
        assert event["type"] == "Warning"


def test_moving_one_pair_to_another_router_id_clears_both(admin: Admin) -> None:
    admin.kubectl(
        "patch",
        "lbpair",
        NEIGHBOUR,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"vrrp": {"virtualRouterId": 52}}}),
    )

    for pair in (SEED, NEIGHBOUR):
        wait_for(
            lambda pair=pair: admin.conflict(pair).get("reason") == "Unique",
            timeout=60,
            what=f"{pair} VirtualRouterIdConflict=False",
        )
