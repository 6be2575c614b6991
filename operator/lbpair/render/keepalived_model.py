"""The render model of keepalived and the node-side nginx watcher: what keepalived.conf.j2, the check script
and the watcher's config loop over, in their own terms (see lbpair.render.model for the rules)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lbpair.render.firewall import FirewallRuleset


@dataclass(frozen=True)
class WatcherLaunch:
    """How the check script finds the nginx watcher and starts it when it does not run."""

    program_path: str
    config_path: str
    state_dir: str  # created before it starts: its stderr goes there
    pid_path: str
    log_path: str


@dataclass(frozen=True)
class CheckScript:
    """The seed's chk_nginx.sh: is nginx's service active, optionally after one restart attempt. With the
    watcher: also start the watcher when it does not run, and ask nginx for a response (a hung nginx)."""

    path: str
    nginx_service: str
    restart_nginx: bool
    restart_wait_seconds: int
    watcher: WatcherLaunch | None = None
    status_port: int | None = None  # asked for the config hash on 127.0.0.1: nginx answers, not just runs


@dataclass(frozen=True)
class WatchedListener:
    address: str
    port: int


@dataclass(frozen=True)
class NginxWatch:
    """The nginx watcher of one node (lbpair/render/nginx_watch.py): its files and what it watches."""

    program_path: str
    config_path: str
    state_dir: str  # its pid, status and lock (runtime: /run)
    track_file: str  # what keepalived tracks: 0 nginx serves, 1 not
    nginx_pid_path: str
    listeners: list[WatchedListener]
    interval_milliseconds: int


@dataclass(frozen=True)
class TrackFile:
    """A keepalived track_file (watched with inotify): with weight 0 a non-zero value means FAULT."""

    name: str
    path: str
    weight: int


@dataclass(frozen=True)
class VirtualAddress:
    cidr: str
    interface: str

    @property
    def address(self) -> str:
        """The VIP without its prefix length, as status names VIPs."""
        return self.cidr.partition("/")[0]


@dataclass(frozen=True)
class GarpTuning:
    master_delay: int | None = None
    master_repeat: int | None = None
    master_refresh: int | None = None
    lower_prio_repeat: int | None = None


@dataclass(frozen=True)
class VrrpInstance:
    name: str
    starts_as_master: bool
    interface: str
    virtual_router_id: int
    priority: int
    advert_interval_milliseconds: int
    nopreempt: bool
    preempt_delay_seconds: int
    unicast_source: str | None  # unicast peering: this node's address, and
    unicast_peers: list[str]  # the peer's
    multicast_source: str | None
    auth_pass: str | None
    virtual_addresses: list[VirtualAddress]
    garp: GarpTuning
    track_script: str | None
    track_process: str | None
    track_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VrrpScript:
    name: str
    path: str
    interval_seconds: int
    timeout_seconds: int
    weight: int
    fall: int
    rise: int


@dataclass(frozen=True)
class TrackProcess:
    name: str
    process: str
    weight: int


@dataclass(frozen=True)
class MaintenanceFile:
    """A keepalived track_file with weight 0 that the operator writes: 0 in service, 1 drained (every
    instance tracking it goes to FAULT and sends a priority-0 advert, so the peer takes over at once)."""

    name: str
    path: str
    drained: bool


@dataclass(frozen=True)
class Keepalived:
    path: str
    router_id: str
    vrrp_version: int
    script: VrrpScript | None
    track_process: TrackProcess | None
    instances: list[VrrpInstance]
    maintenance: MaintenanceFile | None = None
    track_files: list[TrackFile] = field(default_factory=list)


@dataclass(frozen=True)
class NodeConfig:
    name: str
    keepalived: Keepalived
    nginx_watch: NginxWatch | None = None
    firewall: FirewallRuleset | None = None
