"""Roll a rendered config out to the pair: backup node first, VIP holder last, one node at a time.

Per node: compare hashes (no change: no write, no reload) -> stage what differs -> on the node, in one
round trip: validate (nginx -t, keepalived -t on the staged tree) -> swap -> reload what changed (never
restart) -> wait until nginx serves the new config -> record it as live. A failure before the swap
changes nothing; a failure from the swap on restores the last-known-good files on that node (the node
does it, in the same round trip). Either way the rollout stops there, so the other node keeps serving
the old config, and a config a node refused is not pushed again before its backoff has passed (or the
config changes). A node whose files are right but whose services were never verified on them (the
operator stopped between swap and reload) is reloaded and verified again.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

from lbpair.config import OperatorConfig
from lbpair.events import Event
from lbpair.health import NodeReport, RolloutProblem
from lbpair.model.files import ManagedFile
from lbpair.nodes.client import NodeError, NodeUnreachableError
from lbpair.nodes.layout import NodeLayout
from lbpair.nodes.node import Node
from lbpair.nodes.observe import NodeObservation
from lbpair.nodes.operations import (
    Activation,
    NodeRestoreFailedError,
    NodeRolledBackError,
    ValidationFailedError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodePlan:
    """What one node should run: its files, their hash, and the hash its nginx serves once they are live."""

    node: Node
    files: tuple[ManagedFile, ...]
    config_hash: str
    nginx_hash: str

    @property
    def name(self) -> str:
        return self.node.name


@dataclass(frozen=True)
class Difference:
    changed: frozenset[str]  # paths whose live content differs from the desired (added, changed or stale)
    drifted: frozenset[str]  # of those, paths edited on the node since the operator wrote them
    unverified: bool = False  # the files are right, but the services were not verified to run them

    @property
    def any(self) -> bool:
        return bool(self.changed) or self.unverified


def compare(observation: NodeObservation, plan: NodePlan) -> Difference:
    desired = {managed.path: managed.sha256 for managed in plan.files}
    live = {path: state.actual_sha256 for path, state in observation.managed_files.items()}
    changed = {path for path in desired.keys() | live.keys() if desired.get(path) != live.get(path)}
    drifted = {path for path, state in observation.managed_files.items() if state.drifted}
    unverified = not changed and observation.live_hash != plan.config_hash
    return Difference(frozenset(changed), frozenset(drifted & changed), unverified)


def rollout_order(
    plans: Sequence[NodePlan], observations: Mapping[str, NodeObservation], vips: Sequence[str]
) -> list[NodePlan]:
    """Nodes holding fewer VIPs first, so the node carrying traffic changes last."""
    addresses = [ipaddress.IPv4Address(vip) for vip in vips]

    def vips_held(plan: NodePlan) -> int:
        observation = observations.get(plan.name)
        return 0 if observation is None else sum(observation.holds(address) for address in addresses)

    return sorted(plans, key=lambda plan: (vips_held(plan), plan.name))


class RolloutError(NodeError):
    """A node did not take the new config; `reason` is the event reason users see."""

    reason: ClassVar[str] = "Rejected"


class ConfigRejectedError(RolloutError):
    """nginx -t or keepalived -t refused the staged config; nothing changed on the node."""

    def __init__(self, node: str, output: str) -> None:
        super().__init__(f"{node}: config rejected by the node: {output}")
        self.node, self.output = node, output


class RolloutFailedError(RolloutError):
    """The rollout failed before the swap for a reason other than the node refusing the config (or the
    node was cut off by its deadline): nothing changed on the node, or the next probe says what did."""

    def __init__(self, node: str, error: NodeError) -> None:
        super().__init__(f"{node}: rollout failed: {error}")


class NodeLostError(RolloutError):
    """The node stopped answering during its rollout; the next probe finds what it left (the journal leaves
    the old file set or the new one: new files never verified live are verified then, or restored)."""

    reason: ClassVar[str] = "NodeUnreachable"

    def __init__(self, node: str, error: NodeError) -> None:
        super().__init__(f"{node}: lost during rollout: {error}")


class RolledBackError(RolloutError):
    """The new config went live on a node but failed there; the last-known-good files were restored (the
    message says why it failed, and that they were)."""

    reason: ClassVar[str] = "RolledBack"

    def __init__(self, node: str, error: NodeRolledBackError) -> None:
        super().__init__(f"{node}: {error}")


class RestoreFailedError(RolloutError):
    """The new config failed on a node and putting the last-known-good files back failed too."""

    reason: ClassVar[str] = "RestoreFailed"

    def __init__(self, node: str, error: NodeRestoreFailedError) -> None:
        super().__init__(f"{node}: {error}")


def roll_out_node(
    plan: NodePlan, difference: Difference, layout: NodeLayout, verify_timeout: float
) -> NodeObservation:
    """Apply `plan` on its node and return the node as verified (so the pass need not probe it again);
    raises a RolloutError saying how far it got. Two round trips at most: staging what differs, then the
    node's `roll-out` (validate, swap, reload, verify, mark live, probe, restoring on failure); a node whose
    files are right but were never verified live gets only the second, without the swap."""
    node = plan.node
    activation = Activation(
        plan.config_hash,
        plan.nginx_hash,
        tuple(reloaded_services(difference, layout)),
        verify_timeout,
        swap=bool(difference.changed),
    )
    started = time.monotonic()
    try:
        if difference.changed:
            node.stage(plan.files, difference.changed)  # ships only what differs
        staged = time.monotonic()
        observation, timings = node.roll_out(activation)
    except ValidationFailedError as error:
        raise ConfigRejectedError(plan.name, str(error)) from error
    except NodeRolledBackError as error:
        raise RolledBackError(plan.name, error) from error
    except NodeRestoreFailedError as error:
        raise RestoreFailedError(plan.name, error) from error
    except NodeUnreachableError as error:
        raise NodeLostError(plan.name, error) from error
    except NodeError as error:
        raise RolloutFailedError(plan.name, error) from error
    log.info(
        "node rollout steps node=%s stage_ms=%d round_trip_ms=%d on_node_ms=%s",
        plan.name,
        (staged - started) * 1000,
        (time.monotonic() - staged) * 1000,
        ",".join(f"{step}:{ms}" for step, ms in timings.items()),
    )
    return observation


@dataclass(frozen=True)
class FailedRollout:
    """A config a node refused: not pushed again until the config changes or its backoff has passed."""

    config_hash: str
    problem: RolloutProblem
    at: float  # the rollout clock's reading (time.monotonic() in the operator)
    attempts: int

    def due(self, config: OperatorConfig, now: float) -> bool:
        backoff = min(config.retry_seconds * (1 << (self.attempts - 1)), config.max_retry_seconds)
        return now - self.at >= backoff


@dataclass
class PairRollout:
    """What a rollout over the pair did: per-node reports, the first problem, and events to post."""

    reports: list[NodeReport]
    problem: RolloutProblem | None = None
    events: list[Event] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)  # "<service>@<node>", for the pass's log line
    files_changed: int = 0
    refused_by: ConfigRejectedError | None = None
    """When the problem is a node's validators refusing the config: which node, and their output."""
    node_rollouts: list[tuple[str, str]] = field(default_factory=list)
    """Each node a rollout was tried on: (node, "Applied" or the failure's reason), for the metrics."""


