"""Smoke tests of the network-namespace lab: it must behave like two real LB servers, and must never
shadow the machine's own destinations.

Every test leaves the lab as it found it (the `lab` fixture is shared by the whole session): faults are
undone and pushed configs removed in `finally` blocks. Measured figures are printed (see them with -s).
Every lab address comes from the running lab's address plan (`lab.plan`), chosen for this machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest

from testbed import machine
from testbed.addressing import CLIENT, LB_NODES, ROOT_MGMT_LINK, AddressPlan, Segment, conflicts
from testbed.lab import Lab, run
from testbed.traffic import RequestLoop
from tests.e2e.lab_fixtures import NodeShell, connect_ssh, open_node_shell

pytestmark = pytest.mark.e2e

ShellFactory = Callable[[str], NodeShell]

KEEPALIVED_CONF_PATH = "/etc/keepalived/keepalived.conf"
NGINX_CONF_PATH = "/etc/nginx/conf.d/lab-smoke.conf"
SMOKE_HOST = "smoke.lab.test"
PRIORITIES = {"lb1": 150, "lb2": 100}


def keepalived_conf(node: str, plan: AddressPlan) -> str:
    initial_state = "MASTER" if PRIORITIES[node] == max(PRIORITIES.values()) else "BACKUP"
    return f"""\
# lab smoke test: one VRRP instance, {node} starts as {initial_state}
global_defs {{
    router_id {node}
}}
vrrp_instance VI_SMOKE {{
    state {initial_state}
    interface eth0
    virtual_router_id 51
    priority {PRIORITIES[node]}
    advert_int 1
    virtual_ipaddress {{
        {plan.vip_primary}/{plan.front.prefixlen} dev eth0
    }}
}}
"""


def nginx_proxy_conf(plan: AddressPlan) -> str:
    return f"""\
