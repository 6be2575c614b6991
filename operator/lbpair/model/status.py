"""Status written by the operator. The CRDs' status schemas are generated from these models, so whatever
the operator builds with them is exactly what the API server keeps."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BeforeValidator, ConfigDict, Field

from lbpair.model.base import ApiModel, UniqueItems

TRUNCATION_MARK = " ...(truncated)"


MESSAGE_LIMIT = 32768


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def _truncated(limit: int) -> BeforeValidator:
    """Text the operator writes (a validator's output, an SSH error) is cut to the schema's limit rather
    than failing the whole status write."""
    return BeforeValidator(lambda value: truncate(value, limit) if isinstance(value, str) else value)


ShortText = Annotated[str, _truncated(1024), Field(max_length=1024)]
Message = Annotated[str, _truncated(MESSAGE_LIMIT), Field(max_length=MESSAGE_LIMIT)]
Timestamp = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]


def timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC, to the second, as Kubernetes writes times."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusModel(ApiModel):
    """Status is written by the operator, not users, so it is not held to the spec's allow-lists."""

    model_config = ConfigDict(strict=False)
    CLEARED_WHEN_NONE: ClassVar[tuple[str, ...]] = ()
    """Fields a status write sends as null when None, so that a merge patch removes them (every other None
    field is left out of the patch)."""


class Condition(StatusModel):
    """A Kubernetes-style condition."""

    type: Annotated[str, Field(max_length=316)]
    """Ready, Programmed, ..."""
    status: Literal["True", "False", "Unknown"]
    """Condition status."""
    reason: Annotated[str, Field(max_length=1024)]
    """CamelCase reason."""
    message: Message = ""
    """Human-readable detail."""
    last_transition_time: Timestamp
    """When status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation the condition was computed for."""

    @classmethod
    def of(cls, type_: str, holds: bool, reason: str, message: str, *, at: str) -> Condition:
        """A condition as computed at `at` (its transition time until `transition_from` says otherwise)."""
        return cls(
            type=type_,
            status="True" if holds else "False",
            reason=reason,
            message=message,
            last_transition_time=at,
        )

    @classmethod
    def unknown(cls, type_: str, reason: str, message: str, *, at: str) -> Condition:
        """The operator cannot tell (e.g. its pass failed): never leave a stale True standing."""
        return cls(type=type_, status="Unknown", reason=reason, message=message, last_transition_time=at)

    def transition_from(self, previous: Condition | None) -> Self:
        """lastTransitionTime moves only when the status does, as Kubernetes conventions ask."""
        if previous is None or previous.status != self.status:
            return self
        return self.model_copy(update={"last_transition_time": previous.last_transition_time})


Conditions = Annotated[list[Condition], Field(max_length=16), UniqueItems(("type",))]


VrrpState = Literal["Master", "Backup", "Fault", "Unknown"]
NodeVrrpState = Literal["Master", "Backup", "Fault", "Mixed", "Unknown"]
VipList = Annotated[list[Annotated[str, Field(max_length=18)]], Field(max_length=32)]
NodeMaintenance = Literal["None", "Draining", "Drained", "Refused"]
DrillResult = Literal["Succeeded", "Failed", "Refused"]
# Annotation values may be long; the token recorded is cut to this, and compared cut.
DRILL_TOKEN_LIMIT = 253
# The operator renders at most two instances (ActiveActive); room for a few more that a node may report.
MAX_VRRP_INSTANCES = 8


class VrrpInstanceStatus(StatusModel):
    """One VRRP instance as keepalived on the node reports it."""

    name: Annotated[str, _truncated(128), Field(max_length=128)]
    """The instance's name in keepalived.conf (lbpair_1, lbpair_2)."""
    state: VrrpState
    """keepalived's state of this instance on this node."""
    effective_priority: int
    """The priority the node advertises for this instance now (its configured priority changed by the
    health check's weight)."""
    vips: VipList = Field(default_factory=list)
    """The VIPs this instance carries, per the pair's spec (ActiveActive: the VIPs preferring one node)."""


class NginxWatcherStatus(StatusModel):
    """The node-side nginx watcher (healthCheck.method Watch), as the node reports it."""

    running: bool
    """Its process runs (the check script keepalived runs every second starts it when it does not)."""
    hash: Annotated[str, Field(max_length=64)] = ""
    """sha256 of the watcher's program and config that it runs: changes when the operator updates them."""
    nginx_serving: bool = False
    """What it last told keepalived: nginx's master runs and every listener accepts connections."""


class NodeStatus(StatusModel):
    """What the operator last observed on one node."""

    name: Annotated[str, Field(max_length=63)]
    """Node name."""
    reachable: bool = False
    """SSH login worked at the last probe."""
    vrrp_state: NodeVrrpState = "Unknown"
    """The node's VRRP state in one word: the state all of its instances share (with one instance, that
    instance's state); Mixed when they differ, as on a healthy ActiveActive pair where each node is Master
    of one instance and Backup of the other (see vrrpInstances); Unknown when keepalived reports none."""
    vrrp_instances: Annotated[list[VrrpInstanceStatus], Field(max_length=MAX_VRRP_INSTANCES)] = Field(
        default_factory=list
    )
    """Every VRRP instance keepalived reports on the node, by name; empty when its state cannot be read
    (keepalived down, node unreachable)."""
    vips_held: VipList = Field(default_factory=list)
    """VIPs configured on the node's interfaces right now."""
    nginx_running: bool = False
    """nginx service active."""
    keepalived_running: bool = False
    """keepalived service active."""
    nginx_watcher: NginxWatcherStatus | None = None
    """The nginx watcher; absent on a node where none ever ran (healthCheck.method Script or
    TrackProcess, or not started yet)."""
    applied_config_hash: Annotated[str, Field(max_length=64)] = ""
    """Hash of the configuration last applied to this node."""
    last_probe_time: Timestamp | None = None
    """Time of the last probe."""
    message: ShortText = ""
    """Last problem seen on this node."""
    maintenance: NodeMaintenance = "None"
    """spec.nodes[].maintenance as carried out: Draining (the node demotes itself, the peer does not hold
    every VIP yet), Drained (the peer holds every VIP: safe to stop nginx or reboot this node), Refused (the
    drain would leave no node serving; see the Maintenance condition), None (in service)."""


class DrillStatus(StatusModel):
    """The last failover drill (annotation lb.lbpair.dev/drill): the VIP holder drained, the time the VIP
    was on no node measured on the nodes themselves, then failed back."""

    token: Annotated[str, _truncated(DRILL_TOKEN_LIMIT), Field(max_length=DRILL_TOKEN_LIMIT)]
    """The annotation's value this drill ran for; the same value again runs nothing."""
    started_at: Timestamp
    """When the drill started."""
    result: DrillResult
    """Succeeded (moved there and back), Failed (see message), Refused (not started: see message)."""
    vip: Annotated[str, Field(max_length=18)] = ""
    """The VIP observed (the first VIP the holder held)."""
    from_node: Annotated[str, Field(max_length=63)] = ""
    """The holder that was drained."""
    to_node: Annotated[str, Field(max_length=63)] = ""
    """The peer that took over."""
    takeover_seconds: float | None = None
    """How long the VIP was on no node: from it leaving fromNode to it arriving on toNode, by the nodes'
    clocks (sampled every ~10 ms); 0 when toNode had it first (the message says for how long both did)."""
    failback_seconds: float | None = None
    """The same for the way back, toNode to fromNode."""
    message: ShortText = ""
    """Why a drill was refused or failed; the steps' timings otherwise."""


class PreviewStatus(StatusModel):
    """What a paused pair (spec.paused) would change if it were unpaused, as validated on one node."""

    config_map: Annotated[str, Field(max_length=253)]
    """The ConfigMap in the pair's namespace that holds the diff (key `diff`) and the file list (`files`)."""
    node: Annotated[str, Field(max_length=63)]
    """The node the config was staged and validated on (the backup: the one holding fewer VIPs)."""
    config_hash: Annotated[str, Field(max_length=64)]
    """The hash of the previewed config for that node: what appliedConfigHash becomes on unpausing."""
    files_added: Annotated[int, Field(ge=0)] = 0
    """Files the config would add on the node."""
    files_changed: Annotated[int, Field(ge=0)] = 0
    """Files whose content would change."""
    files_removed: Annotated[int, Field(ge=0)] = 0
    """Files the operator manages now that the config would remove."""
    validated: bool = False
    """nginx -t and keepalived -t accepted the staged config on the node (true too when nothing changes)."""
    message: ShortText = ""
    """The validators' output when they refused it, or why the preview could not be made."""
    diff_truncated: bool = False
    """The diff in the ConfigMap was cut to its size limit (the counts above are complete)."""


class PairStatus(StatusModel):
    """Observed state of a LoadBalancerPair."""

    CLEARED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("preview",)

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation last reconciled."""
    vips: ShortText = ""
    """The VIPs, comma-separated (printer column)."""
    vip_holders: Annotated[str, _truncated(4096), Field(max_length=4096)] = ""
    """Holder per VIP, e.g. "198.51.100.10=lb1"; several holders of one VIP mean split brain."""
    mode: Annotated[str, Field(max_length=32)] = ""
    """The mode in effect."""
    healthy_nodes: Annotated[str, Field(max_length=8)] = ""
    """Nodes with nginx and keepalived running, e.g. "2/2"."""
    nodes: Annotated[list[NodeStatus], Field(max_length=2), UniqueItems(("name",))] = Field(
        default_factory=list
    )
    """Per-node detail."""
    conditions: Conditions = Field(default_factory=list)
    """Ready (summary), and detail conditions."""
    last_drill: DrillStatus | None = None
    """The last failover drill asked for with the annotation lb.lbpair.dev/drill."""
    preview: PreviewStatus | None = None
    """While spec.paused: what unpausing would change; absent otherwise."""
    kopf: dict[str, Any] | None = None
    """Operator framework bookkeeping."""


class BackendNodeStatus(StatusModel):
    """One backend server as one LB node sees it."""

    name: Annotated[str, Field(max_length=63)]
    """The node."""
    reachable: bool
    """The node opened a TCP connection to the server within a second, at its last probe."""
    last_transition_time: Timestamp
    """When reachable last changed (or was first observed)."""


class BackendStatus(StatusModel):
    """One server of an Upstream, probed from each LB node on the probe interval."""

    address: Annotated[str, Field(max_length=15)]
    """IPv4 address (a host name's address, or a Service endpoint's)."""
    port: int
    """Port."""
    nodes: Annotated[list[BackendNodeStatus], Field(max_length=2)] = Field(default_factory=list)
    """Per LB node: reachable or not, and since when."""


MAX_BACKEND_STATUSES = 256


class AttachedStatus(StatusModel):
    """Observed state of an Upstream or VirtualHost."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation last reconciled."""
    pair: Annotated[str, Field(max_length=317)] = ""
    """namespace/name of the pair serving this object."""
    programmed_on: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=2)] = Field(
        default_factory=list
    )
    """Nodes whose live configuration includes this object."""
    conditions: Conditions = Field(default_factory=list)
    """Programmed (in the live configuration of every node), Accepted (valid and attached), and on an
    Upstream with spec.serviceRef BackendsAvailable (the Service has a ready endpoint)."""
    backends: Annotated[list[BackendStatus], Field(max_length=MAX_BACKEND_STATUSES)] | None = None
    """Upstreams only: each server (the first 256 by address and port), reachable from each LB node or
    not; an event on the Upstream when one goes down or comes back from a node's point of view."""
    kopf: dict[str, Any] | None = None
    """Operator framework bookkeeping."""