def roll_out_pair(
    plans: Sequence[NodePlan],
    observations: dict[str, NodeObservation],
    errors: Mapping[str, str],
    *,
    pair: str,
    vips: Sequence[str],
    layout: NodeLayout,
    failures: dict[str, FailedRollout],
    config: OperatorConfig,
    clock: Callable[[], float],
) -> PairRollout:
    """Roll out every node whose files or live state differ, in order, stopping at the first failure.

    `observations` holds the nodes that answered the probe (updated in place after a rollout);
    `failures` is the pair's memory of refused configs per node (updated in place).
    """
    node_errors = dict(errors)
    programmed: set[str] = set()
    outcome = PairRollout(reports=[])
    reachable = [plan for plan in plans if plan.name in observations]
    for plan in rollout_order(reachable, observations, vips):
        difference = compare(observations[plan.name], plan)
        if not difference.any:
            if not observations[plan.name].owner:
                try:  # its files were live before nodes had owners (an upgrade): it is this pair's
                    plan.node.claim()
                except NodeError as error:
                    node_errors[plan.name] = str(error)
                    continue
            programmed.add(plan.name)
            continue
        if outcome.problem:
            continue  # an earlier node failed: leave this one as it is
        refused = failures.get(plan.name)
        if refused and refused.config_hash == plan.config_hash and not refused.due(config, clock()):
            outcome.problem = refused.problem
            continue
        started = time.monotonic()
        try:
            observations[plan.name] = roll_out_node(plan, difference, layout, config.verify_timeout_seconds)
        except RolloutError as error:
            # Backed off like any failure, a lost node included: a node that times out must not pile up
            # abandoned validations on every pass.
            _log_node(pair, plan.name, error.reason, difference, started)
            outcome.node_rollouts.append((plan.name, error.reason))
            outcome.problem = RolloutProblem(error.reason, str(error))
            outcome.refused_by = error if isinstance(error, ConfigRejectedError) else None
            previous = failures.get(plan.name)
            same = previous is not None and previous.config_hash == plan.config_hash
            attempts = previous.attempts + 1 if previous and same else 1
            failures[plan.name] = FailedRollout(plan.config_hash, outcome.problem, clock(), attempts)
            if attempts == 1:  # the same config failing again is not news
                outcome.events.append(Event.warning(error.reason, str(error)))
            try:  # what the failure left on the node
                observations[plan.name] = plan.node.observe()
            except NodeError as observe_error:
                node_errors[plan.name] = str(observe_error)
                observations.pop(plan.name, None)
        else:
            _log_node(pair, plan.name, "applied", difference, started)
            outcome.node_rollouts.append((plan.name, "Applied"))
            failures.pop(plan.name, None)
            programmed.add(plan.name)
            outcome.files_changed += len(difference.changed)
            outcome.reloads += [f"{service}@{plan.name}" for service in reloaded_services(difference, layout)]
            outcome.events += _applied_events(plan, difference)
    outcome.reports = [
        NodeReport(
            name=plan.name,
            observation=observations.get(plan.name),
            error=node_errors.get(plan.name, ""),
            applied_hash=plan.config_hash if plan.name in programmed else "",
            programmed=plan.name in programmed,
        )
        for plan in plans
    ]
    return outcome


