"""The leader Lease (lbpair.kube.LeaderLease) between candidates sharing one API server, played by an
in-memory Lease store that checks resourceVersions as the API server does; time is a FakeClock."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from lbpair.config import ConfigError, OperatorConfig
from lbpair.kube import LeaderLease
from tests.unit.test_reconcile import FakeClock

DURATION = 15.0


@dataclass
class Response:
    data: bytes


@dataclass
class LeaseStore:
    """coordination.k8s.io Leases as the API server keeps them: a write must carry the current version."""

    leases: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Response:
        if name not in self.leases:
            raise ApiException(status=404, reason="Not Found")
        return Response(json.dumps(self.leases[name]).encode())

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        if body["metadata"]["name"] in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> None:
        if body["metadata"]["resourceVersion"] != self.leases[name]["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self._store(body)

    def _store(self, body: dict[str, Any]) -> None:
        self.version += 1
        stored = json.loads(json.dumps(body))
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[stored["metadata"]["name"]] = stored

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.leases["lbpair-operator"]["spec"]
        return spec


def candidate(store: LeaseStore, clock: FakeClock, identity: str) -> LeaderLease:
    return LeaderLease("lbpair-system", "lbpair-operator", identity, DURATION, clock=clock, api=store)


def test_the_first_candidate_creates_the_lease_and_the_second_stands_by() -> None:
    store, clock = LeaseStore(), FakeClock()
    first, second = candidate(store, clock, "pod-a"), candidate(store, clock, "pod-b")

    assert first.try_acquire()
    assert not second.try_acquire()
    assert second.holder == "pod-a"
    assert store.spec()["holderIdentity"] == "pod-a"
    assert store.spec()["leaseDurationSeconds"] == DURATION
    assert store.spec()["renewTime"].endswith("Z")


def test_a_holder_that_keeps_renewing_is_never_taken_over() -> None:
    store, clock = LeaseStore(), FakeClock()
    first, second = candidate(store, clock, "pod-a"), candidate(store, clock, "pod-b")
    first.try_acquire()

    looks = []
    for _ in range(6):  # 60 s: four lease durations
        second_looks = second.try_acquire()
        clock.advance(DURATION * 2 / 3)
        looks.append(second_looks)
        assert first.try_acquire()

    assert looks == [False] * 6
    assert store.spec()["holderIdentity"] == "pod-a"


def test_a_holder_that_stops_renewing_is_taken_over_one_lease_duration_after_its_last_renewal() -> None:
    store, clock = LeaseStore(), FakeClock()
    first, second = candidate(store, clock, "pod-a"), candidate(store, clock, "pod-b")
    first.try_acquire()

    assert not second.try_acquire()  # sees the last renewal now
    clock.advance(DURATION - 0.1)
    assert not second.try_acquire()
    clock.advance(0.1)
    assert second.try_acquire()

    assert store.spec()["holderIdentity"] == "pod-b"
    assert store.spec()["leaseTransitions"] == 1
    assert not first.try_acquire()  # the old holder, back: it stands by
    assert first.holder == "pod-b"


def test_a_released_lease_is_taken_at_once() -> None:
    store, clock = LeaseStore(), FakeClock()
    first, second = candidate(store, clock, "pod-a"), candidate(store, clock, "pod-b")
    first.try_acquire()
    assert not second.try_acquire()

    first.release()

    assert second.try_acquire()
    assert store.spec()["holderIdentity"] == "pod-b"


def test_two_candidates_taking_over_at_once_cannot_both_win() -> None:
    store, clock = LeaseStore(), FakeClock()
    gone, second, third = (candidate(store, clock, name) for name in ("pod-a", "pod-b", "pod-c"))
    gone.try_acquire()
    second.try_acquire()
    third.try_acquire()
    clock.advance(DURATION)
    stale = store.read_namespaced_lease("lbpair-operator", "lbpair-system")  # both read this version ...
    store.read_namespaced_lease = lambda *_, **__: stale  # type: ignore[method-assign]

    won = [second.try_acquire(), third.try_acquire()]  # ... and both try to write over it

    assert won == [True, False]
    assert store.spec()["holderIdentity"] == "pod-b"


@pytest.mark.parametrize("value", ["lbpair-operator", "lbpair-system/", "Lbpair/x", "a/b/c"])
def test_a_lease_that_is_not_namespace_slash_name_stops_the_operator_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="LBPAIR_LEADER_LEASE"):
        OperatorConfig.from_environment({"LBPAIR_LEADER_LEASE": value})


def test_no_lease_by_default_and_the_charts_form_accepted() -> None:
    assert OperatorConfig.from_environment({}).leader_lease == ""
    configured = OperatorConfig.from_environment({"LBPAIR_LEADER_LEASE": "lbpair-system/lbpair-operator"})
    assert configured.leader_lease == "lbpair-system/lbpair-operator"