def find_condition(conditions: list[Condition], condition_type: str) -> Condition | None:
    return next((c for c in conditions if c.type == condition_type), None)


SubjectName = Annotated[str, _truncated(253), Field(max_length=253)]


class CertificateStatus(StatusModel):
    """The certificate a TLS VirtualHost serves, as read from its Secret's tls.crt (the first one)."""

    not_before: Timestamp
    """Start of validity."""
    not_after: Timestamp
    """End of validity: the CertificateExpiring condition turns True some days before (the operator's
    LBPAIR_CERTIFICATE_WARNING_DAYS, 14 by default)."""
    serial: Annotated[str, Field(max_length=64)]
    """Serial number in upper-case hex, whole bytes, as `openssl x509 -serial` prints it."""
    subject_names: Annotated[list[SubjectName], Field(max_length=64)] = Field(default_factory=list)
    """DNS and IP subjectAltNames (the subject's CN when there are none); the first 64."""
    covers_server_names: bool
    """Every spec.serverNames entry matches a subject name (RFC 6125: a wildcard stands for one label)."""
    uncovered_server_names: Annotated[list[SubjectName], Field(max_length=32)] = Field(default_factory=list)
    """The server names no subject name matches."""


class VirtualHostStatus(AttachedStatus):
    """Observed state of a VirtualHost."""

    certificate: CertificateStatus | None = None
    """The certificate served (VirtualHosts with spec.tls, once built), with the conditions
    CertificateValid and CertificateExpiring."""