def _log_node(pair: str, node: str, outcome: str, difference: Difference, started: float) -> None:
    log.info(
        "node rollout pair=%s node=%s outcome=%s files_changed=%d drifted=%d seconds=%.3f",
        pair,
        node,
        outcome,
        len(difference.changed),
        len(difference.drifted),
        time.monotonic() - started,
    )


def reloaded_services(difference: Difference, layout: NodeLayout) -> list[str]:
    """The services whose files changed; both when only the live state is unverified."""
    return layout.services_for(difference.changed) if difference.changed else list(layout.units)


def _applied_events(plan: NodePlan, difference: Difference) -> list[Event]:
    events = []
    if difference.drifted:
        drifted = ", ".join(sorted(difference.drifted))
        events.append(Event.warning("DriftReverted", f"{plan.name}: reverted hand edits of {drifted}"))
    events.append(Event.normal("Applied", f"{plan.name}: applied config {plan.config_hash[:12]}"))
    return events


def observe_all(nodes: Sequence[Node]) -> tuple[dict[str, NodeObservation], dict[str, str]]:
    """Probe the nodes at once; an unreachable node is reported, not fatal."""
    observations: dict[str, NodeObservation] = {}
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(len(nodes), 1)) as pool:
        futures = {node.name: pool.submit(node.observe) for node in nodes}
    for name, future in futures.items():
        try:
            observations[name] = future.result()
        except NodeError as error:
            errors[name] = str(error)
    return observations, errors
