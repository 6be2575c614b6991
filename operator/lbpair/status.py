"""Pure: the status users read (`kubectl get lbpairs`, conditions), from one pass's build and health.

Status stays typed (lbpair.model.status) from here to the API; conditions keep their
lastTransitionTime while their status holds, and carry the generation they were computed for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast, get_args

from lbpair.build import AttachedObject, PairBuild, PairRejected
from lbpair.build.certificates import ExpiryCheck
from lbpair.build.services import backends_available
from lbpair.health import NodeReport, PairHealth
from lbpair.model.status import (
    MAX_BACKEND_STATUSES,
    MAX_VRRP_INSTANCES,
    AttachedStatus,
    Condition,
    NginxWatcherStatus,
    NodeStatus,
    NodeVrrpState,
    PairStatus,
    VirtualHostStatus,
    VrrpInstanceStatus,
    VrrpState,
    find_condition,
)
from lbpair.nodes.backend_probe import (
    BackendChange,
    BackendTarget,
    NodeProbes,
    backend_changes,
    backend_statuses,
)
from lbpair.nodes.observe import NginxWatchState, VrrpInstanceState
from lbpair.render.model import Upstream


def with_transitions(
    conditions: Iterable[Condition], previous: Sequence[Condition], generation: int
) -> list[Condition]:
    return [
        condition.model_copy(update={"observed_generation": generation}).transition_from(
            find_condition(list(previous), condition.type)
        )
        for condition in conditions
    ]


def pair_status(
    build: PairBuild,
    health: PairHealth,
    applied_hashes: Mapping[str, str],
    previous: PairStatus | None,
    at: str,
) -> PairStatus:
    # Instance name -> the VIPs it carries, per node: what keepalived reports names instances only.
    carried = {
        node.name: {
            instance.name: [a.address for a in instance.virtual_addresses]
            for instance in node.keepalived.instances
        }
        for node in build.state.nodes
    }
    return PairStatus(
        observed_generation=build.generation,
        vips=",".join(build.vips),
        vip_holders=health.holder_summary,
        mode=build.pair.spec.mode,
        healthy_nodes=health.healthy_nodes,
        nodes=[
            _node_status(
                report, health, carried.get(report.name, {}), applied_hashes.get(report.name, ""), at
            )
            for report in health.nodes
        ],
        conditions=with_transitions(
            health.conditions, previous.conditions if previous else [], build.generation
        ),
    )


def _node_status(
    report: NodeReport,
    health: PairHealth,
    carried: Mapping[str, list[str]],
    applied_hash: str,
    at: str,
) -> NodeStatus:
    observation = report.observation
    # A node reports only the instances of the keepalived.conf the operator wrote (two at most); the cap
    # keeps a status write from failing on anything else keepalived might report.
    observed = observation.vrrp[:MAX_VRRP_INSTANCES] if observation else ()
    instances = [_instance_status(instance, carried.get(instance.name, [])) for instance in observed]
    return NodeStatus(
        name=report.name,
        reachable=report.reachable,
        vrrp_state=node_vrrp_state(instances),
        vrrp_instances=instances,
        vips_held=[vip for vip, holders in health.holders.items() if report.name in holders],
        nginx_running=bool(observation and observation.running("nginx")),
        keepalived_running=bool(observation and observation.running("keepalived")),
        nginx_watcher=_watcher_status(observation.nginx_watch) if observation else None,
        applied_config_hash=applied_hash,
        last_probe_time=at,
        message=report.error,
    )


def _watcher_status(watch: NginxWatchState | None) -> NginxWatcherStatus | None:
    if watch is None:
        return None
    return NginxWatcherStatus(running=watch.running, hash=watch.hash, nginx_serving=watch.nginx_serving)


def _instance_status(instance: VrrpInstanceState, vips: list[str]) -> VrrpInstanceStatus:
    return VrrpInstanceStatus(
        name=instance.name,
        state=vrrp_state(instance.state),
        effective_priority=instance.effective_priority,
        vips=vips,
    )


def vrrp_state(keepalived_state: str) -> VrrpState:
    """keepalived's MASTER/BACKUP/FAULT as the status field spells them; anything else is Unknown."""
    name = keepalived_state.title()
    return cast("VrrpState", name) if name in get_args(VrrpState) else "Unknown"


def node_vrrp_state(instances: Sequence[VrrpInstanceStatus]) -> NodeVrrpState:
    """The state every instance shares; Mixed when they differ (a healthy ActiveActive node: Master of one,
    Backup of the other); Unknown with none."""
    states = {instance.state for instance in instances}
    if not states:
        return "Unknown"
    return states.pop() if len(states) == 1 else "Mixed"


def with_condition(status: PairStatus, condition: Condition, previous: PairStatus | None) -> PairStatus:
    """`status` with `condition` in place of any of its type, keeping lastTransitionTime from `previous`."""
    generation = status.observed_generation or 0
    (added,) = with_transitions([condition], previous.conditions if previous else [], generation)
    kept = [c for c in status.conditions if c.type != condition.type]
    return status.model_copy(update={"conditions": [*kept, added]})


def rejected_pair_status(rejection: PairRejected, previous: PairStatus | None, at: str) -> PairStatus:
    """Nothing can be probed without a usable spec or key: Ready and Programmed say why, the rest of the
    status stays as last seen."""
    rejected = [
        Condition.of(condition_type, False, rejection.reason, rejection.message, at=at)
        for condition_type in ("Ready", "Programmed")
    ]
    kept = [c for c in previous.conditions if c.type not in ("Ready", "Programmed")] if previous else []
    return _with_conditions(previous, [*rejected, *kept], rejection.generation)


