"""Rendered configuration of the samples, compared with golden files and checked by the real `nginx -t`
and `keepalived -t`.

Regenerate the golden files after an intended change with LBPAIR_UPDATE_GOLDENS=1 and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lbpair.render import RenderedNode, render_pair
from tests.unit.samples import NAMESPACE, Sample, sample

pytestmark = pytest.mark.golden

GOLDEN_DATA = Path(__file__).parent / "data"
UPDATE = os.environ.get("LBPAIR_UPDATE_GOLDENS") == "1"
CASES = {
    "seed": ("seed-tutorial.yaml",),
    "active-active": ("active-active.yaml",),
    "tls": ("seed-tutorial.yaml", "tls-virtualhost.yaml"),
    "firewall": ("seed-tutorial.yaml",),
    "service": ("seed-tutorial.yaml", "service-upstream.yaml"),
}
# Cases that are a sample with fields set, as a user would edit it.
FIREWALL = {
    "enabled": True,
    "sshSourceCIDRs": ["203.0.113.0/24"],
    "listenerSourceCIDRs": ["198.51.100.0/24", "192.0.2.0/24"],
}
EDITS: dict[str, dict[str, object]] = {"firewall": {"firewall": FIREWALL}}
# Absolute directories of the default node profile; the validators see them under a temporary root.
NODE_DIRECTORIES = re.compile(
    r'(?<=[ "])(?=(/etc/nginx|/etc/keepalived|/var/log/nginx|/var/cache/nginx|/run)/)'
)


def rendered(case: str) -> list[RenderedNode]:
    resources = sample(*CASES[case])
    resources.pair["spec"].update(EDITS.get(case, {}))
    result = resources.build()
    assert result.problems == []
    return list(render_pair(result.state).values())


def golden_files(case: str) -> dict[str, str]:
    """Relative path (node/absolute path) → content, as stored."""
    root = GOLDEN_DATA / case
    return {
        str(path.relative_to(root)): path.read_text() for path in sorted(root.rglob("*")) if path.is_file()
    }


def as_golden(nodes: list[RenderedNode]) -> dict[str, str]:
    return {f"{node.name}{path}": file.content for node in nodes for path, file in node.files.items()}


def install(node: RenderedNode, root: Path) -> None:
    """Write the node's files under `root`, with the paths inside them moved under `root` too."""
    for path, file in node.files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(NODE_DIRECTORIES.sub(str(root), file.content))
        target.chmod(file.mode)
    shutil.copy("/etc/nginx/mime.types", root / "etc/nginx/mime.types")
    for directory in ("var/log/nginx", "run", "var/cache/nginx/lbpair"):
        (root / directory).mkdir(parents=True, exist_ok=True)


