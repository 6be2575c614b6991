"""Orchestration of one pass over a pair: inputs -> desired state -> per-node rollout -> observed status.

Runs in a worker thread (SSH and API calls block). Level-based: every pass compares what the nodes run
with what the resources ask for, so a spec change, a hand edit on a node, a node that comes back and an
operator restart all converge the same way, and a pass with nothing to change writes nothing to a node.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from lbpair.health import Condition, NodeReport, PairHealth, assess_pair
from lbpair.kube import KubeAPI, load_client_config
from lbpair.model import SpecError, parse_pair, parse_upstream, parse_virtual_host
from lbpair.model.desired import (
    BuildResult,
    ObjectKey,
    PairConfigError,
    Problem,
    SecretValues,
    TlsMaterial,
    build_desired_state,
)
from lbpair.model.pair import LoadBalancerPair, PairSpec
from lbpair.model.status import AttachedStatus, NodeStatus, PairStatus
from lbpair.model.status import Condition as ConditionStatus
from lbpair.model.upstream import Upstream
from lbpair.model.virtualhost import VirtualHost
from lbpair.nodes.client import NodeClient, NodeError, NodeUnreachableError
from lbpair.nodes.observe import NodeObservation
from lbpair.nodes.operations import (
    ValidationFailedError,
    apply_reload,
    apply_stop,
    observe_node,
    uninstall_managed,
)
from lbpair.nodes.ssh import NodeConnections, SSHTarget
from lbpair.render import RenderedNode, render_pair
from lbpair.rollout import (
    Difference,
    NodeLayout,
    NodePlan,
    RestoreFailedError,
    RolledBackError,
    compare,
    roll_out_node,
    rollout_order,
)

log = logging.getLogger(__name__)
PairKey = tuple[str, str]
SecretLookup = Callable[[PairKey], Mapping[str, str] | None]
LabelLookup = Callable[[str], Mapping[str, str] | None]
# lastProbeTime alone does not justify a status write more often than this (etcd churn, GitOps noise).
PROBE_TIME_REFRESH_SECONDS = 30.0
# A config a node refused is retried after this long, then twice as long each time, up to the maximum.
RETRY_SECONDS = 60.0
MAX_RETRY_SECONDS = 900.0
# The status schema's limits (lbpair.model.status); a validator's output can be longer.
CONDITION_MESSAGE_LIMIT = 32768
NODE_MESSAGE_LIMIT = 1024
VrrpStateName = Literal["Master", "Backup", "Fault", "Unknown"]
VRRP_STATE_NAMES: dict[str, VrrpStateName] = {"MASTER": "Master", "BACKUP": "Backup", "FAULT": "Fault"}


def pair_key_of_attached(namespace: str, spec: Mapping[str, Any]) -> PairKey:
    """The pair an Upstream or VirtualHost asks for (its own namespace unless pairRef says otherwise)."""
    reference = spec.get("pairRef") or {}
    return (str(reference.get("namespace") or namespace), str(reference.get("name") or ""))


@dataclass(frozen=True)
class OperatorConfig:
    probe_interval_seconds: float = 2.0
    coalesce_seconds: float = 0.3

    @classmethod
    def from_environment(cls) -> OperatorConfig:
        return cls(
            probe_interval_seconds=float(
                os.environ.get("LBPAIR_PROBE_INTERVAL_SECONDS", cls.probe_interval_seconds)
            ),
            coalesce_seconds=float(os.environ.get("LBPAIR_COALESCE_SECONDS", cls.coalesce_seconds)),
        )


@dataclass(frozen=True)
class Inputs:
    """Everything one pass reads: the pair, the objects attached to it, and lookups into the indexes."""

    pair: Mapping[str, Any]
    upstreams: list[Mapping[str, Any]]
    virtualhosts: list[Mapping[str, Any]]
    secret_data: SecretLookup
    namespace_labels: LabelLookup


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class PassOutcome:
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class FailedRollout:
    """A config a node refused: not pushed again until the inputs change or a backoff has passed."""

    config_hash: str
    message: str
    at: float  # time.monotonic()
    attempts: int

    def due(self) -> bool:
        backoff = min(RETRY_SECONDS * (1 << (self.attempts - 1)), MAX_RETRY_SECONDS)
        return time.monotonic() - self.at >= backoff


@dataclass
class PairMemory:
    """What the previous pass saw, so events fire on transitions only."""

    holders: dict[str, list[str]] = field(default_factory=dict)
    split_brain: bool = False
    unreachable: set[str] = field(default_factory=set)
    problem: str = ""
    applied_hashes: dict[str, str] = field(default_factory=dict)
    last_status: dict[str, Any] = field(default_factory=dict)
    last_status_write: datetime.datetime | None = None
    attached_status: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    # Passes and the deletion of a pair never overlap: a pass in flight must not re-push what the
    # deletion just removed. Once deleting, no pass touches the nodes again.
    lock: threading.Lock = field(default_factory=threading.Lock)
    deleting: bool = False
    failed_rollouts: dict[str, FailedRollout] = field(default_factory=dict)
    secrets: set[PairKey] = field(default_factory=set)


class Reconciler:
    """Long-lived state shared by all passes: SSH connections, the API client, per-pair memory."""

    def __init__(self, kube: KubeAPI, connections: NodeConnections) -> None:
        self._kube = kube
        self._connections = connections
        self._memory: dict[PairKey, PairMemory] = {}
        self._lock = threading.Lock()

    @classmethod
    def create(cls) -> Reconciler:
        load_client_config()
        return cls(KubeAPI(), NodeConnections())

    def close(self) -> None:
        self._connections.close_all()

    def pairs_using_secret(self, namespace: str, name: str) -> list[PairKey]:
        with self._lock:
            return [key for key, memory in self._memory.items() if (namespace, name) in memory.secrets]

    def _memory_of(self, key: PairKey) -> PairMemory:
        with self._lock:
            return self._memory.setdefault(key, PairMemory())

    # -- one pass --

    def run_pass(self, inputs: Inputs) -> PassOutcome:
        metadata = inputs.pair.get("metadata") or {}
        key: PairKey = (str(metadata.get("namespace")), str(metadata.get("name")))
        memory = self._memory_of(key)
        with memory.lock:
            if memory.deleting or metadata.get("deletionTimestamp"):
                return PassOutcome()
            if not memory.last_status:
                # After a restart, conditions keep their lastTransitionTime from what the API holds.
                memory.last_status = dict(inputs.pair.get("status") or {})
            try:
                return self._run_pass(key, int(metadata.get("generation") or 0), inputs, memory)
            except Exception:
                # The loop must go on probing whatever went wrong in one pass; the next pass starts afresh.
                log.exception("pass over LoadBalancerPair %s/%s failed", *key)
                return PassOutcome([Event("Warning", "PassFailed", "internal error; see the operator log")])

    def _run_pass(self, key: PairKey, generation: int, inputs: Inputs, memory: PairMemory) -> PassOutcome:
        outcome = PassOutcome()
        try:
            pair = parse_pair(inputs.pair)
            clients = self._clients(key[0], pair.spec, inputs.secret_data)
            upstreams, virtual_hosts, invalid = parse_attached(inputs)
            secrets = resolve_secrets(pair, virtual_hosts, inputs.secret_data)
            memory.secrets = secrets_used(pair, virtual_hosts)
            namespaces = {u.metadata.namespace for u in upstreams} | {
                v.metadata.namespace for v in virtual_hosts
            }
            labels = {namespace: inputs.namespace_labels(namespace) or {} for namespace in namespaces}
            build = build_desired_state(pair, upstreams, virtual_hosts, secrets, labels)
        except (SpecError, LookupError) as error:
            # PairConfigError is a SpecError too: the pair itself cannot be configured.
            self._report_rejected(
                key=key,
                generation=generation,
                memory=memory,
                outcome=outcome,
                reason=_rejection_reason(error),
                message=str(error),
            )
            return outcome

        spec = pair.spec
        rendered = render_pair(build.state)
        layout = layout_of(spec)
        observations, errors = observe_all(clients, layout)
        reports, rollout_problem = self._converge(
            spec=spec,
            clients=clients,
            rendered=rendered,
            layout=layout,
            observations=observations,
            errors=errors,
            outcome=outcome,
            memory=memory,
        )
        health = assess_pair(vip_addresses(spec), reports, rollout_problem)
        self._note_transitions(health, memory, outcome)
        self._write_pair_status(key, generation, spec, health, memory)
        self._write_attached_statuses(
            key=key,
            inputs=inputs,
            build=build,
            problems=[*invalid, *build.problems],
            health=health,
            memory=memory,
            outcome=outcome,
        )
        return outcome

    def _clients(self, namespace: str, spec: PairSpec, secret_data: SecretLookup) -> dict[str, NodeClient]:
        reference = spec.ssh.private_key_secret_ref
        private_key = secret_value(secret_data, namespace, reference.name, reference.key)
        if private_key is None:
            raise LookupError(f"Secret {namespace}/{reference.name} has no usable key {reference.key!r}")
        return {
            node.name: self._connections.client(
                SSHTarget(
                    name=node.name,
                    address=node.address,
                    port=node.ssh_port,
                    user=spec.ssh.user,
                    host_key=node.host_key,
                    private_key_pem=private_key,
                    sudo=spec.ssh.sudo,
                )
            )
            for node in spec.nodes
        }

    def _converge(
        self,
        *,
        spec: PairSpec,
        clients: Mapping[str, NodeClient],
        rendered: Mapping[str, RenderedNode],
        layout: NodeLayout,
        observations: dict[str, NodeObservation],
        errors: Mapping[str, str],
        outcome: PassOutcome,
        memory: PairMemory,
    ) -> tuple[list[NodeReport], str]:
        plans = [
            NodePlan(
                name,
                clients[name],
                tuple(rendered[name].files.values()),
                rendered[name].config_hash,
                rendered[name].nginx_hash,
            )
            for name in clients
            if name in observations
        ]
        node_errors = dict(errors)
        programmed: set[str] = set()
        rollout_problem = ""
        for plan in rollout_order(plans, observations, vip_addresses(spec)):
            difference = compare(observations[plan.name], plan)
            if not difference.any:
                programmed.add(plan.name)
                continue
            if rollout_problem:
                continue  # an earlier node failed: leave this one as it is
            refused = memory.failed_rollouts.get(plan.name)
            if refused and refused.config_hash == plan.config_hash and not refused.due():
                rollout_problem = refused.message
                continue
            rollout_problem = self._roll_out(plan, difference, layout, memory, outcome)
            if not rollout_problem:
                programmed.add(plan.name)
            try:
                observations[plan.name] = observe_node(plan.client, layout.units)
            except NodeError as error:
                node_errors[plan.name] = str(error)
                observations.pop(plan.name, None)
        reports = [
            NodeReport(
                name=name,
                observation=observations.get(name),
                error=node_errors.get(name, ""),
                applied_hash=rendered[name].config_hash if name in programmed else "",
                programmed=name in programmed,
            )
            for name in clients
        ]
        return reports, rollout_problem

    def _roll_out(
        self,
        plan: NodePlan,
        difference: Difference,
        layout: NodeLayout,
        memory: PairMemory,
        outcome: PassOutcome,
    ) -> str:
        """Roll out one node; returns what went wrong ('' if nothing) and records events."""
        try:
            roll_out_node(plan, difference, layout)
        except NodeUnreachableError as error:
            return f"{plan.name}: lost during rollout: {error}"
        except NodeError as error:
            reason, prefix = {
                ValidationFailedError: ("Rejected", "config rejected by the node: "),
                RolledBackError: ("RolledBack", ""),
                RestoreFailedError: ("RestoreFailed", ""),
            }.get(type(error), ("Rejected", "rollout failed: "))
            message = _truncate(f"{plan.name}: {prefix}{error}")
            previous = memory.failed_rollouts.get(plan.name)
            attempts = previous.attempts + 1 if previous and previous.config_hash == plan.config_hash else 1
            memory.failed_rollouts[plan.name] = FailedRollout(
                plan.config_hash, message, time.monotonic(), attempts
            )
            if attempts == 1:  # the same config failing again is not news
                outcome.events.append(Event("Warning", reason, message))
            return message
        memory.failed_rollouts.pop(plan.name, None)
        if difference.drifted:
            drifted = ", ".join(sorted(difference.drifted))
            outcome.events.append(
                Event("Warning", "DriftReverted", f"{plan.name}: reverted hand edits of {drifted}")
            )
        outcome.events.append(
            Event("Normal", "Applied", f"{plan.name}: applied config {plan.config_hash[:12]}")
        )
        return ""

    def _note_transitions(self, health: PairHealth, memory: PairMemory, outcome: PassOutcome) -> None:
        for vip, holders in health.holders.items():
            before = memory.holders.get(vip)
            if before and len(before) == 1 and len(holders) == 1 and before != holders:
                outcome.events.append(
                    Event(
                        "Warning", "FailoverDetected", f"{vip} moved from {'+'.join(before)} to {holders[0]}"
                    )
                )
        split = any(len(holders) > 1 for holders in health.holders.values())
        if split and not memory.split_brain:
            detail = next(c.message for c in health.conditions if c.type == "SplitBrain")
            outcome.events.append(Event("Warning", "SplitBrain", detail))
        unreachable = {node.name for node in health.nodes if not node.reachable}
        for node in health.nodes:
            if node.name in unreachable - memory.unreachable:
                outcome.events.append(Event("Warning", "NodeUnreachable", f"{node.name}: {node.error}"))
            if node.name in memory.unreachable - unreachable:
                outcome.events.append(Event("Normal", "NodeRecovered", f"{node.name} is reachable again"))
        memory.holders = {vip: holders for vip, holders in health.holders.items() if holders}
        memory.split_brain, memory.unreachable = split, unreachable

    # -- status --

    def _report_rejected(
        self,
        *,
        key: PairKey,
        generation: int,
        memory: PairMemory,
        outcome: PassOutcome,
        reason: str,
        message: str,
    ) -> None:
        if memory.problem != message:
            outcome.events.append(Event("Warning", "Rejected", message))
        memory.problem = message
        # Nothing can be probed without a usable spec or key: the rest of the status stays as last seen.
        last_seen = [
            Condition(c["type"], c["status"] == "True", c["reason"], c.get("message", ""))
            for c in memory.last_status.get("conditions", [])
            if c["type"] not in ("Ready", "Programmed")
        ]
        conditions = [
            Condition("Ready", False, reason, message),
            Condition("Programmed", False, reason, message),
        ]
        fields = {
            k: v for k, v in memory.last_status.items() if k not in ("conditions", "observedGeneration")
        }
        self._patch_pair_status(key, generation, memory, {**fields, "conditions": conditions + last_seen})

    def _write_pair_status(
        self, key: PairKey, generation: int, spec: PairSpec, health: PairHealth, memory: PairMemory
    ) -> None:
        memory.problem = ""
        now = _now()
        nodes = []
        for report in health.nodes:
            observation = report.observation
            if report.applied_hash:
                memory.applied_hashes[report.name] = report.applied_hash
            nodes.append(
                NodeStatus(
                    name=report.name,
                    reachable=report.reachable,
                    vrrp_state=_vrrp_state(observation),
                    vips_held=[vip for vip, holders in health.holders.items() if report.name in holders],
                    nginx_running=bool(observation and observation.running("nginx")),
                    keepalived_running=bool(observation and observation.running("keepalived")),
                    applied_config_hash=memory.applied_hashes.get(report.name, ""),
                    last_probe_time=now,
                    message=_truncate(report.error, NODE_MESSAGE_LIMIT),
                )
            )
        fields = {
            "vips": ",".join(vip_addresses(spec)),
            "vipHolders": health.holder_summary,
            "mode": spec.mode,
            "healthyNodes": health.healthy_nodes,
            "nodes": nodes,
            "conditions": list(health.conditions),
        }
        self._patch_pair_status(key, generation, memory, fields)

    def _patch_pair_status(
        self, key: PairKey, generation: int, memory: PairMemory, fields: Mapping[str, Any]
    ) -> None:
        now = datetime.datetime.now(datetime.UTC)
        previous = {"status": memory.last_status}
        conditions = [
            _condition_status(condition, _previous_condition(previous, condition.type), generation)
            for condition in fields.get("conditions", [])
        ]
        status = PairStatus.model_validate(
            {**fields, "observedGeneration": generation, "conditions": conditions}
        ).model_dump(by_alias=True, exclude_none=True, mode="json")
        unchanged = _without_probe_times(status) == _without_probe_times(memory.last_status)
        fresh = (
            memory.last_status_write
            and (now - memory.last_status_write).total_seconds() < PROBE_TIME_REFRESH_SECONDS
        )
        if unchanged and fresh:
            return
        self._kube.patch_status("loadbalancerpairs", key[0], key[1], status)
        memory.last_status, memory.last_status_write = status, now

    def _write_attached_statuses(
        self,
        *,
        key: PairKey,
        inputs: Inputs,
        build: BuildResult,
        problems: list[Problem],
        health: PairHealth,
        memory: PairMemory,
        outcome: PassOutcome,
    ) -> None:
        """Accepted (valid, attached, references resolve) and Programmed (live on every node) per object."""
        included = set(build.state.included)
        programmed_on = sorted(node.name for node in health.nodes if node.programmed)
        all_programmed = len(programmed_on) == len(health.nodes)
        problems_of: dict[ObjectKey, list[str]] = {}
        for problem in problems:
            problems_of.setdefault(problem.object, []).append(f"{problem.field}: {problem.message}")
        for plural, kind, bodies in (
            ("upstreams", "Upstream", inputs.upstreams),
            ("virtualhosts", "VirtualHost", inputs.virtualhosts),
        ):
            for body in bodies:
                metadata = body.get("metadata") or {}
                object_key = ObjectKey(kind, str(metadata.get("namespace")), str(metadata.get("name")))
                reasons = problems_of.get(object_key, [])
                live = object_key in included and all_programmed
                conditions = [
                    Condition(
                        "Accepted", not reasons, "Invalid" if reasons else "Accepted", "; ".join(reasons)
                    ),
                    Condition(
                        "Programmed",
                        live,
                        "Programmed" if live else ("Invalid" if reasons else "Pending"),
                        f"live on {', '.join(programmed_on)}" if live else "not live on every node yet",
                    ),
                ]
                previous = memory.attached_status.get((plural, object_key.namespace, object_key.name), {})
                if reasons and not previous.get("rejected"):
                    outcome.events.append(Event("Warning", "Rejected", f"{object_key}: {'; '.join(reasons)}"))
                generation = int(metadata.get("generation") or 0)
                status = AttachedStatus(
                    observed_generation=generation,
                    pair=f"{key[0]}/{key[1]}",
                    programmed_on=programmed_on if object_key in included else [],
                    conditions=[
                        _condition_status(
                            condition, _previous_condition(previous, condition.type), generation
                        )
                        for condition in conditions
                    ],
                ).model_dump(by_alias=True, exclude_none=True, mode="json")
                if status != previous.get("status"):
                    self._kube.patch_status(plural, object_key.namespace, object_key.name, status)
                memory.attached_status[(plural, object_key.namespace, object_key.name)] = {
                    "status": status,
                    "rejected": bool(reasons),
                }

    # -- deletion --

    def remove_from_nodes(self, body: Mapping[str, Any], secret_data: SecretLookup) -> str:
        """Apply the deletion policy on both nodes; returns what is still pending ('' when done)."""
        metadata = body.get("metadata") or {}
        key: PairKey = (str(metadata.get("namespace")), str(metadata.get("name")))
        memory = self._memory_of(key)
        with memory.lock:
            memory.deleting = True
            pending = self._remove_from_nodes(body, secret_data)
        if not pending:
            with self._lock:
                self._memory.pop(key, None)
        return pending

    def _remove_from_nodes(self, body: Mapping[str, Any], secret_data: SecretLookup) -> str:
        try:
            pair = parse_pair(body)
        except SpecError:
            return ""  # never applied anything from an invalid spec
        spec = pair.spec
        if spec.deletion_policy == "Retain":
            return ""
        try:
            clients = self._clients(pair.metadata.namespace, spec, secret_data)
        except LookupError as error:
            return f"cannot log in to the nodes to clean up: {error}"
        layout = layout_of(spec)
        pending = []
        for name, client in clients.items():
            try:
                uninstall_managed(client)
                apply_stop(client, [layout.keepalived_service])
                apply_reload(client, [layout.nginx_service])
            except NodeError as error:
                pending.append(f"{name}: {error}")
        return "; ".join(pending)


def vip_addresses(spec: PairSpec) -> list[str]:
    return [vip.address.split("/")[0] for vip in spec.vips]


def parse_attached(inputs: Inputs) -> tuple[list[Upstream], list[VirtualHost], list[Problem]]:
    """Valid Upstreams and VirtualHosts; each invalid one becomes a Problem naming its fields."""
    upstreams: list[Upstream] = []
    virtual_hosts: list[VirtualHost] = []
    invalid: list[Problem] = []
    for kind, bodies in (("Upstream", inputs.upstreams), ("VirtualHost", inputs.virtualhosts)):
        for body in bodies:
            try:
                if kind == "Upstream":
                    upstreams.append(parse_upstream(body))
                else:
                    virtual_hosts.append(parse_virtual_host(body))
            except SpecError as error:
                metadata = body.get("metadata") or {}
                object_key = ObjectKey(kind, str(metadata.get("namespace")), str(metadata.get("name")))
                invalid.extend(Problem(object_key, "spec", problem) for problem in error.problems)
    return upstreams, virtual_hosts, invalid


def secret_value(secret_data: SecretLookup, namespace: str, name: str, key: str) -> str | None:
    """A Secret's value as text; None when the Secret or key is missing or the value is not UTF-8 text."""
    data = secret_data((namespace, name))
    if data is None or key not in data:
        return None
    try:
        return base64.b64decode(data[key], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def resolve_secrets(
    pair: LoadBalancerPair, virtual_hosts: list[VirtualHost], secret_data: SecretLookup
) -> SecretValues:
    """Secret values the build needs; a missing one is left out and the build reports who needs it."""
    authentication = pair.spec.vrrp.authentication
    auth_pass = None
    if authentication is not None:
        reference = authentication.secret_ref
        auth_pass = secret_value(secret_data, pair.metadata.namespace, reference.name, reference.key)
    tls: dict[tuple[str, str], TlsMaterial] = {}
    for virtual_host in virtual_hosts:
        if virtual_host.spec.tls is None:
            continue
        namespace, name = virtual_host.metadata.namespace, virtual_host.spec.tls.secret_name
        certificate = secret_value(secret_data, namespace, name, "tls.crt")
        private_key = secret_value(secret_data, namespace, name, "tls.key")
        if certificate is not None and private_key is not None:
            tls[(namespace, name)] = TlsMaterial(certificate, private_key)
    return SecretValues(vrrp_auth_pass=auth_pass, tls=tls)


def secrets_used(pair: LoadBalancerPair, virtual_hosts: list[VirtualHost]) -> set[PairKey]:
    """Every Secret a pass of this pair reads, so a change to one of them wakes the pair."""
    namespace, spec = pair.metadata.namespace, pair.spec
    used = {(namespace, spec.ssh.private_key_secret_ref.name)}
    if spec.vrrp.authentication is not None:
        used.add((namespace, spec.vrrp.authentication.secret_ref.name))
    used.update(
        (virtual_host.metadata.namespace, virtual_host.spec.tls.secret_name)
        for virtual_host in virtual_hosts
        if virtual_host.spec.tls is not None
    )
    return used


def _rejection_reason(error: Exception) -> str:
    if isinstance(error, PairConfigError | LookupError):
        return "SecretMissing"
    return "InvalidSpec"


def layout_of(spec: PairSpec) -> NodeLayout:
    profile = spec.node_profile
    return NodeLayout(
        nginx_service=profile.nginx_service,
        keepalived_service=profile.keepalived_service,
        nginx_config_path=profile.nginx_config_path,
        keepalived_config_path=profile.keepalived_config_path,
        status_port=profile.nginx_status_port,
        directories=(profile.nginx_cache_dir,),
    )


def observe_all(
    clients: Mapping[str, NodeClient], layout: NodeLayout
) -> tuple[dict[str, NodeObservation], dict[str, str]]:
    """Probe both nodes at once; an unreachable node is reported, not fatal."""
    observations: dict[str, NodeObservation] = {}
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        futures = {name: pool.submit(observe_node, client, layout.units) for name, client in clients.items()}
    for name, future in futures.items():
        try:
            observations[name] = future.result()
        except NodeError as error:
            errors[name] = str(error)
    return observations, errors


def _truncate(message: str, limit: int = CONDITION_MESSAGE_LIMIT) -> str:
    return message if len(message) <= limit else message[: limit - 15] + " ...(truncated)"


def _vrrp_state(observation: NodeObservation | None) -> VrrpStateName:
    if observation is None or not observation.vrrp:
        return "Unknown"
    return VRRP_STATE_NAMES.get(observation.vrrp[0].state, "Unknown")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _previous_condition(previous: Mapping[str, Any], condition_type: str) -> Mapping[str, Any] | None:
    for condition in (previous.get("status") or {}).get("conditions", []):
        if condition.get("type") == condition_type:
            return dict(condition)
    return None


def _condition_status(
    condition: Condition, previous: Mapping[str, Any] | None, generation: int
) -> ConditionStatus:
    """lastTransitionTime moves only when the status does, as Kubernetes conventions ask."""
    status: Literal["True", "False"] = "True" if condition.status else "False"
    if previous is None or previous.get("status") != status:
        transition_time = _now()
    else:
        transition_time = str(previous["lastTransitionTime"])
    return ConditionStatus(
        type=condition.type,
        status=status,
        reason=condition.reason,
        message=_truncate(condition.message),
        last_transition_time=transition_time,
        observed_generation=generation,
    )


def _without_probe_times(status: Mapping[str, Any]) -> dict[str, Any]:
    nodes = [{k: v for k, v in node.items() if k != "lastProbeTime"} for node in status.get("nodes", [])]
    return {**status, "nodes": nodes}
