"""What was imported -> LoadBalancerPair, Upstream, VirtualHost (and VRRP Secret) documents that the
project's own models accept, so `kubectl apply` of them cannot be refused for a value (pure).

Every value read from a node reaches a document only through the model: a field the model refuses is
taken out and listed (`spec.servers[0].failTimeout: String should match pattern ...; left out`), and the
object validated again; an object that cannot be made valid that way is left out as a whole and listed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lbpair.adopt.keepalived_map import KeepalivedImport
from lbpair.adopt.nginx_http import HttpImport
from lbpair.adopt.nginx_servers import ServersImport, object_name
from lbpair.adopt.notes import Note
from lbpair.model import API_VERSION, SECRET_LABEL, LoadBalancerPair, Upstream, VirtualHost
from lbpair.model.base import field_path
from lbpair.model.patterns import VRRP_AUTH_PASS_PATTERN

MAX_REPAIRS = 200
VRRP_SECRET_KEY = "password"  # noqa: S105 - the key's name in the Secret, not a password
VALIDATION_NAMESPACE = "default"
_MISSING = object()


class AdoptError(ValueError):
    """Nothing usable can be printed (a pair the model refuses in a field it cannot do without)."""


@dataclass(frozen=True)
class NodeTarget:
    """How the operator will reach a node: what the import command connected with."""

    address: str
    port: int
    host_key: str


@dataclass(frozen=True)
class PairOptions:
    name: str
    namespace: str | None
    ssh_user: str
    ssh_secret: str
    ssh_secret_key: str
    ssh_sudo: bool = False


@dataclass
class Manifests:
    documents: list[dict[str, Any]] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def to_yaml(self) -> str:
        """The documents, preceded by a comment block listing every note."""
        header = ["# Imported by `python -m lbpair.adopt`. Not expressed, or expressed differently:"]
        header += [f"#   {note}" for note in self.notes] or ["#   (nothing)"]
        body = yaml.safe_dump_all(self.documents, sort_keys=False, default_flow_style=False)
        return "\n".join(header) + "\n---\n" + body


def build_manifests(
    options: PairOptions,
    targets: list[NodeTarget],
    http: HttpImport,
    servers: ServersImport,
    keepalived: KeepalivedImport | None,
) -> Manifests:
    result = Manifests(notes=[*http.notes, *servers.notes])
    upstream_names = upstream_object_names(http)
    objects: list[tuple[type[BaseModel], dict[str, Any]]] = []
    if keepalived is not None:
        result.notes.extend(keepalived.notes)
        pair = _pair(options, targets, http, servers, keepalived)
        if keepalived.auth_pass is not None:
            result.documents.append(_vrrp_secret(options, keepalived.auth_pass))
        objects.append((LoadBalancerPair, pair))
    else:
        result.notes.append(
            Note("import", "LoadBalancerPair", "not printed: it needs both nodes (--node twice)")
        )
    for nginx_name, spec in http.upstreams.items():
        objects.append((Upstream, _attached(options, "Upstream", upstream_names[nginx_name], spec)))
    for name, spec in servers.virtual_hosts.items():
        objects.append((VirtualHost, _attached(options, "VirtualHost", name, spec)))
    for model, document in objects:
        valid = _validated(model, document, result.notes)
        if valid is not None:
            result.documents.append(valid)
        elif model is LoadBalancerPair:
            raise AdoptError(
                "the LoadBalancerPair cannot be made valid: " + "; ".join(map(str, result.notes[-3:]))
            )
    return result


def upstream_object_names(http: HttpImport) -> dict[str, str]:
    """Each upstream block's nginx name -> its Upstream's object name."""
    names: dict[str, str] = {}
    for nginx_name in http.upstreams:
        names[nginx_name] = object_name(nginx_name, names.values())
    return names


def _pair(
    options: PairOptions,
    targets: list[NodeTarget],
    http: HttpImport,
    servers: ServersImport,
    keepalived: KeepalivedImport,
) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    for own, target in zip(keepalived.nodes, targets, strict=True):
        node: dict[str, Any] = {"name": own["name"], "address": target.address, "hostKey": target.host_key}
        if target.port != 22:  # noqa: PLR2004 - SSH's port, the field's default
            node["sshPort"] = target.port
        node.update({key: value for key, value in own.items() if key != "name"})
        nodes.append(node)
    shared = {**keepalived.shared, "vrrp": dict(keepalived.shared["vrrp"])}
    if keepalived.auth_pass is not None:
        secret = {"name": f"{options.name}-vrrp-auth", "key": VRRP_SECRET_KEY}
        shared["vrrp"]["authentication"] = {"secretRef": secret}
    spec: dict[str, Any] = {
        "nodes": nodes,
        "ssh": {
            "user": options.ssh_user,
            "privateKeySecretRef": {"name": options.ssh_secret, "key": options.ssh_secret_key},
            **({"sudo": True} if options.ssh_sudo else {}),
        },
        "mode": "ActivePassive",
        **shared,
        "nginx": http.settings,
        "listeners": [{"port": port, "protocol": "HTTP"} for port in sorted(servers.ports)],
    }
    if http.node_profile:
        spec["nodeProfile"] = http.node_profile
    return _document(options, "LoadBalancerPair", options.name, spec)


def _vrrp_secret(options: PairOptions, password: str) -> dict[str, Any]:
    if not re.fullmatch(VRRP_AUTH_PASS_PATTERN.strip("^$"), password):
        raise AdoptError("auth_pass must be 1-8 characters of [A-Za-z0-9._+=-] (the operator's allow-list)")
    metadata: dict[str, Any] = {"name": f"{options.name}-vrrp-auth", "labels": {SECRET_LABEL: "true"}}
    if options.namespace:
        metadata["namespace"] = options.namespace
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
            "stringData": {VRRP_SECRET_KEY: password}}  # fmt: skip


def _attached(options: PairOptions, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _document(options, kind, name, {"pairRef": {"name": options.name}, **spec})


def _document(options: PairOptions, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    metadata = {"name": name, **({"namespace": options.namespace} if options.namespace else {})}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def _validated(model: type[BaseModel], document: dict[str, Any], notes: list[Note]) -> dict[str, Any] | None:
    """`document` once the model accepts it, each refused field taken out (and noted); None if the object
    cannot be made valid that way."""
    label = f"{document['kind']} {document['metadata']['name']}"
    for _ in range(MAX_REPAIRS):
        try:
            model.model_validate(_for_validation(document))
        except ValidationError as error:
            if not all(_remove(document, notes, label, detail) for detail in error.errors()[:1]):
                notes.append(Note(label, "the whole object", "the model refuses it; not printed"))
                return None
        else:
            return document
    notes.append(Note(label, "the whole object", f"still refused after {MAX_REPAIRS} fields; not printed"))
    return None


def _for_validation(document: Mapping[str, Any]) -> dict[str, Any]:
    metadata = {"namespace": VALIDATION_NAMESPACE, **document["metadata"]}
    return {"metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
            "spec": document["spec"]}  # fmt: skip


def _remove(document: dict[str, Any], notes: list[Note], label: str, detail: Any) -> bool:  # noqa: ANN401 - pydantic's ErrorDetails
    """Take out the field an error names (the element holding it when the field itself is missing);
    False when that would be the whole spec."""
    location = list(detail["loc"])
    extra = str((detail.get("ctx") or {}).get("field_path", ""))
    location += [part for part in re.split(r"[.\[\]]+", extra) if part]
    location = [int(part) if isinstance(part, str) and part.isdigit() else part for part in location]
    while location and _lookup(document, location) is _MISSING:
        location.pop()
    if location[:1] != ["spec"] or len(location) < 2:  # noqa: PLR2004 - below spec
        return False
    parent = _lookup(document, location[:-1])
    notes.append(Note(label, field_path(location), f"{detail['msg']}; left out"))
    del parent[location[-1]]
    return True


def _lookup(document: Any, location: list[int | str]) -> Any:  # noqa: ANN401 - any JSON value
    current = document
    for part in location:
        try:
            current = current[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return current