def nginx_test(root: Path) -> subprocess.CompletedProcess[str]:
    command = [
        "nginx",
        "-t",
        "-q",
        "-e",
        str(root / "var/log/nginx/error.log"),
        "-c",
        str(root / "etc/nginx/nginx.conf"),
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def keepalived_test(root: Path) -> subprocess.CompletedProcess[str]:
    command = ["keepalived", "-t", "-l", "-f", str(root / "etc/keepalived/keepalived.conf")]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def nft_check(path: Path) -> subprocess.CompletedProcess[str]:
    """`nft -c -f` (check, never load) in a network namespace of its own: the machine's rules are not
    even read."""
    command = ["unshare", "--net", "nft", "-c", "-f", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def rulesets(root: Path) -> list[Path]:
    return sorted(root.rglob("*.nft"))


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    return tmp_path


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden_files(case: str) -> None:
    actual = as_golden(rendered(case))
    if UPDATE:
        shutil.rmtree(GOLDEN_DATA / case, ignore_errors=True)
        for relative, content in actual.items():
            (GOLDEN_DATA / case / relative).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN_DATA / case / relative).write_text(content)

    assert actual == golden_files(case)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_files_pass_nginx_and_keepalived_checks(case: str, node_root: Path) -> None:
    for node in rendered(case):
        install(node, node_root / node.name)

        nginx = nginx_test(node_root / node.name)
        keepalived = keepalived_test(node_root / node.name)

        assert nginx.returncode == 0, nginx.stderr
        assert "[warn]" not in nginx.stderr, nginx.stderr  # a warning is a config we did not mean
        assert keepalived.returncode == 0, keepalived.stdout + keepalived.stderr
        for ruleset in rulesets(node_root / node.name):
            nft = nft_check(ruleset)
            assert nft.returncode == 0, nft.stderr


def test_the_firewall_case_has_a_ruleset_on_each_node(node_root: Path) -> None:
    """The nft check above is not vacuous: the firewall case installs one ruleset per node."""
    for node in rendered("firewall"):
        install(node, node_root / node.name)

    assert [path.name for path in rulesets(node_root)] == ["lbpair-firewall.nft"] * 2


def test_nginx_check_rejects_a_broken_file(node_root: Path) -> None:
    node = rendered("seed")[0]
    install(node, node_root)
    config = node_root / "etc/nginx/nginx.conf"
    config.write_text(config.read_text().replace("worker_connections 65535;", "worker_connections 65535"))

    result = nginx_test(node_root)

    assert result.returncode != 0
    assert "worker_connections" in result.stderr or "unexpected" in result.stderr


def test_keepalived_check_rejects_a_broken_file(node_root: Path) -> None:
    node = rendered("seed")[0]
    install(node, node_root)
    config = node_root / "etc/keepalived/keepalived.conf"
    config.write_text(config.read_text().replace("priority 101", "priority 300"))

    result = keepalived_test(node_root)

    assert result.returncode != 0


def test_nft_check_rejects_a_broken_ruleset(node_root: Path) -> None:
    node = rendered("firewall")[0]
    install(node, node_root)
    [ruleset] = rulesets(node_root)
    ruleset.write_text(ruleset.read_text().replace("ip protocol vrrp accept", "ip protocol vrrp acept"))

    result = nft_check(ruleset)

    assert result.returncode != 0
    assert "acept" in result.stderr


def many_hosts(count: int, *, long_names: bool = False) -> Sample:
    """The seed pair with `count` more VirtualHosts, names of every shape (long, wildcard, many labels);
    with `long_names`, every host also has a name of about DNS's limit of 253 characters."""
    resources = sample("seed-tutorial.yaml")
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 49, "com"])  # 253 characters, DNS's limit
    for number in range(count):
        names = [f"site{number}.team{number % 37}.example.com", f"*.site{number}.example.net"]
        if number == 0:
            names.append(longest)
        elif long_names:
            names.append(f"{'a' * 63}.{'b' * 63}.{'c' * 63}.s{number:05}.{'d' * 42}.com"[:253])
        resources.virtual_hosts.append(
            {
                "apiVersion": "lb.lbpair.dev/v1alpha1",
                "kind": "VirtualHost",
                "metadata": {"name": f"site{number}", "namespace": NAMESPACE},
                "spec": {
                    "pairRef": {"name": "seed"},
                    "serverNames": names,
                    "locations": [{"path": "/", "upstreamRef": {"name": "lb-www"}}],
                },
            }
        )
    return resources


@pytest.mark.parametrize(("count", "long_names"), [(500, False), (5000, False), (5000, True)])
def test_many_hosts_pass_nginx_t_without_warnings(count: int, long_names: bool, node_root: Path) -> None:
    build = many_hosts(count, long_names=long_names).build()
    assert build.problems == []
    node = next(iter(render_pair(build.state).values()))
    install(node, node_root)

    nginx = nginx_test(node_root)

    assert nginx.returncode == 0, nginx.stderr
    assert "[warn]" not in nginx.stderr, nginx.stderr


def test_the_longest_proxy_headers_allowed_pass_nginx_t_without_warnings(node_root: Path) -> None:
    """32 headers on the VirtualHost and 32 more on a location, each name of the 64 characters the schema
    allows: the proxy headers hash is sized for them."""
    resources = sample("seed-tutorial.yaml")
    www = resources.vhost("www")["spec"]

    def headers(prefix: str) -> list[dict[str, str]]:
        return [{"name": f"{prefix}{number:02}".ljust(64, "x"), "value": "v"} for number in range(32)]

    www["proxy"] = {"headers": headers("X-Host-")}
    www["locations"][0]["proxy"] = {"headers": headers("X-Location-")}
    build = resources.build()
    assert build.problems == []
    install(next(iter(render_pair(build.state).values())), node_root)

    nginx = nginx_test(node_root)

    assert nginx.returncode == 0, nginx.stderr
    assert "[warn]" not in nginx.stderr, nginx.stderr