def failed_pass_status(previous: PairStatus | None, generation: int, error: str, at: str) -> PairStatus:
    """A pass that failed unexpectedly: every condition Unknown with the error, the rest as last seen."""
    types = [c.type for c in previous.conditions] if previous else []
    unknown = [
        Condition.unknown(condition_type, "PassFailed", error, at=at)
        for condition_type in types or ["Ready", "Programmed", "Degraded", "SplitBrain"]
    ]
    return _with_conditions(previous, unknown, generation)


def _with_conditions(previous: PairStatus | None, conditions: list[Condition], generation: int) -> PairStatus:
    """The last status seen (nothing could be probed) with new conditions for `generation`."""
    base = previous or PairStatus()
    return base.model_copy(
        update={
            "observed_generation": generation,
            "conditions": with_transitions(conditions, base.conditions, generation),
            "kopf": None,
        }
    )


def same_but_probe_times(status: PairStatus, other: PairStatus | None) -> bool:
    """Only lastProbeTime differs: not worth a write on its own (etcd churn, GitOps noise)."""
    if other is None:
        return False

    def without_probe_times(value: PairStatus) -> PairStatus:
        nodes = [node.model_copy(update={"last_probe_time": None}) for node in value.nodes]
        return value.model_copy(update={"nodes": nodes, "kopf": None})

    return without_probe_times(status) == without_probe_times(other)


def attached_status_in(body: Mapping[str, Any] | None) -> AttachedStatus | None:
    """The status an attached object already carries in the API (an earlier run of the operator wrote it),
    so a restarted operator writes only the statuses that change, not every object's once."""
    status = (body or {}).get("status")
    if not status:
        return None
    model = VirtualHostStatus if (body or {}).get("kind") == "VirtualHost" else AttachedStatus
    try:
        return model.model_validate(status)
    except ValueError:
        return None  # written by something else: written afresh


def attached_status(
    build: PairBuild,
    health: PairHealth,
    item: AttachedObject,
    *,
    included: bool,
    previous: AttachedStatus | None,
    at: str,
    expiry: ExpiryCheck,
) -> AttachedStatus:
    """Accepted (valid, attached, references resolve) and Programmed (live on every node); for an Upstream
    that follows a Service, BackendsAvailable (it has a ready endpoint); for a TLS VirtualHost that builds,
    its certificate with CertificateValid and CertificateExpiring (as of `expiry`)."""
    key_problems, generation = build.problems_of(item.key), item.generation
    programmed_on = sorted(node.name for node in health.nodes if node.programmed)
    live = included and len(programmed_on) == len(health.nodes)
    pair = f"{build.pair.metadata.namespace}/{build.pair.metadata.name}"
    conditions = [  # (type, holds, reason, message)
        ("Accepted", not key_problems, "Invalid" if key_problems else "Accepted", "; ".join(key_problems)),
        (
            "Programmed",
            live,
            "Programmed" if live else ("Invalid" if key_problems else "Pending"),
            f"live on {', '.join(programmed_on)}" if live else "not live on every node yet",
        ),
    ]
    upstream = build.upstreams_by_key.get(item.key)
    if upstream is not None and upstream.service:
        conditions.append(("BackendsAvailable", *backends_available(upstream)))
    programmed_on = programmed_on if included else []
    status_type = VirtualHostStatus if item.key.kind == "VirtualHost" else AttachedStatus
    certificate = build.certificates.get(item.key)
    if (
        certificate is None
        and type(previous) is status_type
        and getattr(previous, "certificate", None) is None
        and _unchanged(previous, generation, pair, programmed_on, conditions)
    ):
        return previous  # what the models below would equal, without building them (every pass, per object)
    built = [Condition.of(*condition, at=at) for condition in conditions]
    if certificate is not None:
        built += expiry.conditions(certificate)
    status = status_type(
        observed_generation=generation,
        pair=pair,
        programmed_on=programmed_on,
        conditions=with_transitions(built, previous.conditions if previous else [], generation),
    )
    if certificate is None:
        return status
    return status.model_copy(update={"certificate": certificate.status()})


def _unchanged(
    previous: AttachedStatus,
    generation: int,
    pair: str,
    programmed_on: list[str],
    conditions: list[tuple[str, bool, str, str]],
) -> bool:
    """Whether `previous` already says all of this: a condition whose status stays keeps its
    lastTransitionTime, so attached_status would build an equal status."""
    return (
        previous.kopf is None
        and (previous.observed_generation, previous.pair, previous.programmed_on)
        == (generation, pair, programmed_on)
        and [(c.type, c.status, c.reason, c.message, c.observed_generation) for c in previous.conditions]
        == [(kind, str(holds), reason, message, generation) for kind, holds, reason, message in conditions]
    )


def with_backends(
    status: AttachedStatus,
    upstream: Upstream | None,
    probes: NodeProbes,
    *,
    nodes: Sequence[str],
    previous: AttachedStatus | None,
    at: str,
) -> tuple[AttachedStatus, list[BackendChange]]:
    """An Upstream's status with each server's reachability from each node (status.backends), and what
    changed since `previous`. An Upstream left out keeps no backends."""
    before = (previous.backends if previous else None) or []
    if upstream is None:
        return status.model_copy(update={"backends": None}), []
    path = upstream.health_path or ""
    servers = sorted({BackendTarget(server.address, server.port, path) for server in upstream.servers})
    backends = backend_statuses(servers[:MAX_BACKEND_STATUSES], probes, nodes, before, at)
    return status.model_copy(update={"backends": backends}), backend_changes(before, backends)
