"""`python -m lbpair.adopt`: print the manifests of a hand-built nginx + keepalived pair.

    python -m lbpair.adopt --node 203.0.113.11 --node 203.0.113.12 \
        --known-hosts ~/.ssh/known_hosts --key ~/.ssh/id_ed25519 --name seed > seed.yaml

Connects to each node with its host key pinned from --known-hosts (a node that is not listed, or that
presents another key, is refused before any credential is sent), reads nginx's configuration (includes
resolved) and keepalived.conf, and prints YAML: a comment block listing every directive that is not
expressed (also on stderr), then the documents. Exit status: 0 printed, 1 error, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lbpair.adopt.importer import import_nodes
from lbpair.adopt.keepalived_conf import KeepalivedSyntaxError
from lbpair.adopt.keepalived_map import KeepalivedImportError
from lbpair.adopt.manifests import AdoptError, NodeTarget, PairOptions
from lbpair.adopt.nginx_conf import NginxConfError
from lbpair.adopt.node_files import NodeFiles, find_host_key, read_node
from lbpair.model.node_profile import NodeProfile
from lbpair.nodes.client import NodeError
from lbpair.nodes.ssh import SSHNodeClient, SSHTarget

_PROFILE = NodeProfile()


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lbpair.adopt", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--node", action="append", required=True, metavar="HOST",
        help="a node's SSH address (give both nodes of the pair: --node A --node B)",
    )  # fmt: skip
    parser.add_argument("--known-hosts", type=Path, required=True, help="known_hosts file pinning the nodes")
    parser.add_argument("--key", type=Path, required=True, help="SSH private key file")
    parser.add_argument("--user", default="root", help="SSH user (default root)")
    parser.add_argument("--port", type=int, default=22, help="SSH port (default 22)")
    parser.add_argument(
        "--sudo", action="store_true", help="read through sudo -n (for a user other than root)"
    )
    parser.add_argument("--name", default="adopted", help="the LoadBalancerPair's name (default adopted)")
    parser.add_argument("--namespace", help="namespace of the printed objects (default: none, kubectl's)")
    parser.add_argument("--ssh-secret", default="lb-ssh", help="Secret holding the SSH key (default lb-ssh)")
    parser.add_argument("--ssh-secret-key", default="ssh-privatekey", help="its key (default ssh-privatekey)")
    parser.add_argument("--nginx-conf", default=_PROFILE.nginx_config_path)
    parser.add_argument("--keepalived-conf", default=_PROFILE.keepalived_config_path)
    arguments = parser.parse_args(argv)
    if len(arguments.node) > 2:  # noqa: PLR2004 - a pair
        parser.error("a pair has two nodes: give --node at most twice")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    try:
        known_hosts = arguments.known_hosts.read_text()
        private_key = arguments.key.read_text()
        targets = [_target(known_hosts, address, arguments) for address in arguments.node]
        files = [_read(target, private_key, arguments) for target in targets]
        options = PairOptions(
            arguments.name, arguments.namespace, arguments.user,
            arguments.ssh_secret, arguments.ssh_secret_key, ssh_sudo=arguments.sudo,
        )  # fmt: skip
        manifests = import_nodes(options, targets, files, arguments.keepalived_conf)
    except (
        OSError,
        NodeError,
        KeepalivedSyntaxError,
        KeepalivedImportError,
        NginxConfError,
        AdoptError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for note in manifests.notes:
        print(f"not expressed: {note}", file=sys.stderr)
    sys.stdout.write(manifests.to_yaml())
    return 0


def _target(known_hosts: str, address: str, arguments: argparse.Namespace) -> NodeTarget:
    host_key = find_host_key(known_hosts, address, arguments.port)
    if host_key is None:
        raise AdoptError(f"{address} is not in {arguments.known_hosts}; its host key must be pinned there")
    return NodeTarget(address, arguments.port, host_key)


def _read(target: NodeTarget, private_key: str, arguments: argparse.Namespace) -> NodeFiles:
    client = SSHNodeClient(
        SSHTarget(
            name=target.address, address=target.address, port=target.port, user=arguments.user,
            host_key=target.host_key, private_key_pem=private_key, sudo=arguments.sudo,
        )
    )  # fmt: skip
    try:
        return read_node(client, arguments.nginx_conf, arguments.keepalived_conf)
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
