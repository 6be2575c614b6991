"""Generate crds/*.yaml from the pydantic models, the single source of truth for the API.

Field types, allow-list patterns, enums, limits, defaults, descriptions (field docstrings) and CEL rules all
come from `lbpair.model`; this script only turns pydantic's JSON schema into a structural OpenAPI schema
and adds what is CRD-specific (names, printer columns, subresources).

    python hack/gen_crds.py           # rewrite crds/
    python hack/gen_crds.py --check   # exit 1 if crds/ is not what the models generate
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lbpair.model import GROUP, VERSION
from lbpair.model.pair import PairSpec
from lbpair.model.status import AttachedStatus, PairStatus, VirtualHostStatus
from lbpair.model.upstream import UpstreamSpec
from lbpair.model.virtualhost import VirtualHostSpec

CRD_DIR = Path(__file__).resolve().parents[1] / "crds"
READY = '.status.conditions[?(@.type=="Ready")].status'
PROGRAMMED = '.status.conditions[?(@.type=="Programmed")].status'
AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
# Keys of pydantic's JSON schema with no place (or no meaning) in a structural schema.
DROPPED_KEYS = {"title", "$defs"}

Schema = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[dict[str, str], ...]


KINDS = (
    Kind(
        kind="LoadBalancerPair",
        plural="loadbalancerpairs",
        short_names=("lbpair", "lbpairs"),
        description="A pair of bare-metal nginx + keepalived load balancers sharing floating VIPs over VRRP, "
        "configured over SSH.",
        spec=PairSpec,
        status=PairStatus,
        columns=(
            {"name": "VIPs", "type": "string", "jsonPath": ".status.vips"},
            {"name": "Holder", "type": "string", "jsonPath": ".status.vipHolders"},
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Healthy", "type": "string", "jsonPath": ".status.healthyNodes"},
            {"name": "Ready", "type": "string", "jsonPath": READY},
            AGE,
        ),
    ),
    Kind(
        kind="Upstream",
        plural="upstreams",
        short_names=("ups",),
        description="A group of backend servers that a pair's nginx balances requests across.",
        spec=UpstreamSpec,
        status=AttachedStatus,
        columns=(
            {"name": "Pair", "type": "string", "jsonPath": ".spec.pairRef.name"},
            {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
            {"name": "Programmed", "type": "string", "jsonPath": PROGRAMMED},
            AGE,
        ),
    ),
    Kind(
        kind="VirtualHost",
        plural="virtualhosts",
        short_names=("vhost",),
        description="An nginx virtual host (server block) on a pair: names, ports, TLS, logs and locations.",
        spec=VirtualHostSpec,
        status=VirtualHostStatus,
        columns=(
            {"name": "Pair", "type": "string", "jsonPath": ".spec.pairRef.name"},
            {"name": "Hosts", "type": "string", "jsonPath": ".spec.serverNames"},
            {"name": "Programmed", "type": "string", "jsonPath": PROGRAMMED},
            AGE,
        ),
    ),
)


def without_nulls(value: Any) -> Any:  # noqa: ANN401 - any JSON value
    """A default as the API server should store it: unset optional fields are absent, not null."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    return value


def structural(node: Schema, definitions: Schema) -> Schema:
    """pydantic's JSON schema → a structural schema: references inlined, `X | None` as optional X, every
    node typed, unknown-field handling expressed the Kubernetes way."""
    node = dict(node)
    if "anyOf" in node:
        (only,) = [branch for branch in node.pop("anyOf") if branch != {"type": "null"}]
        node = {**only, **node}
    if "$ref" in node:
        node = {**definitions[node.pop("$ref").rsplit("/", 1)[1]], **node}
    if "description" in node:
        # Docstrings wrap lines; `kubectl explain` wraps them again.
        node["description"] = " ".join(node["description"].split())
    if node.get("default", "") is None:
        del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("default"), dict):
        node["default"] = without_nulls(node["default"])
    if "patternProperties" in node:
        # A map with constrained keys. Structural schemas cannot constrain keys; CEL can.
        ((key_pattern, value_schema),) = node.pop("patternProperties").items()
        max_length = node.pop("propertyNames")["maxLength"]
        node["additionalProperties"] = value_schema
        rule = f"self.all(key, size(key) <= {max_length} && key.matches(r'{key_pattern}'))"
        node["x-kubernetes-validations"] = [{"rule": rule, "message": f"keys must match {key_pattern}"}]
    additional = node.pop("additionalProperties", False)
    if additional is True:
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(additional, dict):
        node["additionalProperties"] = structural(additional, definitions)
    if "properties" in node:
        node["properties"] = {
            name: structural(child, definitions) for name, child in node["properties"].items()
        }
    if "items" in node:
        node["items"] = structural(node["items"], definitions)
    leading = {key: node[key] for key in ("description", "type") if key in node}
    return leading | {key: value for key, value in node.items() if key not in DROPPED_KEYS | leading.keys()}


def object_schema(model: type[BaseModel]) -> Schema:
    schema = model.model_json_schema(by_alias=True)
    return structural(schema, schema.get("$defs", {}))


def crd(kind: Kind) -> Schema:
    root = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": object_schema(kind.spec),
            "status": object_schema(kind.status),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.columns),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crds() -> dict[str, str]:
    """File name → YAML text for every CRD."""
    header = "# Generated by hack/gen_crds.py from operator/lbpair/model. Do not edit.\n"
    return {
        f"{GROUP}_{kind.plural}.yaml": header + yaml.safe_dump(crd(kind), sort_keys=False, width=110)
        for kind in KINDS
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if crds/ differs from the generated CRDs")
    arguments = parser.parse_args()
    rendered = render_crds()
    if arguments.check:
        stale = sorted(
            name
            for name, text in rendered.items()
            if not (CRD_DIR / name).is_file() or (CRD_DIR / name).read_text() != text
        )
        for name in stale:
            print(f"crds/{name} is stale: run hack/gen_crds.py", file=sys.stderr)
        return 1 if stale else 0
    CRD_DIR.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (CRD_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
