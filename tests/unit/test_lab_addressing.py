"""The lab's address plan: how it is chosen per machine, and how samples are moved onto it (pure parts)."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed import machine
from testbed.addressing import (
    DOCUMENTATION_PLAN,
    LB_NODES,
    SERVICE_CLUSTER_NETWORK,
    AddressPlan,
    AddressPlanError,
    InterfaceAddress,
    Protected,
    Segment,
    candidate_networks,
    choose_plan,
    explain_plan,
    pins_from_environment,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO_ROOT / "config" / "samples").glob("*.yaml"))

# The machine kind of the issue: uplink in 192.0.2.0/24, the package registries at 203.0.113.80.
UPLINK_ROUTES = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "prefsrc": "192.0.2.2"},
    {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local"},
    {"type": "local", "dst": "192.0.2.2", "dev": "eth0", "table": "local"},
    {"type": "broadcast", "dst": "192.0.2.255", "dev": "eth0", "table": "local"},
]
UPLINK_ADDRESSES = ["lo 127.0.0.1/8", "eth0 192.0.2.2/24"]
HOSTS_FILE = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
RESOLV_CONF = "nameserver 10.255.255.53\n"
REGISTRIES = ["203.0.113.80"]


def plan(front: str, back: str, mgmt: str) -> AddressPlan:
    return AddressPlan(ipaddress.IPv4Network(front), ipaddress.IPv4Network(back), ipaddress.IPv4Network(mgmt))


@dataclass
class MachineCase:
    """A machine as the chooser sees it, and the plan (or the refusal) it must get."""

    routes: list[dict[str, Any]] = field(default_factory=lambda: list(UPLINK_ROUTES))
    addresses: list[str] = field(default_factory=lambda: list(UPLINK_ADDRESSES))  # "ifname address/len"
    hosts_file: str = HOSTS_FILE
    resolv_conf: str = RESOLV_CONF
    registries: list[str] = field(default_factory=lambda: list(REGISTRIES))
    pins: dict[str, str] = field(default_factory=dict)  # environment
    plan: AddressPlan | None = None
    refusal: list[str] = field(default_factory=list)  # every phrase must be in the error message

    def interface_addresses(self) -> list[InterfaceAddress]:
        return [
            InterfaceAddress(name, ipaddress.IPv4Interface(address))
            for name, address in (entry.split() for entry in self.addresses)
        ]

    def protected(self) -> list[Protected]:
        entries = [
            Protected(ipaddress.IPv4Network(address), f"{' '.join(names)} in /etc/hosts")
            for address, names in machine.hosts_file_entries(self.hosts_file)
        ]
        entries += [
            Protected(ipaddress.IPv4Network(address), "resolver in /etc/resolv.conf")
            for address in machine.resolv_conf_nameservers(self.resolv_conf)
        ]
        entries += [
            Protected(ipaddress.IPv4Network(address), "package registry") for address in self.registries
        ]
        return entries

    def choose(self) -> AddressPlan:
        pins = pins_from_environment(self.pins)
        return choose_plan(self.routes, self.interface_addresses(), self.protected(), pins)


def clean_machine(**expected: Any) -> MachineCase:
    """A machine whose uplink, resolver and registries are all in 10.0.0.0/24."""
    return MachineCase(
        routes=[
            {"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"},
            {"dst": "10.0.0.0/24", "dev": "eth0"},
        ],
        addresses=["eth0 10.0.0.5/24"],
        resolv_conf="nameserver 10.0.0.53\n",
        registries=["10.0.0.80"],
        **expected,
    )


THIS_MACHINE_PLAN = plan("198.51.100.0/24", "198.18.0.0/24", "198.18.1.0/24")

MACHINES = {
    "clean machine: the documentation plan": clean_machine(plan=DOCUMENTATION_PLAN),
    "registries inside 203.0.113.0/24: management moves, nothing refused": MachineCase(
        plan=THIS_MACHINE_PLAN
    ),
    "host route into 203.0.113.0/24 (no longer a refusal)": MachineCase(
        routes=[*UPLINK_ROUTES, {"dst": "203.0.113.80", "gateway": "192.0.2.1", "dev": "eth0"}],
        registries=[],
        plan=THIS_MACHINE_PLAN,
    ),
    "route in another table counts too": MachineCase(
        routes=[*UPLINK_ROUTES, {"dst": "198.51.100.0/25", "dev": "wg0", "table": "51820"}],
        plan=plan("198.18.1.0/24", "198.18.0.0/24", "198.18.2.0/24"),
    ),
    "interface address without a route (noprefixroute) in the front range": MachineCase(
        addresses=[*UPLINK_ADDRESSES, "eth1 198.51.100.5/24"],
        registries=[],
        plan=plan("198.18.1.0/24", "198.18.0.0/24", "203.0.113.0/24"),
    ),
    "hosts-file entry in the backend range": MachineCase(
        hosts_file=HOSTS_FILE + "198.18.0.7 mirror.internal  # local mirror\n",
        plan=plan("198.51.100.0/24", "198.18.1.0/24", "198.18.2.0/24"),
    ),
    "resolver in the front range": MachineCase(
        resolv_conf="nameserver 198.51.100.53\n; nameserver 198.18.0.53\n",
        plan=plan("198.18.1.0/24", "198.18.0.0/24", "198.18.2.0/24"),
    ),
    "every documented range taken: benchmarking /24s in order, ClusterIP range skipped": MachineCase(
        routes=[
            *UPLINK_ROUTES,
            {"dst": "198.51.100.0/24", "dev": "eth1"},
            {"dst": "198.18.0.0/16", "dev": "eth2"},
        ],
        plan=plan("198.19.1.0/24", "198.19.2.0/24", "198.19.3.0/24"),
    ),
    "whole benchmarking range routed: shared address space": MachineCase(
        routes=[
            *UPLINK_ROUTES,
            {"dst": "198.51.100.0/24", "dev": "eth1"},
            {"dst": "198.18.0.0/15", "dev": "eth2"},
        ],
        plan=plan("100.64.0.0/24", "100.64.1.0/24", "100.64.2.0/24"),
    ),
    "pinned management range is honoured": MachineCase(
        pins={"LBPAIR_LAB_MGMT_CIDR": "10.77.0.0/24"},
        plan=plan("198.51.100.0/24", "198.18.0.0/24", "10.77.0.0/24"),
    ),
    "a pin taking another segment's documentation range moves that segment": clean_machine(
        pins={"LBPAIR_LAB_FRONT_CIDR": "198.18.0.0/24"},
        plan=plan("198.18.0.0/24", "192.0.2.0/24", "203.0.113.0/24"),
    ),
    "pinned range over a registry address is refused, naming both": MachineCase(
        pins={"LBPAIR_LAB_MGMT_CIDR": "203.0.113.0/24"},
        refusal=["mgmt network 203.0.113.0/24", "LBPAIR_LAB_MGMT_CIDR", "203.0.113.80 (package registry)"],
    ),
    "pinned range over the uplink is refused, naming the route and the address": MachineCase(
        pins={"LBPAIR_LAB_FRONT_CIDR": "192.0.2.0/24"},
        refusal=[
            "root route '192.0.2.0/24 dev eth0'",
            "address 192.0.2.2/24 of eth0",
            "LBPAIR_LAB_FRONT_CIDR",
        ],
    ),
    "pinned range over a resolver is refused": MachineCase(
        pins={"LBPAIR_LAB_BACK_CIDR": "10.255.255.0/24"},
        refusal=["10.255.255.53 (resolver in /etc/resolv.conf)"],
    ),
    "pins overlapping each other are refused": MachineCase(
        pins={"LBPAIR_LAB_FRONT_CIDR": "10.9.0.0/16", "LBPAIR_LAB_BACK_CIDR": "10.9.1.0/24"},
        refusal=["front network 10.9.0.0/16", "the back network 10.9.1.0/24 (LBPAIR_LAB_BACK_CIDR)"],
    ),
    "no free candidate at all is refused": MachineCase(
        routes=[
            *UPLINK_ROUTES,
            {"dst": "198.51.100.0/24", "dev": "eth1"},
            {"dst": "203.0.113.0/24", "dev": "eth1"},
            {"dst": "198.18.0.0/15", "dev": "eth2"},
            {"dst": "100.64.0.0/10", "dev": "tailscale0", "table": "52"},
        ],
        refusal=["no free range for the front network", "LBPAIR_LAB_FRONT_CIDR"],
    ),
}


@pytest.mark.parametrize("case", MACHINES.values(), ids=MACHINES.keys())
def test_the_chooser_picks_a_safe_plan_or_refuses_clearly(case: MachineCase) -> None:
    if case.refusal:
        with pytest.raises(AddressPlanError) as refused:
            case.choose()
        for phrase in case.refusal:
            assert phrase in str(refused.value)
        return
    chosen = case.choose()
    assert chosen == case.plan
    networks = list(chosen.networks.values())
    assert all(a == b or not a.overlaps(b) for a in networks for b in networks)
    assert not any(network.overlaps(SERVICE_CLUSTER_NETWORK) for network in networks)


def test_the_chooser_is_deterministic_and_explains_a_moved_range() -> None:
    case = MACHINES["registries inside 203.0.113.0/24: management moves, nothing refused"]
    assert {case.choose() for _ in range(3)} == {THIS_MACHINE_PLAN}
    lines = explain_plan(case.choose(), case.routes, case.interface_addresses(), case.protected(), {})
    assert lines[0].split()[:3] == ["front", "198.51.100.0/24", "documentation"]
    assert lines[2].startswith("mgmt  198.18.1.0/24")
    assert "203.0.113.0/24 is not free: protected address 203.0.113.80 (package registry)" in lines[2]


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("not-a-cidr", "is not an IPv4 network"),
        ("10.0.0.1/24", "has host bits set"),
        ("fd00::/64", "is not an IPv4 network"),
        ("10.0.0.0/25", "prefix length from /8 to /24"),
        ("8.8.8.0/24", "never a public"),
        ("224.0.0.0/24", "never a public"),
    ],
)
def test_a_malformed_pin_is_refused_naming_the_variable(value: str, phrase: str) -> None:
    with pytest.raises(AddressPlanError, match=f"LBPAIR_LAB_MGMT_CIDR=.*{re.escape(phrase)}"):
        pins_from_environment({"LBPAIR_LAB_MGMT_CIDR": value})


def test_an_empty_pin_means_choose() -> None:
    assert pins_from_environment({"LBPAIR_LAB_FRONT_CIDR": " ", "UNRELATED": "x"}) == {}


def test_candidates_start_with_the_documentation_ranges_and_are_all_24s() -> None:
    candidates = list(candidate_networks())
    assert [str(network) for network in candidates[:4]] == [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "198.18.0.0/24",
    ]
    assert SERVICE_CLUSTER_NETWORK not in candidates
    assert {network.prefixlen for network in candidates} == {24}
    assert len(set(candidates)) == len(candidates)


# --- the plan and moving samples onto it ---------------------------------------------------------------


def test_plan_derives_every_address_from_host_numbers_and_round_trips() -> None:
    assert THIS_MACHINE_PLAN.root_mgmt_address == ipaddress.IPv4Interface("198.18.1.1/24")
    assert [str(vip) for vip in THIS_MACHINE_PLAN.vips] == ["198.51.100.10", "198.51.100.20"]
    assert [str(THIS_MACHINE_PLAN.hosts[node].mgmt_address) for node in LB_NODES] == [
        "198.18.1.11",
        "198.18.1.12",
    ]
    assert str(THIS_MACHINE_PLAN.hosts["be2"].address(Segment.BACK)) == "198.18.0.12"
    assert str(THIS_MACHINE_PLAN.hosts["client"].interface(Segment.FRONT).address) == "198.51.100.100/24"
    recorded = json.loads(json.dumps(THIS_MACHINE_PLAN.as_dict()))
    assert AddressPlan.from_dict(recorded) == THIS_MACHINE_PLAN


def test_the_seed_sample_moves_onto_the_lab_plan_keeping_host_numbers() -> None:
    seed = [
        doc
        for doc in yaml.safe_load_all((REPO_ROOT / "config/samples/seed-tutorial.yaml").read_text())
        if doc
    ]

    moved = THIS_MACHINE_PLAN.translate_documents(seed)

    pair = next(doc for doc in moved if doc["kind"] == "LoadBalancerPair")
    assert [node["address"] for node in pair["spec"]["nodes"]] == ["198.18.1.11", "198.18.1.12"]
    assert [node["vrrpAddress"] for node in pair["spec"]["nodes"]] == ["198.51.100.11", "198.51.100.12"]
    assert pair["spec"]["vips"][0]["address"] == "198.51.100.10/24"
    original = next(doc for doc in seed if doc["kind"] == "LoadBalancerPair")
    assert original["spec"]["nodes"][0]["address"] == "203.0.113.11", "the sample itself is not changed"
    assert [node["hostKey"] for node in pair["spec"]["nodes"]] == [
        n["hostKey"] for n in original["spec"]["nodes"]
    ]


def test_translation_rewrites_addresses_in_every_string_and_prefix_lengths() -> None:
    elsewhere = plan("10.20.0.0/23", "10.30.0.0/24", "10.40.0.0/24")
    document = {
        "vip": "198.51.100.10/24",
        "node": "203.0.113.12",
        "url": "http://198.18.0.12:8443/security.txt",
        "servers": [{"address": "198.18.0.11", "port": 80}, "198.18.0.12:8080"],
        "198.51.100.11": "key",
        "untouched": ["127.0.0.1", "10.1.2.3/24", "999.1.2.3", "198.51.100.1.5", "v198.51.100.10", 7, None],
    }

    [moved] = elsewhere.translate_documents([document])

    assert moved == {
        "vip": "10.20.0.10/23",
        "node": "10.40.0.12",
        "url": "http://10.30.0.12:8443/security.txt",
        "servers": [{"address": "10.30.0.11", "port": 80}, "10.30.0.12:8080"],
        "10.20.0.11": "key",
        "untouched": ["127.0.0.1", "10.1.2.3/24", "999.1.2.3", "198.51.100.1.5", "v198.51.100.10", 7, None],
    }
    assert DOCUMENTATION_PLAN.translate_documents([document]) == [document]


@pytest.mark.parametrize("sample", SAMPLES, ids=[path.name for path in SAMPLES])
def test_samples_use_only_documentation_plan_addresses_so_they_move_with_the_lab(sample: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(sample.read_text()) if doc]
    text = json.dumps(documents)
    addresses = {ipaddress.IPv4Address(found) for found in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text)}
    assert addresses
    assert all(
        any(address in network for network in DOCUMENTATION_PLAN.networks.values()) for address in addresses
    )

    moved = json.dumps(plan("10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24").translate_documents(documents))

    assert not re.search(r"198\.51\.100\.|198\.18\.0\.|203\.0\.113\.", moved)


# --- what the machine must keep reaching (parsers and gathering, on a fake root) ------------------------


def write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_protected_addresses_come_from_hosts_resolvers_package_managers_and_the_variable(
    tmp_path: Path,
) -> None:
    write(tmp_path, "/etc/hosts", "127.0.0.1 localhost\n# 10.9.9.9 commented\n192.168.7.7 nas nas.lan\n")
    write(tmp_path, "/etc/resolv.conf", "search lan\nnameserver 10.255.255.53\nnameserver fd00::53\n")
    write(
        tmp_path,
        "/etc/apt/sources.list",
        "deb [signed-by=/k.gpg arch=amd64] http://apt.mirror.test/debian x main\n",
    )
    write(
        tmp_path,
        "/etc/apt/sources.list.d/debian.sources",
        "Types: deb\nURIs: http://deb.mirror.test/debian\n  https://sec.mirror.test/debian-security\n"
        "Suites: bookworm\n\nEnabled: no\nTypes: deb\nURIs: http://disabled.mirror.test/\n",
    )
    write(tmp_path, "/etc/apt/sources.list.d/off.list.disabled", "deb http://ignored.mirror.test/ x main\n")
    write(tmp_path, "/etc/apt/apt.conf.d/01proxy", 'Acquire::http::Proxy "http://10.3.3.3:3128/";\n')
    write(tmp_path, "/etc/pip.conf", "[global]\nindex-url = https://pypi.mirror.test/simple\n")
    write(tmp_path, "/home/dev/.config/go/env", "GOPROXY=https://goproxy.mirror.test|direct\nGOFLAGS=-x\n")
    environment = {
        "HOME": "/home/dev",
        "GOROOT": "/usr/lib/go",
        "PIP_EXTRA_INDEX_URL": "https://extra.mirror.test/simple",
        "https_proxy": "http://proxy.mirror.test:8080",
        "LBPAIR_LAB_PROTECT": "10.44.0.0/16, vpn.mirror.test",
    }
    answers = {
        "apt.mirror.test": ["172.16.0.1"],
        "deb.mirror.test": ["203.0.113.80"],
        "sec.mirror.test": ["203.0.113.80"],
        "pypi.mirror.test": ["172.16.0.2"],
        "extra.mirror.test": ["172.16.0.3"],
        "goproxy.mirror.test": ["172.16.0.4"],
        "proxy.mirror.test": ["172.16.0.5"],
        "vpn.mirror.test": ["100.100.0.1"],
    }
    asked: list[str] = []

    def resolve(name: str) -> list[ipaddress.IPv4Address]:
        asked.append(name)
        if name not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.IPv4Address(address) for address in answers[name]]

    protected, unresolved = machine.protected_addresses(environment, tmp_path, resolve)

    found = {str(entry.network): entry.source for entry in protected}
    assert found == {
        "127.0.0.1/32": "localhost in /etc/hosts",
        "192.168.7.7/32": "nas nas.lan in /etc/hosts",
        "10.255.255.53/32": "resolver in /etc/resolv.conf",
        "10.3.3.3/32": "apt proxy 10.3.3.3",
        "10.44.0.0/16": "in LBPAIR_LAB_PROTECT",
        "172.16.0.1/32": "apt source apt.mirror.test",
        "203.0.113.80/32": "apt source deb.mirror.test, apt source sec.mirror.test",
        "172.16.0.2/32": "pip index pypi.mirror.test",
        "172.16.0.3/32": "pip index extra.mirror.test",
        "172.16.0.4/32": "Go module proxy goproxy.mirror.test",
        "172.16.0.5/32": "proxy in https_proxy proxy.mirror.test",
        "100.100.0.1/32": "LBPAIR_LAB_PROTECT vpn.mirror.test",
    }
    default_urls = (*machine.PIP_DEFAULT_URLS, *machine.goproxy_urls(machine.GO_DEFAULT_PROXY))
    defaults = {machine.url_host(url) for url in default_urls} | {machine.GO_DEFAULT_SUMDB}
    assert defaults <= set(asked), "the package managers' default hosts are always protected"
    assert not {"disabled.mirror.test", "ignored.mirror.test"} & set(asked)
    assert len(unresolved) == len(defaults)
    assert all("Name or service not known" in line for line in unresolved)


def test_a_resolver_that_hangs_is_bounded_and_reported() -> None:
    def hang(_name: str) -> list[ipaddress.IPv4Address]:
        time.sleep(1.0)
        return [ipaddress.IPv4Address("192.0.2.9")]

    protected, unresolved = machine.resolve_all({"slow.test": ["apt source"]}, hang, timeout=0.1)

    assert protected == []
    assert unresolved == ["apt source slow.test: no answer within 0.1 s"]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://mirror.test/simple", "mirror.test"),
        ("http://user:pw@mirror.test:3128/", "mirror.test"),
        ("mirror.test:3128", "mirror.test"),
        ("10.1.1.1", "10.1.1.1"),
        ("file:/srv/wheels", None),
        ("/opt/wheels", None),
        ("", None),
    ],
)
def test_url_host(url: str, host: str | None) -> None:
    assert machine.url_host(url) == host


def test_go_settings_parsers() -> None:
    assert machine.goproxy_urls("https://a.test,https://b.test|direct") == [
        "https://a.test",
        "https://b.test",
    ]
    assert machine.goproxy_urls("off") == []
    assert machine.gosumdb_url("sum.mirror.test+abc https://sumdb.mirror.test") == "https://sumdb.mirror.test"
    assert machine.gosumdb_url("sum.mirror.test+abc") == "sum.mirror.test"
    assert machine.gosumdb_url("off") is None
