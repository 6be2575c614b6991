"""A LoadBalancerPair's VRRP (keepalived) settings and the nginx health check that moves its VIPs."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from lbpair.model.base import ApiModel, CelRule, cel_config
from lbpair.model.common import SecretKeyRef


class Preempt(ApiModel):
    """Whether a recovered higher-priority node takes the VIPs back. Taking them back is a second move of
    the VIPs: it costs no request when the recovered node's nginx already accepts (with method Watch a node
    leaves FAULT only once nginx accepts on every listener), at worst the few connections in flight on the
    holder. NoPreempt avoids the second move altogether but leaves the VIPs wherever the last failure put
    them (and ActiveActive then stops spreading them over both nodes)."""

    mode: Literal["Preempt", "NoPreempt"] = "Preempt"
    """Preempt: the higher-priority node takes the VIPs back when it recovers (the seed's behaviour, and
    what ActiveActive needs to give each node its VIPs back). NoPreempt: the current holder keeps them
    (keepalived `nopreempt`; both nodes then start in state BACKUP)."""
    delay_seconds: Annotated[int, Field(ge=0, le=1000)] = 0
    """With Preempt, wait this long after startup (or after seeing a lower-priority master) before taking
    the VIPs back (keepalived preempt_delay), e.g. for backends to be marked up. 0 by default: with method
    Watch the node is back only once nginx accepts, so there is nothing left to wait for."""


class Garp(ApiModel):
    """Gratuitous ARP, which moves the VIP in neighbours' ARP caches (the seed's stale-ARP problem). The
    first burst goes out the moment a node becomes MASTER; the defaults repeat it after 1 s (keepalived
    waits 5 s) for a neighbour that missed it, with 3 ARPs per burst (keepalived sends 5). Unset fields keep
    keepalived's defaults."""

    master_delay_seconds: Annotated[int, Field(ge=0, le=255)] | None = 1
    """Delay before the second burst of gratuitous ARPs after becoming MASTER (garp_master_delay; keepalived
    alone waits 5 s)."""
    master_repeat: Annotated[int, Field(ge=1, le=255)] | None = 3
    """Gratuitous ARPs sent per burst on becoming MASTER (garp_master_repeat; keepalived alone sends 5)."""
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
    """VRRP protocol version. 3 allows sub-second adverts (failover in well under a second); the seed
    ran 2."""
    virtual_router_id: Annotated[int, Field(ge=1, le=255)]
    """virtual_router_id of the (first) VRRP instance; must be unique on the network segment."""
    second_virtual_router_id: Annotated[int, Field(ge=1, le=255)] | None = None
    """ActiveActive: virtual_router_id of the second instance; defaults to virtualRouterId + 1."""
    advert_interval_milliseconds: Annotated[int, Field(ge=10, le=255000)] = 100
    """Advertisement interval (the seed: 1000). A node whose health check fails hands over at once (a
    priority-0 advert); a node that dies silently (power, link, keepalived killed) is replaced after 3
    intervals and the skew time, about 0.36 s at 100 ms. Shorter intervals risk false failovers when a node
    is starved of CPU for longer than 3 intervals."""
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
    """How keepalived watches nginx on each node (the seed's chk_nginx.sh, and a faster watcher)."""

    method: Literal["Watch", "Script", "TrackProcess"] = "Watch"
    """Watch: a watcher on the node (python3, installed and updated by the operator, started by the check
    script) sees nginx's master exit at once (pidfd) and a listener refusing connections within
    watchIntervalMilliseconds, and tells keepalived through a track_file (inotify): failover in about a
    tenth of a second; the check script (every intervalSeconds, asking nginx for a response) stays as the
    backstop for a hung nginx. Script: only the check script (the seed; keepalived runs scripts at most once
    a second). TrackProcess: keepalived watches the nginx process through kernel process events
    (vrrp_track_process), which reacts at once but needs keepalived in the initial network namespace (the
    kernel's proc connector answers nowhere else), never sees a deaf nginx, and cannot restart nginx."""
    watch_interval_milliseconds: Annotated[int, Field(ge=10, le=1000)] = 50
    """Watch: how often the watcher connects to each of the pair's listeners on the node's vrrpAddress (one
    non-blocking connect each, no process started). nginx's exit is seen without waiting for it."""
    interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 1
    """Script and Watch: seconds between runs of the check script (keepalived accepts whole seconds only;
    the seed: 2)."""
    fall: Annotated[int, Field(ge=1, le=100)] = 2
    """Script and Watch: consecutive failures of the check script before the node counts as unhealthy."""
    rise: Annotated[int, Field(ge=1, le=100)] = 1
    """Script and Watch: consecutive successes of the check script before the node counts as healthy again."""
    weight: Annotated[int, Field(ge=-254, le=254)] = 0
    """Priority change of an unhealthy node (negative) or a healthy one (positive). 0 puts an unhealthy node
    into FAULT, releasing its VIPs at once; otherwise |weight| must exceed the nodes' priority difference."""
    restart_nginx: bool = True
    """Script and Watch: when nginx is down, the check script tries to start it and check again before
    failing (the seed's behaviour)."""
    restart_wait_seconds: Annotated[int, Field(ge=1, le=30)] = 2
    """Script and Watch: how long to wait after starting nginx before checking again."""
