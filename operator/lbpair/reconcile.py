"""The coordinator of one pass over a pair: build -> render -> probe -> roll out -> status and events.

Runs in a worker thread (SSH and API calls block). Level-based: every pass compares what the nodes run
with what the resources ask for, so a spec change, a hand edit on a node, a node that comes back and an
operator restart all converge the same way, and a pass with nothing to change writes nothing to a node.
Each stage is a pure function or a node action in its own module; this one keeps the per-pair memory,
serialises passes and deletion of one pair, and decides what to write.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lbpair.build import (
    PairAccess,
    PairBuild,
    PairRejected,
    PairResources,
    ParseCache,
    build_pair,
    pair_access,
)
from lbpair.build.resources import SecretLookup
from lbpair.config import OperatorConfig
from lbpair.deletion import release_node, restore_nodes
from lbpair.events import Event, PairObservation, attached_rejection_event, rejection_event, transition_events
from lbpair.health import PairHealth, assess_pair
from lbpair.isolation import bisect, blame, node_at_fault, told_to
from lbpair.model.common import ObjectRef
from lbpair.model.pair import PairNode
from lbpair.model.status import AttachedStatus, PairStatus, StatusModel, find_condition, timestamp
from lbpair.nodes.client import NodeError
from lbpair.nodes.node import Node, NodeFactory
from lbpair.nodes.observe import NodeObservation
from lbpair.nodes.operations import ValidationFailedError
from lbpair.nodes.ssh import SSHTarget
from lbpair.render import render_pair
from lbpair.render.model import ObjectKey
from lbpair.rollout import (
    ConfigRejectedError,
    FailedRollout,
    NodePlan,
    PairRollout,
    compare,
    observe_all,
    roll_out_pair,
)
from lbpair.status import (
    attached_status,
    failed_pass_status,
    pair_status,
    rejected_pair_status,
    same_but_probe_times,
)

log = logging.getLogger(__name__)
ISOLATION_ROUNDS = 8
"""Refusals a pass isolates before it gives up for now (nginx -t stops at the first error it meets); the
next pass goes on from there."""


class StatusSink(Protocol):
    def patch_status(self, plural: str, namespace: str, name: str, status: StatusModel) -> None: ...


class PassRecorder(Protocol):
    """Where passes report for the operator's metrics (lbpair.metrics.PrometheusRecorder)."""

    def pass_finished(self, pair: ObjectRef, outcome: str, seconds: float, *, ready: bool) -> None: ...

    def node_rolled_out(self, pair: ObjectRef, node: str, reason: str) -> None:
        """A rollout to `node` took its config ("Applied") or failed with this event reason."""

    def pair_observed(self, pair: ObjectRef, health: PairHealth, refused_objects: int) -> None: ...

    def pair_removed(self, pair: ObjectRef) -> None: ...


@dataclass
class PairMemory:
    """What earlier passes saw and wrote, so events fire on transitions and unchanged status is not
    written again."""

    # Passes and the deletion of a pair never overlap: a pass in flight must not re-push what the
    # deletion just removed. Once deleting, no pass touches the nodes again.
    lock: threading.Lock = field(default_factory=threading.Lock)
    deleting: bool = False
    observed: PairObservation = field(default_factory=PairObservation)
    problem: str = ""
    pass_error: str = ""
    applied_hashes: dict[str, str] = field(default_factory=dict)
    failures: dict[str, FailedRollout] = field(default_factory=dict)
    secrets: frozenset[ObjectRef] = frozenset()
    status: PairStatus | None = None
    status_written_at: float | None = None  # time.monotonic()
    attached: dict[ObjectKey, AttachedStatus] = field(default_factory=dict)
    parsed: ParseCache = field(default_factory=ParseCache)
    refusals: dict[ObjectKey, Refusal] = field(default_factory=dict)
    nodes: dict[str, tuple[Node, str]] = field(default_factory=dict)
    """The last pass's nodes (and pinned host keys) by endpoint ("lb2 198.51.100.12:22"), to notice one
    that leaves the spec."""
    leaving: dict[str, tuple[tuple[Node, str], str]] = field(default_factory=dict)
    """Nodes that left the spec and are not cleaned up yet: the node and host key, and what is pending."""

    def leaving_messages(self) -> dict[str, str]:
        return {endpoint: pending for endpoint, (_, pending) in self.leaving.items()}

    def refusals_in_force(self, resources: PairResources) -> dict[ObjectKey, str]:
        """Forgets the refusals of objects that changed (or went away) or of a pair that changed: those are
        tried again. The rest stay left out, with why."""
        generations = resources.generations()
        pair_generation = generations.pop(None)
        self.refusals = {
            key: refusal
            for key, refusal in self.refusals.items()
            if generations.get(key) == refusal.generation and refusal.pair_generation == pair_generation
        }
        return self.left_out()

    def left_out(self) -> dict[ObjectKey, str]:
        return {key: refusal.message for key, refusal in self.refusals.items()}


