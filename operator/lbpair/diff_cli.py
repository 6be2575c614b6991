"""`python -m lbpair diff`: what local manifests would change on a node, for reviews and CI of a GitOps repo.

Renders LoadBalancerPair, Upstream and VirtualHost manifests with the operator's own build and render
(Secrets in the manifests are used as given: no label needed), for one node of the pair, and prints the
unified diff (lbpair.filediff: bounded, secrets never shown) against either

- `--against-dir DIR`: files at DIR/<absolute path>, e.g. what `python -m lbpair render` wrote for the
  main branch (offline: no cluster, no node), or
- `--against-node`: what the node runs, read over SSH with the pair's pinned host key (the node agent's
  probe and read-files: read-only, whichever pair has the node).

Exit status as diff(1) and kubectl diff: 0 no difference, 1 differences, 2 an error (unreadable manifests,
a pair the operator would reject, attached objects it would leave out, a node that cannot be read).
`python -m lbpair render ... --out DIR` writes the rendered files of the node instead.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lbpair.build import PairBuild, PairRejected, PairResources, build_pair
from lbpair.filediff import LiveFile, diff_config, is_secret
from lbpair.model.common import ObjectRef, attached_pair
from lbpair.model.files import ManagedFile
from lbpair.model.secret import HeldSecret
from lbpair.nodes.client import NodeError
from lbpair.nodes.operations import observe_node, read_managed_files
from lbpair.nodes.ssh import SSHNodeClient, SSHTarget
from lbpair.preview import live_files
from lbpair.resolver import lookup_ipv4

DIFFERENT, ERROR = 1, 2
KINDS = ("LoadBalancerPair", "Upstream", "VirtualHost", "Secret")
UNUSED_SSH_KEY = base64.b64encode(b"(rendering needs no SSH key)").decode()


class UsageError(Exception):
    """What the user gave cannot be diffed; the message says why (exit 2)."""


@dataclass(frozen=True)
class Manifests:
    """The objects of the files given with -f, by kind, each with its namespace filled in."""

    objects: dict[str, list[dict[str, Any]]]

    @classmethod
    def load(cls, paths: Sequence[str], namespace: str) -> Manifests:
        objects: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for document in _documents(paths):
            if isinstance(document, dict) and document.get("kind") in objects:
                metadata = document.get("metadata")
                if not isinstance(metadata, dict) or not metadata.get("name"):
                    raise UsageError(f"{document['kind']} without metadata.name")
                metadata.setdefault("namespace", namespace)
                objects[document["kind"]].append(document)
        return cls(objects)

    def pair(self, name: str | None) -> dict[str, Any]:
        pairs = [
            p for p in self.objects["LoadBalancerPair"] if name is None or p["metadata"].get("name") == name
        ]
        if len(pairs) != 1:
            found = ", ".join(str(p["metadata"].get("name")) for p in self.objects["LoadBalancerPair"])
            named = f" named {name}" if name else ""
            raise UsageError(f"need exactly one LoadBalancerPair{named}; found: {found or 'none'}")
        return pairs[0]

    def resources(self, pair: dict[str, Any], ssh_key: str | None) -> PairResources:
        """The pair's resources as the operator's build reads them. Without the pair's SSH key (neither in
        the manifests nor given), a stand-in: rendering does not use it."""
        reference = ObjectRef(pair["metadata"]["namespace"], pair["metadata"]["name"])

        def attached(kind: str) -> list[dict[str, Any]]:
            return [
                body
                for body in self.objects[kind]
                if attached_pair(body["metadata"]["namespace"], body.get("spec") or {}) == reference
            ]

        secrets = {
            ObjectRef(s["metadata"]["namespace"], s["metadata"]["name"]): _held(s)
            for s in self.objects["Secret"]
        }
        key_ref = ((pair.get("spec") or {}).get("ssh") or {}).get("privateKeySecretRef") or {}
        key_secret = ObjectRef(reference.namespace, str(key_ref.get("name")))
        key_name = str(key_ref.get("key"))
        if ssh_key is not None or key_secret not in secrets:
            value = base64.b64encode(ssh_key.encode()).decode() if ssh_key is not None else UNUSED_SSH_KEY
            secrets[key_secret] = HeldSecret("Opaque", frozenset({key_name}), {key_name: value})
        return PairResources(
            pair=pair,
            upstreams=attached("Upstream"),
            virtual_hosts=attached("VirtualHost"),
            secrets=lambda ref, _key: secrets.get(ref),
            namespace_labels=lambda name: {"kubernetes.io/metadata.name": name},
            resolve=lambda name: list(lookup_ipv4(name)),
        )


def _documents(paths: Sequence[str]) -> Iterator[Any]:
    for path in paths:
        files = sorted(Path(path).glob("*.y*ml")) if Path(path).is_dir() else [Path(path)]
        for file in files:
            try:
                text = sys.stdin.read() if str(file) == "-" else file.read_text()
                yield from yaml.safe_load_all(text)
            except (OSError, yaml.YAMLError) as error:
                raise UsageError(f"{file}: {error}") from error


def _held(secret: Mapping[str, Any]) -> HeldSecret:
    data = {key: str(value) for key, value in (secret.get("data") or {}).items()}
    for key, value in (secret.get("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    return HeldSecret(str(secret.get("type") or "Opaque"), frozenset(data), data)


def build_of(resources: PairResources) -> PairBuild:
    """The pair's build, or UsageError naming what the operator would reject or leave out."""
    build = build_pair(resources)
    if isinstance(build, PairRejected):
        raise UsageError(f"the operator would reject the pair ({build.reason}): {build.message}")
    if build.problems:
        lines = [str(problem) for problem in build.problems]
        raise UsageError("the operator would leave these objects out:\n  " + "\n  ".join(lines))
    return build


