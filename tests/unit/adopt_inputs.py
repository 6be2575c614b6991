"""The seed tutorial's hand-built files (tests/golden/inputs/adopt-seed) as the adopt command reads them from
two nodes, for the adopt unit tests."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from lbpair.adopt.importer import import_nodes
from lbpair.adopt.manifests import Manifests, NodeTarget, PairOptions
from lbpair.adopt.node_files import NodeFiles

SEED_FILES = Path(__file__).resolve().parents[1] / "golden" / "inputs" / "adopt-seed"
NGINX_MAIN = "/etc/nginx/nginx.conf"
KEEPALIVED = "/etc/keepalived/keepalived.conf"
# The seed sample's (config/samples/seed-tutorial.yaml) node addresses and host keys.
TARGETS = (
    NodeTarget(
        "203.0.113.11", 22, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILowQt152KPplgGeU/c9oFKJCnRyFsOLuIWUMnDU0Ltz"
    ),
    NodeTarget(
        "203.0.113.12", 22, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKh1YK6aOJolXd1fyDHqpCFd2Xnme9wVg0LqF7LFbxJj"
    ),
)
OPTIONS = PairOptions("seed", "demo", "root", "lb-ssh", "ssh-privatekey")


def seed_nginx() -> dict[str, str]:
    return {
        NGINX_MAIN: (SEED_FILES / "nginx.conf").read_text(),
        "/etc/nginx/vhosts/LB.conf": (SEED_FILES / "LB.conf").read_text(),
    }


def seed_node(number: int, nginx: dict[str, str] | None = None, keepalived: str | None = None) -> NodeFiles:
    """Node lb<number> as read: the seed's files, its own keepalived.conf, eth0 on the front network."""
    return NodeFiles(
        nginx_main=NGINX_MAIN,
        nginx=seed_nginx() if nginx is None else nginx,
        keepalived=(SEED_FILES / f"keepalived-lb{number}.conf").read_text()
        if keepalived is None
        else keepalived,
        addresses={"eth0": [ipaddress.IPv4Interface(f"198.51.100.1{number}/24")]},
    )


def import_seed(*nodes: NodeFiles) -> Manifests:
    files = list(nodes) or [seed_node(1), seed_node(2)]
    return import_nodes(OPTIONS, TARGETS[: len(files)], files, KEEPALIVED)