@dataclass(frozen=True)
class Refusal:
    """An attached object a node's validators refused: left out, and not tried again on a timer (which would
    hold up everyone else's changes), but as soon as it or its pair changes."""

    generation: int
    pair_generation: int
    message: str


class Reconciler:
    """Long-lived state shared by all passes: the node factory, the status sink, per-pair memory."""

    def __init__(
        self,
        nodes: NodeFactory,
        status: StatusSink,
        metrics: PassRecorder,
        config: OperatorConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nodes, self._status, self._metrics, self._config = nodes, status, metrics, config
        self._clock = clock  # times rollout backoffs; a test advances it instead of sleeping
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
                outcome, events = "error", self._report_failed_pass(key, resources, memory, error)
            seconds = time.monotonic() - started
            self._metrics.pass_finished(key, outcome, seconds, ready=is_ready(memory.status))
            return events

    def _report_failed_pass(
        self, key: ObjectRef, resources: PairResources, memory: PairMemory, error: Exception
    ) -> list[Event]:
        """Conditions go Unknown with the error (a stale Ready=True must not stand); one event per distinct
        error, not one per pass. The next pass starts afresh."""
        message = f"internal error ({type(error).__name__}: {error}); see the operator log"
        # Nothing of the current generation was observed: keep the one last observed.
        generation = (memory.status.observed_generation if memory.status else None) or 0
        events = [Event.warning("PassFailed", message)] if message != memory.pass_error else []
        memory.pass_error = message
        now = timestamp(datetime.datetime.now(datetime.UTC))
        try:
            self._write_pair_status(key, memory, failed_pass_status(memory.status, generation, message, now))
        except Exception:
            log.exception("pair=%s: writing the failed pass's status failed too", key)
        return events

    def _run_pass(
        self, key: ObjectRef, resources: PairResources, memory: PairMemory, started: float
    ) -> tuple[str, list[Event]]:
        """The pass's outcome (as lbpair.metrics.PASS_OUTCOMES names them) and its events."""
        now = timestamp(datetime.datetime.now(datetime.UTC))
        build = build_pair(resources, memory.parsed, memory.refusals_in_force(resources))
        memory.secrets = build.secrets_used
        if isinstance(build, PairRejected):
            events = rejection_event(memory.problem, build.message)
            memory.problem = build.message
            self._write_pair_status(key, memory, rejected_pair_status(build, memory.status, now))
            log.info(
                "pass pair=%s outcome=rejected reason=%s seconds=%.3f",
                key,
                build.reason,
                time.monotonic() - started,
            )
            return "rejected", events
        memory.problem = ""
        nodes = connect(self._nodes, build)
        build, rollout, events = self._roll_out(key, build, resources, nodes, memory)
        events += release_former_nodes(build, nodes, memory)
        health = assess_pair(
            build.vips, rollout.reports, rollout.problem, at=now, leaving=memory.leaving_messages()
        )
        self._metrics.pair_observed(key, health, len(memory.refusals))
        observed = PairObservation.of(health)
        events += transition_events(memory.observed, observed, health)
        memory.observed = observed
        memory.applied_hashes.update((r.name, r.applied_hash) for r in rollout.reports if r.applied_hash)
        self._write_pair_status(
            key, memory, pair_status(build, health, memory.applied_hashes, memory.status, now)
        )
        written, included = 0, set(build.state.included)
        for item in build.attached:
            previous = memory.attached.get(item.key)
            status = attached_status(
                build, health, item, included=item.key in included, previous=previous, at=now
            )
            events += attached_rejection_event(item.key, previous, status)
            if status != previous:
                self._status.patch_status(item.plural, item.key.namespace, item.key.name, status)
                written += 1
            memory.attached[item.key] = status
        outcome = "rollout-failed" if rollout.problem else ("applied" if rollout.reloads else "unchanged")
        seconds, reloads = time.monotonic() - started, ",".join(rollout.reloads) or "-"
        log.info(
            "pass pair=%s outcome=%s seconds=%.3f files_changed=%d reloads=%s attached_status_writes=%d",
            *(key, outcome, seconds, rollout.files_changed, reloads, written),
        )
        return outcome, events

    def _roll_out(
        self,
        key: ObjectRef,
        build: PairBuild,
        resources: PairResources,
        nodes: Mapping[str, Node],
        memory: PairMemory,
    ) -> tuple[PairBuild, PairRollout, list[Event]]:
        """Roll the build out; while a node's validators refuse it for attached objects' sake, leave those
        out and roll out the rest. Returns the build that went out, its rollout, and the events."""
        observations, errors = observe_all(list(nodes.values()))
        events: list[Event] = []
        for attempt in itertools.count(1):
            rollout = roll_out_pair(
                plans_for(build, nodes),
                observations,
                errors,
                pair=str(key),
                vips=build.vips,
                layout=build.layout,
                failures=memory.failures,
                config=self._config,
                clock=self._clock,
            )
            for node, reason in rollout.node_rollouts:
                self._metrics.node_rolled_out(key, node, reason)
            refused = self._refused_objects(
                build,
                rollout.refused_by,
                resources=resources,
                nodes=nodes,
                observations=observations,
                memory=memory,
            )
            if not refused:
                events += rollout.events
                break
            # The tenants' objects are at fault, not the pair: their own status and events say so.
            events += [event for event in rollout.events if event.reason != ConfigRejectedError.reason]
            generations = {item.key: item.generation for item in build.attached}
            for refused_key, message in refused.items():
                memory.refusals[refused_key] = Refusal(generations[refused_key], build.generation, message)
                log.info("pass pair=%s left out %s: %s", key, refused_key, message)
            if attempt == ISOLATION_ROUNDS:
                break  # the next pass goes on from here, without these objects: a new config, no backoff
            build = rebuild(resources, memory.parsed, memory.left_out())
        return build, rollout, events

    def _refused_objects(
        self,
        build: PairBuild,
        refusal: ConfigRejectedError | None,
        *,
        resources: PairResources,
        nodes: Mapping[str, Node],
        observations: Mapping[str, NodeObservation],
        memory: PairMemory,
    ) -> dict[ObjectKey, str]:
        """The attached objects the refusing node's validators blame: by the files their output names, or
        else by bisecting what changed on that node; empty when the pair's own settings are at fault."""
        if refusal is None or refusal.node not in observations or node_at_fault(refusal.output):
            return {}
        prefix = f"refused by the validators on {refusal.node}: "
        sources = build.state.sources_by_path()
        blamed = blame(refusal.output, sources)
        if blamed:
            return {object_key: prefix + lines for object_key, lines in blamed.items()}
        node, observation = nodes[refusal.node], observations[refusal.node]
        changed = compare(observation, plans_for(build, {node.name: node})[0]).changed
        suspects = sorted({key for path in changed for key in sources.get(path, ())})

        def refuses(left_out: Collection[ObjectKey]) -> str | None:
            candidate = rebuild(
                resources, memory.parsed, {**memory.left_out(), **dict.fromkeys(left_out, "")}
            )
            plan = plans_for(candidate, {node.name: node})[0]
            try:
                node.stage(plan.files, compare(observation, plan).changed)
                node.validate()
            except ValidationFailedError as error:
                return str(error)
            return None

        try:
            found = bisect(suspects, refusal.output, refuses)
        except NodeError as error:  # cannot tell: the refusal stands for the whole pair, retried on backoff
            log.warning(
                "pair=%s: bisecting the refused config on %s failed: %s",
                build.pair.metadata.name,
                node.name,
                error,
            )
            return {}
        return {found[0]: prefix + told_to(found[0], found[1], sources)} if found else {}

    def _write_pair_status(self, key: ObjectRef, memory: PairMemory, status: PairStatus) -> None:
        now = time.monotonic()
        written_at = memory.status_written_at
        fresh = written_at is not None and now - written_at < self._config.status_refresh_seconds
        if fresh and same_but_probe_times(status, memory.status):
            return
        self._status.patch_status("loadbalancerpairs", key.namespace, key.name, status)
        memory.status, memory.status_written_at = status, now

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
            self._metrics.pair_removed(key)
        return pending


def release_former_nodes(build: PairBuild, nodes: Mapping[str, Node], memory: PairMemory) -> list[Event]:
    """A node that left the spec (removed, or its address changed) is cleaned up like a deleted pair's
    node: its own files back, keepalived stopped (the VIPs go with it). One that cannot be reached yet is
    tried again every pass and keeps the pair Degraded. One whose pinned host key is a current node's is
    that node under another address: it is only forgotten."""
    current = {endpoint(node): (nodes[node.name], node.host_key) for node in build.pair.spec.nodes}
    for former in memory.nodes.keys() - current.keys():
        memory.leaving.setdefault(former, (memory.nodes[former], ""))
    for returned in memory.leaving.keys() & current.keys():
        del memory.leaving[returned]
    memory.nodes = current
    current_host_keys = {host_key for _, host_key in current.values()}
    events = []
    for former, ((node, host_key), before) in sorted(memory.leaving.items()):
        if host_key in current_host_keys:
            pending, done = "", "it is a current node under another address"
        else:
            pending, done = release_node(node)
        if pending:
            memory.leaving[former] = ((node, host_key), pending)
            if pending != before:
                events.append(Event.warning("CleanupPending", f"{former} left the spec: {pending}"))
            continue
        del memory.leaving[former]
        events.append(Event.normal("NodeReleased", f"{former} left the spec: {done}"))
    return events


def endpoint(node: PairNode) -> str:
    return f"{node.name} {node.address}:{node.ssh_port}"


def rebuild(resources: PairResources, cache: ParseCache, left_out: Mapping[ObjectKey, str]) -> PairBuild:
    """The pass's build again, leaving out other attached objects."""
    build = build_pair(resources, cache, left_out)
    if isinstance(build, PairRejected):  # only attached objects differ from the pass's own, accepted build
        raise TypeError(f"the pair's rebuild was rejected: {build.message}")
    return build


def plans_for(build: PairBuild, nodes: Mapping[str, Node]) -> list[NodePlan]:
    """What each of `nodes` should run for `build`, in the pair's node order."""
    return [
        NodePlan(nodes[name], tuple(r.files.values()), r.config_hash, r.nginx_hash)
        for name, r in render_pair(build.state).items()
        if name in nodes
    ]


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


def is_ready(status: PairStatus | None) -> bool:
    """The pair's Ready condition is True in `status` (as last written)."""
    ready = find_condition(status.conditions, "Ready") if status else None
    return ready is not None and ready.status == "True"


def _status_in(pair_body: Mapping[str, Any]) -> PairStatus | None:
    try:
        return PairStatus.model_validate(pair_body.get("status") or {})
    except ValueError:
        return None  # written by something else: start afresh
