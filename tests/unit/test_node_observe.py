"""Parsing of the node agent's probe output, shaped like a lab node's output."""

from __future__ import annotations

import io
import ipaddress
import tarfile

import pytest

from lbpair.model.files import ManagedFile
from lbpair.nodes.observe import ManagedFileState, parse_probe
from lbpair.nodes.operations import build_bundle

PROBE_OUTPUT = """\
== hostname
lb1
== services
nginx active
keepalived inactive
== addresses
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 198.51.100.11/24 brd 198.51.100.255 scope global eth0\\       valid_lft forever
2: eth0    inet 198.51.100.10/24 scope global secondary eth0\\       valid_lft forever preferred_lft forever
== files
aaaa bbbb /etc/nginx/nginx.conf
cccc cccc /etc/nginx/lbpair.d/www.conf
dddd missing /etc/keepalived/keepalived.conf
== live
0123abcd
== vrrp
[{"data":{"iname":"VI_1","state":2,"effective_priority":150},"stats":{}}]
"""


def test_probe_reports_vip_services_files_and_vrrp_state() -> None:
    observation = parse_probe(PROBE_OUTPUT)

    assert observation.hostname == "lb1"
    assert observation.live_hash == "0123abcd"
    assert observation.running("nginx")
    assert not observation.running("keepalived")
    assert observation.holds(ipaddress.IPv4Address("198.51.100.10"))
    assert not observation.holds(ipaddress.IPv4Address("198.51.100.20"))
    drifted = {path for path, state in observation.managed_files.items() if state.drifted}
    assert drifted == {"/etc/nginx/nginx.conf", "/etc/keepalived/keepalived.conf"}
    assert observation.managed_files["/etc/keepalived/keepalived.conf"] == ManagedFileState("dddd", None)
    assert [(i.name, i.state, i.effective_priority) for i in observation.vrrp] == [("VI_1", "MASTER", 150)]


def test_torn_keepalived_dump_reads_as_no_vrrp_data() -> None:
    torn = PROBE_OUTPUT.replace('"stats":{}}]', '"sta')

    assert parse_probe(torn).vrrp == ()


VRRP_DUMP = '[{"data":{"iname":"VI_1","state":2,"effective_priority":150},"stats":{}}]'


@pytest.mark.parametrize(
    "dump",
    [
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser's recursion limit
        '[{"data":' * 50_000 + "{}" + "}]" * 50_000,
        "\x00\xff garbage \ufffd",
        VRRP_DUMP[:-7],  # cut off
        '{"data":{"iname":"VI_1","state":2,"effective_priority":150}}',  # not a list
        '[{"data":[1,2,3]}]',
        '[{"data":{"iname":"VI_1","state":"MASTER","effective_priority":150}}]',
        '[{"data":{"iname":"VI_1","state":true,"effective_priority":150}}]',
        '[{"data":{"iname":7,"state":2,"effective_priority":150}}]',
        '[{"data":{"iname":"VI_1","state":2}}]',
        '[{"data":{"iname":"VI_1","state":2,"effective_priority":1' + "0" * 5000 + "}}]",  # too many digits
        "[" + ",".join([VRRP_DUMP[1:-1]] * 20_000) + "]",  # more than the agent ever sends
    ],
    ids=[
        "deep-lists",
        "deep-objects",
        "garbage",
        "cut-off",
        "not-a-list",
        "data-not-an-object",
        "state-a-string",
        "state-a-boolean",
        "name-a-number",
        "priority-missing",
        "huge-number",
        "oversized",
    ],
)
def test_an_unreadable_vrrp_dump_reads_as_unknown_and_the_rest_of_the_probe_counts(dump: str) -> None:
    observation = parse_probe(PROBE_OUTPUT.replace(VRRP_DUMP, dump))

    assert observation.vrrp == ()
    assert observation.hostname == "lb1"
    assert observation.holds(ipaddress.IPv4Address("198.51.100.10"))


def test_bundle_is_deterministic_and_carries_modes_and_manifest() -> None:
    files = [
        ManagedFile("/etc/nginx/nginx.conf", "events {}\n"),
        ManagedFile("/etc/keepalived/check.sh", "#!/bin/sh\n", 0o755),
    ]

    bundle = build_bundle(files)

    assert bundle == build_bundle(list(reversed(files)))
    with tarfile.open(fileobj=io.BytesIO(bundle)) as archive:
        members = {member.name: member for member in archive.getmembers()}
        manifest = archive.extractfile("manifest")
        assert manifest is not None
        manifest_lines = manifest.read().decode().splitlines()
    assert members["files/etc/keepalived/check.sh"].mode == 0o755
    assert manifest_lines == [
        f"0755 {files[1].sha256} /etc/keepalived/check.sh",
        f"0644 {files[0].sha256} /etc/nginx/nginx.conf",
    ]
