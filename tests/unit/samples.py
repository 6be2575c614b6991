"""The resources in config/samples/, as a pair's build reads them, for the golden and unit tests.

Tests edit the plain dicts (as a user edits YAML) and build with `Sample.build()`.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lbpair.build import PairBuild, PairRejected, PairResources, build_pair
from lbpair.build.services import ServiceView, service_view_fields, slice_service, slice_view_fields
from lbpair.model.common import ObjectRef
from lbpair.model.secret import TLS_SECRET_TYPE, HeldSecret

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "config" / "samples"
NAMESPACE = "demo"
TLS_INPUTS = REPO / "tests" / "golden" / "inputs"
SEED_AUTH_PASS = "1111"  # noqa: S105 - the seed tutorial's auth_pass, also in config/samples/seed-tutorial.yaml
SSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n(unit tests never log in)\n-----END OPENSSH PRIVATE KEY-----\n"
)


def sample_documents(*names: str) -> list[dict[str, Any]]:
    """The lbpair objects of the named sample files, placed in NAMESPACE."""
    documents = []
    for name in names:
        for document in yaml.safe_load_all((SAMPLES / name).read_text()):
            if document["apiVersion"].startswith("lb.lbpair.dev/"):
                document["metadata"]["namespace"] = NAMESPACE
                documents.append(document)
    return documents


def sample_services(*names: str) -> dict[ObjectRef, ServiceView]:
    """The Services of the named sample files with their EndpointSlices, placed in NAMESPACE, as the
    operator's indexes hold them (lbpair.build.services)."""
    documents = [document for name in names for document in yaml.safe_load_all((SAMPLES / name).read_text())]
    slices: dict[ObjectRef, list[dict[str, Any]]] = {}
    for document in documents:
        if document["kind"] == "EndpointSlice":
            service = slice_service(NAMESPACE, document["metadata"].get("labels") or {})
            assert service is not None, document
            slices.setdefault(service, []).append(slice_view_fields(document))
    return {
        ObjectRef(NAMESPACE, document["metadata"]["name"]): ServiceView(
            ports=service_view_fields(document["spec"]),
            slices=tuple(slices.get(ObjectRef(NAMESPACE, document["metadata"]["name"]), [])),
        )
        for document in documents
        if document["kind"] == "Service"
    }


def secret_data(**values: str) -> dict[str, str]:
    """A Secret's `data` as the API returns it (base64)."""
    return {key.replace("_", "."): base64.b64encode(value.encode()).decode() for key, value in values.items()}


def held_secret(data: dict[str, str], of_type: str = "Opaque") -> HeldSecret:
    """A labelled Secret as the operator's store holds it, with every key asked for."""
    return HeldSecret(of_type, frozenset(data), data)


def tls_secret(certificate: str, private_key: str) -> HeldSecret:
    return held_secret(secret_data(tls_crt=certificate, tls_key=private_key), TLS_SECRET_TYPE)


def sample_secrets() -> dict[ObjectRef, HeldSecret]:
    """What the samples' Secrets hold (the TLS pair is tests/golden/inputs/shop-tls.*)."""
    return {
        ObjectRef(NAMESPACE, "lb-ssh"): held_secret({"ssh-privatekey": secret_data(key=SSH_KEY)["key"]}),
        ObjectRef(NAMESPACE, "seed-vrrp-auth"): held_secret(secret_data(password=SEED_AUTH_PASS)),
        ObjectRef(NAMESPACE, "shop-tls"): tls_secret(
            (TLS_INPUTS / "shop-tls.crt").read_text(), (TLS_INPUTS / "shop-tls.key").read_text()
        ),
    }


@dataclass
class Sample:
    """One pair and its attached objects as API objects, plus the Secrets and namespace labels."""

    pair: dict[str, Any]
    upstreams: list[dict[str, Any]]
    virtual_hosts: list[dict[str, Any]]
    secrets: dict[ObjectRef, HeldSecret] = field(default_factory=sample_secrets)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    dns: dict[str, list[str]] = field(default_factory=dict)
    """What backend host names resolve to (a fake DNS); a name not here does not resolve."""
    services: dict[ObjectRef, ServiceView] = field(default_factory=dict)
    """The Services (with their EndpointSlices) Upstreams may follow."""

    def resolve(self, name: str) -> list[str]:
        return self.dns.get(name, [])

    def resources(self) -> PairResources:
        return PairResources(
            pair=self.pair,
            upstreams=self.upstreams,
            virtual_hosts=self.virtual_hosts,
            secrets=self.secret_lookup,
            namespace_labels=self.namespace_labels.get,
            resolve=self.resolve,
            services=self.services.get,
        )

    def secret_lookup(self, reference: ObjectRef, key: str) -> HeldSecret | None:
        return self.secrets.get(reference)

    def build(self) -> PairBuild:
        result = build_pair(self.resources())
        assert isinstance(result, PairBuild), result
        return result

    def rejected(self) -> PairRejected:
        result = build_pair(self.resources())
        assert isinstance(result, PairRejected), result
        return result

    def vhost(self, name: str) -> dict[str, Any]:
        (found,) = [v for v in self.virtual_hosts if v["metadata"]["name"] == name]
        return found

    def upstream(self, name: str) -> dict[str, Any]:
        (found,) = [u for u in self.upstreams if u["metadata"]["name"] == name]
        return found


def sample(*names: str) -> Sample:
    """The named sample files as one pair's resources (exactly one LoadBalancerPair among them)."""
    documents = copy.deepcopy(sample_documents(*names))
    (pair,) = [d for d in documents if d["kind"] == "LoadBalancerPair"]
    return Sample(
        pair=pair,
        upstreams=[d for d in documents if d["kind"] == "Upstream"],
        virtual_hosts=[d for d in documents if d["kind"] == "VirtualHost"],
        services=sample_services(*names),
    )