# lab smoke test: proxy {SMOKE_HOST} to both backends over the backend network
upstream lab_smoke_backends {{
    server {plan.hosts["be1"].address(Segment.BACK)}:80 max_fails=1 fail_timeout=5s;
    server {plan.hosts["be2"].address(Segment.BACK)}:80 max_fails=1 fail_timeout=5s;
}}
server {{
    listen 80;
    server_name {SMOKE_HOST};
    location / {{
        proxy_pass http://lab_smoke_backends;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
}}
"""


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll until `condition` holds; return the seconds it took, fail the test after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


@contextmanager
def keepalived_pair(shell: ShellFactory, plan: AddressPlan) -> Iterator[None]:
    """Push a VRRP pair config to both nodes over SFTP, start keepalived; stop and remove it afterwards."""
    try:
        for node in LB_NODES:
            shell(node).write_file(KEEPALIVED_CONF_PATH, keepalived_conf(node, plan))
            shell(node).run(f"keepalived -t -f {KEEPALIVED_CONF_PATH}")
            shell(node).run("systemctl start keepalived")
        yield
    finally:
        for node in LB_NODES:
            shell(node).run("systemctl stop keepalived", check=False)
            shell(node).remove_file(KEEPALIVED_CONF_PATH)


@contextmanager
def nginx_proxy(shell: ShellFactory, plan: AddressPlan) -> Iterator[None]:
    try:
        for node in LB_NODES:
            shell(node).write_file(NGINX_CONF_PATH, nginx_proxy_conf(plan))
            shell(node).run("systemctl reload nginx")
        yield
    finally:
        for node in LB_NODES:
            shell(node).remove_file(NGINX_CONF_PATH)
            shell(node).run("systemctl reload nginx", check=False)


def test_ssh_with_pinned_host_keys_reaches_each_node(lab: Lab) -> None:
    for node in LB_NODES:
        started = time.monotonic()
        shell = open_node_shell(lab, node)
        try:
            assert shell.run("hostname").stdout.strip() == node
            connect_and_first_command = time.monotonic() - started
            per_command = []
            for _ in range(20):
                started = time.monotonic()
                shell.run("true")
                per_command.append(time.monotonic() - started)
        finally:
            shell.client.close()
        print(
            f"{node}: connect+auth+hostname {connect_and_first_command * 1000:.0f} ms, "
            f"command on open connection median {statistics.median(per_command) * 1000:.1f} ms"
        )


def test_wrong_pinned_host_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    pinned = dict(line.split(" ", 1) for line in lab.known_hosts_path.read_text().splitlines())
    lb1, lb2 = (str(lab.mgmt_address(node)) for node in LB_NODES)
    wrong_known_hosts = tmp_path / "known_hosts"
    wrong_known_hosts.write_text(f"{lb1} {pinned[lb2]}")
    with pytest.raises(paramiko.BadHostKeyException):
        connect_ssh(lb1, key_path=lab.ssh_key_path, known_hosts_path=wrong_known_hosts)
    # An address with no pinned key at all is refused too (RejectPolicy, no trust on first use).
    empty_known_hosts = tmp_path / "empty_known_hosts"
    empty_known_hosts.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect_ssh(lb1, key_path=lab.ssh_key_path, known_hosts_path=empty_known_hosts)


def test_each_node_sees_only_itself(lab: Lab, node_shell: ShellFactory) -> None:
    lb1, lb2 = node_shell("lb1"), node_shell("lb2")
    try:
        lb2.run("systemctl stop nginx")
        assert lb1.run("systemctl is-active nginx").stdout.strip() == "active"
        stopped = lb2.run("systemctl is-active nginx", check=False)
        assert (stopped.exit_status, stopped.stdout.strip()) == (3, "inactive")
        assert lab.exec("lb2", "pidof", "nginx", check=False).returncode != 0
        assert lab.exec("lb1", "pidof", "nginx").stdout.strip()

        lb1.run("touch /run/lab-smoke-marker")
        assert lb2.run("test -e /run/lab-smoke-marker", check=False).exit_status == 1
        for node, shell in (("lb1", lb1), ("lb2", lb2)):
            assert shell.run("cat /proc/1/comm").stdout.strip() == "tini"
            assert lab.exec(node, "hostname").stdout.strip() == node
    finally:
        lb1.run("rm -f /run/lab-smoke-marker")
        lb2.run("systemctl start nginx")
    assert lb2.run("systemctl is-active nginx").stdout.strip() == "active"


def test_keepalived_failover_keeps_the_vip_serving(lab: Lab, node_shell: ShellFactory) -> None:
    vip = lab.plan.vip_primary
    with nginx_proxy(node_shell, lab.plan), keepalived_pair(node_shell, lab.plan):
        wait_for(lambda: lab.vip_holders(vip) == ["lb1"], timeout=10, what="the VIP on exactly lb1")

        response = lab.http_get_via(vip, SMOKE_HOST, "/some/path?q=1")
        assert response.status == 200, response
        fields = dict(field.split("=", 1) for field in response.body.split())
        assert fields["backend"] in {"be1", "be2"}
        assert (fields["host"], fields["path"], fields["uri"]) == (SMOKE_HOST, "/some/path", "/some/path?q=1")
        assert fields["x-real-ip"] == str(lab.plan.hosts[CLIENT].address(Segment.FRONT))

        with RequestLoop(lab, host=SMOKE_HOST) as requests:
            time.sleep(0.5)
            stop_issued = time.monotonic()
            node_shell("lb1").run("systemctl stop keepalived")
            stop_took = time.monotonic() - stop_issued
            wait_for(lambda: lab.vip_holders(vip) == ["lb2"], timeout=10, what="the VIP to move to lb2")
            moved_after = time.monotonic() - stop_issued
            time.sleep(1.0)
            # Enough requests to mean something, however slow the machine is right now.
            wait_for(lambda: len(requests.responses) >= 20, timeout=20, what="20 requests through the VIP")
        backends = sorted({response.body.split()[0] for response in requests.responses if response.succeeded})
        slowest = max(response.seconds for response in requests.responses)
        print(
            f"failover: VIP on lb2 only {moved_after:.2f}s after `systemctl stop keepalived` was issued "
            f"(the stop returned after {stop_took:.2f}s); requests {len(requests.responses)}, "
            f"failed {len(requests.failed)}, slowest {slowest:.2f}s, served by {backends}"
        )
        assert len(requests.responses) >= 20, "the request loop barely ran"
        assert len(requests.failed) <= 2, requests.failed

        node_shell("lb1").run("systemctl start keepalived")
        wait_for(lambda: lab.vip_holders(vip) == ["lb1"], timeout=10, what="lb1 to take the VIP back")
    assert lab.vip_holders(vip) == []


def test_power_off_stops_the_node_and_power_on_boots_it(lab: Lab) -> None:
    try:
        lab.power_off("lb2")
        assert lab.exec("lb1", "hostname").stdout.strip() == "lb1"
        # Its switch ports are down: the SYN (or the ARP request before it) goes unanswered.
        with pytest.raises(TimeoutError):
            open_node_shell(lab, "lb2", timeout=1.0)
        assert not [health for health in lab.status() if health.host.name == "lb2" and health.running]
        assert run(["ip", "netns", "pids", lab.plan.hosts["lb2"].namespace]).stdout == "", (
            "processes survived power-off"
        )
    finally:
        lab.power_on("lb2")
    shell = open_node_shell(lab, "lb2")  # same pinned host key after the reboot
    try:
        assert shell.run("hostname").stdout.strip() == "lb2"
        assert shell.run("systemctl is-active nginx").stdout.strip() == "active"
        assert shell.run("ls /run/lab-smoke-marker", check=False).exit_status != 0
    finally:
        shell.client.close()


def test_link_down_cuts_the_node_off_the_front_network(lab: Lab) -> None:
    lb1_front = str(lab.plan.hosts["lb1"].address(Segment.FRONT))

    def client_reaches_lb1() -> bool:
        return lab.exec(CLIENT, "ping", "-c", "1", "-W", "1", lb1_front, check=False).returncode == 0

    assert client_reaches_lb1()
    try:
        lab.link_down("lb1", Segment.FRONT)
        assert "NO-CARRIER" in lab.exec("lb1", "ip", "-o", "link", "show", "eth0").stdout
        assert not client_reaches_lb1()
        assert lab.exec("lb1", "hostname").stdout.strip() == "lb1", "management must stay reachable"
    finally:
        lab.link_up("lb1", Segment.FRONT)
    wait_for(client_reaches_lb1, timeout=5, what="lb1 reachable again after link_up")


def test_vrrp_partition_makes_split_brain_and_heal_ends_it(lab: Lab, node_shell: ShellFactory) -> None:
    vip = lab.plan.vip_primary
    with keepalived_pair(node_shell, lab.plan):
        wait_for(lambda: lab.vip_holders(vip) == ["lb1"], timeout=10, what="the VIP on exactly lb1")
        try:
            lab.vrrp_partition("lb2")
            split_after = wait_for(
                lambda: lab.vip_holders(vip) == ["lb1", "lb2"],
                timeout=10,
                what="both nodes holding the VIP",
            )
        finally:
            lab.heal_partition()
        healed_after = wait_for(
            lambda: lab.vip_holders(vip) == ["lb1"], timeout=10, what="exactly lb1 after healing"
        )
        # A keepalived reload (HUP after a config check) must not move the VIP.
        for node in LB_NODES:
            node_shell(node).run("systemctl reload keepalived")
        time.sleep(1.5)
        assert lab.vip_holders(vip) == ["lb1"]
        print(
            f"split brain after {split_after:.2f}s of partition; healed to one holder in {healed_after:.2f}s"
        )


# --- the lab must never shadow the machine's own destinations ------------------------------------------


def route_get(address: ipaddress.IPv4Address) -> dict[str, object]:
    """`ip route get` in the root namespace: where the kernel would send a packet now (sends nothing)."""
    routes: list[dict[str, object]] = json.loads(run(["ip", "-4", "-j", "route", "get", str(address)]).stdout)
    return routes[0]


def default_route() -> dict[str, object] | None:
    routes = json.loads(run(["ip", "-4", "-j", "route", "show", "default"]).stdout or "[]")
    return routes[0] if routes else None


def covered_by_a_machine_route(address: ipaddress.IPv4Address) -> bool:
    """Whether a root-namespace route other than the default one (and not the lab's) covers `address`."""
    for route in machine.root_routes():
        destination = str(route.get("dst", "default"))
        if destination != "default" and address in ipaddress.IPv4Network(destination, strict=False):
            return True
    return False


def registry_addresses() -> dict[ipaddress.IPv4Address, str]:
    """The package registries and proxies this machine's package managers use, resolved now (lab up)."""
    names: dict[str, list[str]] = {}
    for url, sources in machine.package_manager_urls(os.environ).items():
        host = machine.url_host(url)
        if host:
            names.setdefault(host, []).extend(sources)
    resolved, unresolved = machine.resolve_all(names, machine.resolve_ipv4)
    print(f"not resolved: {unresolved}" if unresolved else "every registry name resolved")
    return {entry.network.network_address: entry.source for entry in machine.merge_protected(resolved)}


def test_lab_ranges_overlap_nothing_the_machine_routes_owns_or_must_reach(lab: Lab) -> None:
    routes, interfaces = machine.root_routes(), machine.root_interface_addresses()
    fresh, _ = machine.protected_addresses(os.environ)
    for segment, network in lab.plan.networks.items():
        assert conflicts(network, routes, interfaces, [*lab.protected, *fresh]) == [], segment
    # The only lab route in the root namespace is the management network's, over the lab's own link.
    main_table = json.loads(run(["ip", "-4", "-j", "route", "show"]).stdout)
    lab_routes = [route["dst"] for route in main_table if route.get("dev") == ROOT_MGMT_LINK]
    assert lab_routes == [str(lab.plan.mgmt)]


def test_registries_and_protected_addresses_still_route_via_the_machine_not_the_lab(lab: Lab) -> None:
    default = default_route()
    registries = registry_addresses()
    protected = {entry.network.network_address: entry.source for entry in lab.protected}
    assert registries, "no package registry address resolved: nothing was checked"

    for address, source in sorted({**protected, **registries}.items()):
        route = route_get(address)
        via = f"{route.get('type', 'unicast')} via {route.get('gateway', '-')} dev {route.get('dev')}"
        print(f"ip route get {address} ({source}): {via}")
        assert not any(address in network for network in lab.plan.networks.values()), (address, source)
        assert route.get("dev") != ROOT_MGMT_LINK, (address, source, route)
        if default is not None and not covered_by_a_machine_route(address):
            # Exactly where it went before the lab existed: the root namespace's default route.
            expected = (default.get("gateway"), default.get("dev"))
            assert (route.get("gateway"), route.get("dev")) == expected, (address, source, route)
