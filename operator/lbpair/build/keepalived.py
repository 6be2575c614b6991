"""The pair's VRRP setup → each node's keepalived config and the nginx check script."""

from __future__ import annotations

from lbpair.model.pair import LoadBalancerPair, PairNode, PairSpec
from lbpair.render.model import (
    CheckScript,
    GarpTuning,
    Keepalived,
    MaintenanceFile,
    TrackProcess,
    VirtualAddress,
    VrrpInstance,
    VrrpScript,
)

SCRIPT_NAME = "lbpair_check_nginx"
TRACK_PROCESS_NAME = "lbpair_nginx"
MAINTENANCE_NAME = "lbpair_maintenance"
# Beside the node agent's state (lbpair.nodes.operations.DEFAULT_STATE_DIR), outside the services' config
# directories, so writing it reloads nothing. keepalived stops tracking a file whose directory is missing
# when it reads its config: the rollout installs the file before keepalived reloads.
MAINTENANCE_PATH = "/var/lib/lbpair/track/maintenance"
# A waiting restart plus a start that is itself slow must not be cut off by keepalived's script timeout.
SCRIPT_TIMEOUT_MARGIN_SECONDS = 5


def keepalived(pair: LoadBalancerPair, node: PairNode, auth_pass: str | None) -> Keepalived:
    spec = pair.spec
    vrrp = spec.vrrp
    check = spec.health_check
    peer = next(other for other in spec.nodes if other.name != node.name)
    high = max(n.priority for n in spec.nodes)
    low = min(n.priority for n in spec.nodes)
    # nopreempt and preempt_delay only work when keepalived starts in BACKUP (keepalived's rule).
    start_as_backup = vrrp.preempt.mode == "NoPreempt" or vrrp.preempt.delay_seconds > 0
    if spec.mode == "ActivePassive":
        groups = [(vrrp.virtual_router_id, max(spec.nodes, key=lambda n: n.priority).name, list(spec.vips))]
    else:
        second_id = vrrp.second_virtual_router_id or vrrp.virtual_router_id + 1
        groups = [
            (router_id, owner.name, [vip for vip in spec.vips if vip.preferred_node == owner.name])
            for router_id, owner in zip((vrrp.virtual_router_id, second_id), spec.nodes, strict=True)
        ]
    unicast = vrrp.peering == "Unicast"
    garp = vrrp.garp
    instances = []
    for number, (router_id, owner, vips) in enumerate(groups, start=1):
        holds = owner == node.name
        # ActiveActive: each node takes the higher priority for the instance whose VIPs prefer it.
        priority = node.priority if spec.mode == "ActivePassive" else (high if holds else low)
        instances.append(
            VrrpInstance(
                name=f"lbpair_{number}",
                starts_as_master=holds and not start_as_backup,
                interface=node.interface,
                virtual_router_id=router_id,
                priority=priority,
                advert_interval_milliseconds=vrrp.advert_interval_milliseconds,
                nopreempt=vrrp.preempt.mode == "NoPreempt",
                preempt_delay_seconds=vrrp.preempt.delay_seconds if vrrp.preempt.mode == "Preempt" else 0,
                unicast_source=node.vrrp_address if unicast else None,
                unicast_peers=[peer.vrrp_address] if unicast else [],
                multicast_source=None if unicast else node.vrrp_address,
                auth_pass=auth_pass,
                virtual_addresses=[VirtualAddress(vip.address, node.interface) for vip in vips],
                garp=GarpTuning(
                    master_delay=garp.master_delay_seconds,
                    master_repeat=garp.master_repeat,
                    master_refresh=garp.master_refresh_seconds,
                    lower_prio_repeat=garp.lower_prio_repeat,
                ),
                track_script=SCRIPT_NAME if check.method == "Script" else None,
                track_process=TRACK_PROCESS_NAME if check.method == "TrackProcess" else None,
                track_files=[MAINTENANCE_NAME],
            )
        )
    return Keepalived(
        path=spec.node_profile.keepalived_config_path,
        router_id=node.name,
        vrrp_version=vrrp.version,
        script=_vrrp_script(spec),
        track_process=TrackProcess(name=TRACK_PROCESS_NAME, process="nginx", weight=check.weight)
        if check.method == "TrackProcess"
        else None,
        instances=instances,
        maintenance=MaintenanceFile(MAINTENANCE_NAME, MAINTENANCE_PATH, drained=node.maintenance == "Drain"),
    )


def _vrrp_script(spec: PairSpec) -> VrrpScript | None:
    check = spec.health_check
    if check.method != "Script":
        return None
    timeout = (
        check.restart_wait_seconds + SCRIPT_TIMEOUT_MARGIN_SECONDS
        if check.restart_nginx
        else check.interval_seconds
    )
    return VrrpScript(
        name=SCRIPT_NAME,
        path=spec.node_profile.check_script_path,
        interval_seconds=check.interval_seconds,
        timeout_seconds=timeout,
        weight=check.weight,
        fall=check.fall,
        rise=check.rise,
    )


def check_script(spec: PairSpec) -> CheckScript | None:
    check = spec.health_check
    if check.method != "Script":
        return None
    return CheckScript(
        path=spec.node_profile.check_script_path,
        nginx_service=spec.node_profile.nginx_service,
        restart_nginx=check.restart_nginx,
        restart_wait_seconds=check.restart_wait_seconds,
    )
