"""A LoadBalancerPair's VRRP (keepalived) settings and the nginx health check that moves its VIPs."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from lbpair.model.base import ApiModel, CelRule, cel_config
from lbpair.model.common import SecretKeyRef


class Preempt(ApiModel):
    """Whether a recovered higher-priority node takes the VIPs back."""

    mode: Literal["Preempt", "NoPreempt"] = "Preempt"
    """Preempt: the higher-priority node takes the VIPs back when it recovers (seed default). NoPreempt: the
    current holder keeps them (keepalived `nopreempt`; both nodes then start in state BACKUP)."""
    delay_seconds: Annotated[int, Field(ge=0, le=1000)] = 0
    """With Preempt, wait this long after startup before taking the VIPs back (keepalived preempt_delay),
    giving nginx time to mark backends up."""


class Garp(ApiModel):
    """Gratuitous ARP, which moves the VIP in neighbours' ARP caches (the seed's stale-ARP problem)."""

    master_delay_seconds: Annotated[int, Field(ge=0, le=255)] | None = None
    """Delay before the second burst of gratuitous ARPs after becoming MASTER (garp_master_delay)."""
    master_repeat: Annotated[int, Field(ge=1, le=255)] | None = None
    """Gratuitous ARPs sent per burst on becoming MASTER (garp_master_repeat)."""
    master_refresh_seconds: Annotated[int, Field(ge=0, le=86400)] | None = None
    """Resend gratuitous ARPs this often while MASTER; 0 = never (garp_master_refresh)."""
    lower_prio_repeat: Annotated[int, Field(ge=0, le=255)] | None = None
    """Gratuitous ARPs sent when a lower-priority advert is seen, which heals ARP caches after a split brain
    (garp_lower_prio_repeat)."""


class VrrpAuthentication(ApiModel):
    """VRRPv2 PASS authentication. keepalived sends it in clear text; it separates pairs sharing a segment,
    it is not security (use unicast peers and a firewall rule for protocol 112)."""

    secret_ref: SecretKeyRef
    """Secret key holding the password: 1-8 characters of [A-Za-z0-9._+=-]."""


VRRP_AUTH_NEEDS_V2 = CelRule(
    rule="!has(self.authentication) || self.version == 2",
    message="authentication is only available with VRRP version 2",
    field_path=".authentication",
)
V2_WHOLE_SECONDS = CelRule(
    rule="self.version == 3 || self.advertIntervalMilliseconds % 1000 == 0",
    message="advertIntervalMilliseconds must be whole seconds (a multiple of 1000) under VRRP version 2",
    field_path=".advertIntervalMilliseconds",
)
V3_CENTISECONDS = CelRule(
    rule="self.version == 2 || "
    "(self.advertIntervalMilliseconds % 10 == 0 && self.advertIntervalMilliseconds <= 40950)",
    message="advertIntervalMilliseconds must be a multiple of 10 and at most 40950 under VRRP version 3",
    field_path=".advertIntervalMilliseconds",
)
SECOND_ROUTER_ID_DIFFERS = CelRule(
    rule="!has(self.secondVirtualRouterId) || self.secondVirtualRouterId != self.virtualRouterId",
    message="secondVirtualRouterId must differ from virtualRouterId",
    field_path=".secondVirtualRouterId",
)


class Vrrp(ApiModel):
    """VRRP as keepalived runs it."""

    model_config = cel_config(VRRP_AUTH_NEEDS_V2, V2_WHOLE_SECONDS, V3_CENTISECONDS, SECOND_ROUTER_ID_DIFFERS)

    version: Literal[2, 3] = 3
    """VRRP protocol version. 3 allows sub-second adverts (failover in well under a second)."""
    virtual_router_id: Annotated[int, Field(ge=1, le=255)]
    """virtual_router_id of the (first) VRRP instance; must be unique on the network segment."""
    second_virtual_router_id: Annotated[int, Field(ge=1, le=255)] | None = None
    """ActiveActive: virtual_router_id of the second instance; defaults to virtualRouterId + 1."""
    advert_interval_milliseconds: Annotated[int, Field(ge=10, le=255000)] = 1000
    """Advertisement interval. Backups take over after about 3 intervals without adverts."""
    peering: Literal["Unicast", "Multicast"] = "Unicast"
    """Unicast: adverts go only to the other node's vrrpAddress. Multicast: to 224.0.0.18 (the seed)."""
    preempt: Preempt = Preempt()
    """Preemption behaviour."""
    authentication: VrrpAuthentication | None = None
    """Optional VRRPv2 PASS authentication."""
    garp: Garp = Garp()
    """Gratuitous ARP tuning; unset fields keep keepalived's defaults."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        VRRP_AUTH_NEEDS_V2.enforce(self.authentication is None or self.version == 2)  # noqa: PLR2004
        V2_WHOLE_SECONDS.enforce(self.version == 3 or self.advert_interval_milliseconds % 1000 == 0)  # noqa: PLR2004
        V3_CENTISECONDS.enforce(
            self.version == 2  # noqa: PLR2004
            or (self.advert_interval_milliseconds % 10 == 0 and self.advert_interval_milliseconds <= 40950)  # noqa: PLR2004
        )
        SECOND_ROUTER_ID_DIFFERS.enforce(self.second_virtual_router_id != self.virtual_router_id)
        return self


class HealthCheck(ApiModel):
    """How keepalived watches nginx on each node (the seed's chk_nginx.sh)."""

    method: Literal["Script", "TrackProcess"] = "Script"
    """Script: keepalived runs the rendered check script every intervalSeconds (vrrp_script). TrackProcess:
    keepalived watches the nginx process through kernel process events (vrrp_track_process), which reacts
    at once but cannot restart nginx."""
    interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 2
    """Script: seconds between checks (keepalived accepts whole seconds only)."""
    fall: Annotated[int, Field(ge=1, le=100)] = 2
    """Script: consecutive failures before the node counts as unhealthy."""
    rise: Annotated[int, Field(ge=1, le=100)] = 1
    """Script: consecutive successes before the node counts as healthy again."""
    weight: Annotated[int, Field(ge=-254, le=254)] = 0
    """Priority change of an unhealthy node (negative) or a healthy one (positive). 0 puts an unhealthy node
    into FAULT, releasing its VIPs at once; otherwise |weight| must exceed the nodes' priority difference."""
    restart_nginx: bool = True
    """Script: when nginx is down, try to start it and check again before failing (the seed's behaviour)."""
    restart_wait_seconds: Annotated[int, Field(ge=1, le=30)] = 2
    """Script: how long to wait after starting nginx before checking again."""
