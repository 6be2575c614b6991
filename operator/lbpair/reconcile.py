"""The coordinator of one pass over a pair: build -> render -> probe -> roll out -> status and events.

Runs in a worker thread (SSH and API calls block). Level-based: every pass compares what the nodes run
with what the resources ask for, so a spec change, a hand edit on a node, a node that comes back and an
operator restart all converge the same way, and a pass with nothing to change writes nothing to a node.
Each stage is a pure function or a node action in its own module (the rollout with refused objects left
out in isolated_rollout.py); this one keeps the per-pair memory (memory.py), serialises passes and
deletion of one pair, and decides what to write.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lbpair.build import (
    PairAccess,
    PairBuild,
    PairRejected,
    PairResources,
    build_pair,
    pair_access,
)
from lbpair.build.resources import SecretLookup
from lbpair.build.router_ids import CONDITION as ROUTER_ID_CONFLICT
from lbpair.build.router_ids import RouterIdClaim, router_id_condition
from lbpair.config import OperatorConfig
from lbpair.deletion import restore_nodes
from lbpair.drain import drain_events, plan_drains, report_drains, with_drains
from lbpair.drill import Drill
from lbpair.events import (
    Event,
    PairObservation,
    transition_events,
    trouble_events,
)
from lbpair.health import assess_pair
from lbpair.isolated_rollout import IsolatingRollout
from lbpair.memory import PairMemory
from lbpair.model.common import ObjectRef
from lbpair.model.status import PairStatus, find_condition, timestamp
from lbpair.nodes.node import Node, NodeFactory
from lbpair.nodes.ssh import SSHTarget
from lbpair.preview import Previewer, PreviewSink
from lbpair.sinks import PassRecorder, StatusSink
from lbpair.status import (
    pair_status,
    with_condition,
)
from lbpair.status_writes import StatusWriter, probe_backends

log = logging.getLogger(__name__)


class Reconciler:
    """Long-lived state shared by all passes: the node factory, the status sink, per-pair memory."""

    def __init__(
        self,
        nodes: NodeFactory,
        status: StatusSink,
        metrics: PassRecorder,
        config: OperatorConfig,
        clock: Callable[[], float] = time.monotonic,
        *,
        previews: PreviewSink | None = None,
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._nodes, self._metrics, self._config = nodes, metrics, config
        self._writes = StatusWriter(status, config)
        self._preview = Previewer(previews)
        self._wall_clock = wall_clock  # certificate expiry
        self._rollout = IsolatingRollout(config, clock, metrics)
        self._memory: dict[ObjectRef, PairMemory] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._nodes.close_all()

    def pairs_using_secret(self, secret: ObjectRef) -> list[ObjectRef]:
        with self._lock:
            return [key for key, memory in self._memory.items() if secret in memory.secrets]

    def _memory_of(self, key: ObjectRef) -> PairMemory:
        with self._lock:
            return self._memory.setdefault(key, PairMemory())

    def run_pass(self, resources: PairResources) -> list[Event]:
        metadata = resources.pair.get("metadata") or {}
        key = ObjectRef(str(metadata.get("namespace")), str(metadata.get("name")))
        memory = self._memory_of(key)
        with memory.lock:
            if memory.deleting or metadata.get("deletionTimestamp"):
                return []
            if memory.status is None:
                # After a restart, conditions keep their lastTransitionTime from what the API holds.
                memory.status = _status_in(resources.pair)
            started = time.monotonic()
            try:
                outcome, events = self._run_pass(key, resources, memory, started)
                memory.pass_error = ""
            except Exception as error:
                log.exception("pass pair=%s outcome=error seconds=%.3f", key, time.monotonic() - started)
                outcome, events = "error", self._writes.failed_pass(key, memory, error)
            seconds = time.monotonic() - started
            self._metrics.pass_finished(key, outcome, seconds, ready=is_ready(memory.status))
            return events

    def _run_pass(
        self, key: ObjectRef, resources: PairResources, memory: PairMemory, started: float
    ) -> tuple[str, list[Event]]:
        """The pass's outcome (as lbpair.metrics.PASS_OUTCOMES names them) and its events."""
        moment = self._wall_clock()
        now = timestamp(moment)
        build = build_pair(resources, memory.parsed, memory.refusals_in_force(resources))
        memory.secrets = build.secrets_used
        if isinstance(build, PairRejected):
            memory.router_ids = None
            events = self._writes.rejected(key, memory, build, now)
            log.info(
                "pass pair=%s outcome=rejected reason=%s seconds=%.3f",
                key,
                build.reason,
                time.monotonic() - started,
            )
            return "rejected", events
        memory.problem = ""
        drains = plan_drains(build.pair.spec, memory.status)
        build = with_drains(build, drains)
        nodes = connect(self._nodes, build)
        preview = None
        if build.pair.spec.paused:
            rollout, preview = self._preview.run(key, build, nodes)
            events = list(rollout.events)
        else:
            self._preview.forget(key)
            build, rollout, events = self._rollout.run(key, build, resources, nodes, memory)
        events += memory.former_nodes.release(build.pair.spec.nodes, nodes)
        health = assess_pair(
            build.vips, rollout.reports, rollout.problem, at=now, leaving=memory.former_nodes.pending()
        )
        self._metrics.pair_observed(key, health, len(memory.refusals))
        observed = PairObservation.of(health)
        events += transition_events(memory.observed, observed, health)
        memory.observed = observed
        memory.applied_hashes.update((r.name, r.applied_hash) for r in rollout.reports if r.applied_hash)
        pair = report_drains(
            pair_status(build, health, memory.applied_hashes, memory.status, now),
            memory.status,
            drains,
            health,
            now,
        )
        pair = pair.model_copy(update={"preview": preview})
        events += drain_events(memory.status, pair)
        pair, shared = self._check_router_ids(memory, build, pair, now)
        events += shared
        drill = Drill(build, health, nodes, drains)
        pair, drilled = drill.run_if_requested(resources.pair, memory.status, pair, now)
        events += drilled
        self._writes.pair(key, memory, pair)
        written, attached_events = self._writes.attached(
            build,
            health=health,
            resources=resources,
            memory=memory,
            moment=moment,
            backends=(list(nodes), lambda: probe_backends(nodes, rollout.reports, build)),
        )
        events += attached_events
        self._metrics.services_reloaded(key, rollout.reloads)
        outcome = (
            "rollout-failed" if rollout.problem and not preview else _applied_or_unchanged(rollout.reloads)
        )
        seconds, reloads = time.monotonic() - started, ",".join(rollout.reloads) or "-"
        log.info(
            "pass pair=%s outcome=%s seconds=%.3f files_changed=%d reloads=%s attached_status_writes=%d",
            *(key, outcome, seconds, rollout.files_changed, reloads, written),
        )
        return outcome, events

    def _check_router_ids(
        self, memory: PairMemory, build: PairBuild, pair: PairStatus, now: str
    ) -> tuple[PairStatus, list[Event]]:
        """The VirtualRouterIdConflict condition against every other pair managed, as last built (a pair
        being deleted or rejected has none), and a Warning when it turns True."""
        memory.router_ids = RouterIdClaim.of(build.pair, build.state)
        with self._lock:
            others = [m.router_ids for m in self._memory.values() if m.router_ids and not m.deleting]
        checked = with_condition(pair, router_id_condition(memory.router_ids, others, at=now), memory.status)
        before = memory.status.conditions if memory.status else []
        return checked, trouble_events(before, checked.conditions, {ROUTER_ID_CONFLICT: "True"})

    def remove_from_nodes(self, pair_body: Mapping[str, Any], secrets: SecretLookup) -> str:
        """Apply the deletion policy on both nodes; returns what is still pending ('' when done)."""
        metadata = pair_body.get("metadata") or {}
        key = ObjectRef(str(metadata.get("namespace")), str(metadata.get("name")))
        memory = self._memory_of(key)
        with memory.lock:
            memory.deleting = True
            access = pair_access(pair_body, secrets)
            if isinstance(access, PairRejected) or access.pair.spec.deletion_policy == "Retain":
                pending = ""  # nothing was ever applied from an invalid spec; Retain leaves it all
            elif access.ssh_private_key is None:
                pending = f"cannot log in to the nodes to clean up: {access.missing_key}"
            else:
                pending = restore_nodes(connect(self._nodes, access).values())
        if not pending:
            with self._lock:
                self._memory.pop(key, None)
            self._preview.forget(key)
            self._metrics.pair_removed(key)
        return pending


def connect(factory: NodeFactory, access: PairAccess | PairBuild) -> dict[str, Node]:
    """The pair's nodes by name, reached with its SSH settings and key."""
    spec, key = access.pair.spec, access.ssh_private_key or ""
    return {
        node.name: factory.node(
            SSHTarget(
                node.name,
                node.address,
                node.ssh_port,
                spec.ssh.user,
                node.host_key,
                key,
                spec.ssh.sudo,
                pair=access.pair.metadata.owner,
            ),
            access.layout,
        )
        for node in spec.nodes
    }


def _applied_or_unchanged(reloads: Sequence[str]) -> str:
    return "applied" if reloads else "unchanged"


def is_ready(status: PairStatus | None) -> bool:
    """The pair's Ready condition is True in `status` (as last written)."""
    ready = find_condition(status.conditions, "Ready") if status else None
    return ready is not None and ready.status == "True"


def _status_in(pair_body: Mapping[str, Any]) -> PairStatus | None:
    try:
        return PairStatus.model_validate(pair_body.get("status") or {})
    except ValueError:
        return None  # written by something else: start afresh
