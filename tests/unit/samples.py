"""The resources in config/samples/, parsed by the model, as the golden and unit tests use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lbpair.model import parse_pair, parse_upstream, parse_virtual_host
from lbpair.model.desired import BuildResult, SecretValues, TlsMaterial, build_desired_state
from lbpair.model.pair import LoadBalancerPair
from lbpair.model.upstream import Upstream
from lbpair.model.virtualhost import VirtualHost

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "config" / "samples"
NAMESPACE = "demo"
TLS_INPUTS = REPO / "tests" / "golden" / "inputs"
SEED_AUTH_PASS = "1111"  # noqa: S105 - the seed tutorial's auth_pass, also in config/samples/seed-tutorial.yaml


def sample_documents(*names: str) -> list[dict[str, Any]]:
    """The lbpair objects of the named sample files, placed in NAMESPACE."""
    documents = []
    for name in names:
        for document in yaml.safe_load_all((SAMPLES / name).read_text()):
            if document["apiVersion"].startswith("lb.lbpair.dev/"):
                document["metadata"]["namespace"] = NAMESPACE
                documents.append(document)
    return documents


@dataclass(frozen=True)
class SampleObjects:
    pair: LoadBalancerPair
    upstreams: list[Upstream]
    virtual_hosts: list[VirtualHost]

    def build(self, secrets: SecretValues) -> BuildResult:
        return build_desired_state(self.pair, self.upstreams, self.virtual_hosts, secrets)


def parse_documents(documents: list[dict[str, Any]]) -> SampleObjects:
    (pair,) = [parse_pair(d) for d in documents if d["kind"] == "LoadBalancerPair"]
    return SampleObjects(
        pair=pair,
        upstreams=[parse_upstream(d) for d in documents if d["kind"] == "Upstream"],
        virtual_hosts=[parse_virtual_host(d) for d in documents if d["kind"] == "VirtualHost"],
    )


def sample_objects(*names: str) -> SampleObjects:
    return parse_documents(sample_documents(*names))


def sample_secrets() -> SecretValues:
    """What the reconciler would read from the samples' Secrets."""
    material = TlsMaterial(
        certificate_pem=(TLS_INPUTS / "shop-tls.crt").read_text(),
        private_key_pem=(TLS_INPUTS / "shop-tls.key").read_text(),
    )
    return SecretValues(vrrp_auth_pass=SEED_AUTH_PASS, tls={(NAMESPACE, "shop-tls"): material})