def node_files(build: PairBuild, node: str | None) -> tuple[str, list[ManagedFile]]:
    """The files of `node` (default: the backup, the node of lower priority, as a preview validates on)."""
    nodes = build.pair.spec.nodes
    name = node or min(nodes, key=lambda each: each.priority).name
    rendered = build.render()
    if name not in rendered:
        raise UsageError(f"the pair has no node {name}; its nodes: {', '.join(each.name for each in nodes)}")
    return name, list(rendered[name].files.values())


def files_in(directory: Path) -> dict[str, LiveFile]:
    """The files under `directory` as a node would have them at /<path below it>."""
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    live = {}
    for file in sorted(path for path in directory.rglob("*") if path.is_file()):
        mode, data = file.stat().st_mode & 0o777, file.read_bytes()
        content = None if is_secret(mode) else data.decode(errors="replace")
        live[f"/{file.relative_to(directory)}"] = LiveFile(mode, hashlib.sha256(data).hexdigest(), content)
    return live


def files_on_node(build: PairBuild, name: str, files: Sequence[ManagedFile]) -> dict[str, LiveFile]:
    """What the node runs, over SSH with the pair's pinned host key and user."""
    spec = build.pair.spec
    node = next(each for each in spec.nodes if each.name == name)
    target = SSHTarget(
        node.name,
        node.address,
        node.ssh_port,
        spec.ssh.user,
        node.host_key,
        build.ssh_private_key,
        spec.ssh.sudo,
    )
    client = SSHNodeClient(target)
    try:
        observation = observe_node(client, build.layout.units)
        return live_files(files, observation, lambda paths: read_managed_files(client, paths))
    except NodeError as error:
        raise UsageError(f"{name}: {error}") from error
    finally:
        client.close()


def write_files(directory: Path, files: Sequence[ManagedFile]) -> None:
    for managed in files:
        path = directory / managed.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(managed.content)
        path.chmod(managed.mode)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m lbpair", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    for command, help_text in (
        ("diff", "diff the rendered files against a node's"),
        ("render", "write the rendered files"),
    ):
        sub = commands.add_parser(command, help=help_text)
        sub.add_argument(
            "-f", "--filename", action="append", required=True, help="manifest file or directory; - for stdin"
        )
        sub.add_argument("--pair", help="the LoadBalancerPair's name (needed when the files hold several)")
        sub.add_argument("-n", "--namespace", default="default", help="for objects that name none")
        sub.add_argument("--node", help="which node's files (default: the one of lower priority)")
        if command == "render":
            sub.add_argument("--out", required=True, type=Path, help="directory to write DIR/<path> into")
            continue
        against = sub.add_mutually_exclusive_group(required=True)
        against.add_argument("--against-dir", type=Path, help="the files as DIR/<absolute path>")
        against.add_argument("--against-node", action="store_true", help="the node's files, over SSH")
        sub.add_argument(
            "--ssh-key", type=Path, help="private key for --against-node (else the pair's Secret in -f)"
        )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        manifests = Manifests.load(args.filename, args.namespace)
        ssh_key = args.ssh_key.read_text() if getattr(args, "ssh_key", None) else None
        build = build_of(manifests.resources(manifests.pair(args.pair), ssh_key))
        node, files = node_files(build, args.node)
        if args.command == "render":
            write_files(args.out, files)
            return 0
        live = files_in(args.against_dir) if args.against_dir else files_on_node(build, node, files)
    except (UsageError, OSError) as error:
        print(f"lbpair diff: {error}", file=sys.stderr)
        return ERROR
    diff = diff_config(files, live)
    sys.stdout.write(diff.diff.text)
    print(f"# {node}: {diff.summary}", file=sys.stderr)
    return DIFFERENT if diff.any else 0
