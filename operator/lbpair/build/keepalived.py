"""The pair's VRRP setup → each node's keepalived config, the nginx check script and the nginx watcher."""

from __future__ import annotations

import posixpath

from lbpair.model.pair import LoadBalancerPair, PairNode, PairSpec
from lbpair.render.keepalived_model import (
    CheckScript,
    GarpTuning,
    Keepalived,
    MaintenanceFile,
    NginxWatch,
    TrackFile,
    TrackProcess,
    VirtualAddress,
    VrrpInstance,
    VrrpScript,
    WatchedListener,
    WatcherLaunch,
)

SCRIPT_NAME = "lbpair_check_nginx"
TRACK_PROCESS_NAME = "lbpair_nginx"
NGINX_TRACK_FILE_NAME = "lbpair_nginx_watch"
# keepalived drops a track_file whose directory is missing when it loads its config (it watches the
# directory), and starts before any watcher after a boot: the directory is persistent, created by the
# agent with the staged files (NodeLayout.directories), and one file per reason a node steps down.
TRACK_DIRECTORY = "/var/lib/lbpair/track"
NGINX_TRACK_FILE = f"{TRACK_DIRECTORY}/nginx"
# The watcher's pid, status and lock: runtime state, gone after a reboot like the process it describes.
WATCH_STATE_DIRECTORY = "/run/lbpair/nginx-watch"
WATCH_PROGRAM_NAME = "lbpair-nginx-watch"
WATCH_CONFIG_NAME = "lbpair-nginx-watch.json"
MAINTENANCE_NAME = "lbpair_maintenance"
# Writing it reloads nothing; the rollout installs it (and its directory) before keepalived reloads.
MAINTENANCE_PATH = f"{TRACK_DIRECTORY}/maintenance"
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
                track_script=SCRIPT_NAME if check.method != "TrackProcess" else None,
                track_process=TRACK_PROCESS_NAME if check.method == "TrackProcess" else None,
                track_files=[MAINTENANCE_NAME, *([NGINX_TRACK_FILE_NAME] if check.method == "Watch" else [])],
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
        track_files=[TrackFile(name=NGINX_TRACK_FILE_NAME, path=NGINX_TRACK_FILE, weight=check.weight)]
        if check.method == "Watch"
        else [],
    )


def _vrrp_script(spec: PairSpec) -> VrrpScript | None:
    check = spec.health_check
    if check.method == "TrackProcess":
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
    if check.method == "TrackProcess":
        return None
    watching = check.method == "Watch"
    program, config = _watch_paths(spec)
    return CheckScript(
        path=spec.node_profile.check_script_path,
        nginx_service=spec.node_profile.nginx_service,
        restart_nginx=check.restart_nginx,
        restart_wait_seconds=check.restart_wait_seconds,
        watcher=WatcherLaunch(
            program_path=program,
            config_path=config,
            state_dir=WATCH_STATE_DIRECTORY,
            pid_path=f"{WATCH_STATE_DIRECTORY}/pid",
            log_path=f"{WATCH_STATE_DIRECTORY}/stderr",
        )
        if watching
        else None,
        status_port=spec.node_profile.nginx_status_port if watching else None,
    )


def nginx_watch(spec: PairSpec, node: PairNode) -> NginxWatch | None:
    """The watcher of one node: it connects to the pair's listeners on the node's own front address."""
    if spec.health_check.method != "Watch":
        return None
    program, config = _watch_paths(spec)
    return NginxWatch(
        program_path=program,
        config_path=config,
        state_dir=WATCH_STATE_DIRECTORY,
        track_file=NGINX_TRACK_FILE,
        nginx_pid_path=spec.node_profile.nginx_pid_path,
        listeners=[WatchedListener(node.vrrp_address, listener.port) for listener in spec.listeners],
        interval_milliseconds=spec.health_check.watch_interval_milliseconds,
    )


def _watch_paths(spec: PairSpec) -> tuple[str, str]:
    """The watcher's program and config, beside the check script: keepalived's directory, root's only."""
    directory = posixpath.dirname(spec.node_profile.check_script_path)
    return f"{directory}/{WATCH_PROGRAM_NAME}", f"{directory}/{WATCH_CONFIG_NAME}"
