"""Status written by the operator. The CRDs' status schemas are generated from these models, so whatever
the operator builds with them is exactly what the API server keeps."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from lbpair.model.base import ApiModel, UniqueItems

ShortText = Annotated[str, Field(max_length=1024)]
Timestamp = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]


class StatusModel(ApiModel):
    """Status is written by the operator, not users, so it is not held to the spec's allow-lists."""

    model_config = ConfigDict(strict=False)


class Condition(StatusModel):
    """A Kubernetes-style condition."""

    type: Annotated[str, Field(max_length=316)]
    """Ready, Programmed, ..."""
    status: Literal["True", "False", "Unknown"]
    """Condition status."""
    reason: Annotated[str, Field(max_length=1024)]
    """CamelCase reason."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable detail."""
    last_transition_time: Timestamp
    """When status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation the condition was computed for."""


Conditions = Annotated[list[Condition], Field(max_length=16), UniqueItems(("type",))]


class NodeStatus(StatusModel):
    """What the operator last observed on one node."""

    name: Annotated[str, Field(max_length=63)]
    """Node name."""
    reachable: bool = False
    """SSH login worked at the last probe."""
    vrrp_state: Literal["Master", "Backup", "Fault", "Unknown"] = "Unknown"
    """keepalived's VRRP state (of the first instance in ActiveActive mode)."""
    vips_held: Annotated[list[Annotated[str, Field(max_length=18)]], Field(max_length=32)] = Field(
        default_factory=list
    )
    """VIPs configured on the node's interfaces right now."""
    nginx_running: bool = False
    """nginx service active."""
    keepalived_running: bool = False
    """keepalived service active."""
    applied_config_hash: Annotated[str, Field(max_length=64)] = ""
    """Hash of the configuration last applied to this node."""
    last_probe_time: Timestamp | None = None
    """Time of the last probe."""
    message: ShortText = ""
    """Last problem seen on this node."""


class PairStatus(StatusModel):
    """Observed state of a LoadBalancerPair."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation last reconciled."""
    vips: ShortText = ""
    """The VIPs, comma-separated (printer column)."""
    vip_holders: ShortText = ""
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
    kopf: dict[str, Any] | None = None
    """Operator framework bookkeeping."""


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
    """Programmed (in the live configuration of every node), Accepted (valid and attached)."""
    kopf: dict[str, Any] | None = None
    """Operator framework bookkeeping."""
