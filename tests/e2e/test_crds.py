"""The CRDs on a real API server: samples accepted, bad objects and injection payloads rejected with the
field named, printer columns and `kubectl explain` useful."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.cluster import ControlPlane
from tests.unit.corpus import (
    INVALID_VARIANTS,
    Injection,
    InvalidVariant,
    corpus_documents,
    corpus_injections,
    object_schemas,
    schema_fields,
)
from tests.unit.samples import SAMPLES

pytestmark = pytest.mark.e2e

CRDS = Path(__file__).resolve().parents[2] / "crds"
NAMESPACE = "lbpair-crd-test"


@pytest.fixture(scope="module")
def api(cluster: ControlPlane) -> Iterator[ControlPlane]:
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
    for crd in sorted(CRDS.glob("*.yaml")):
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    cluster.kubectl("create", "namespace", NAMESPACE)
    yield cluster
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def sample_objects(sample: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((SAMPLES / sample).read_text()) if doc]


def server_dry_run(api: ControlPlane, document: dict[str, Any]) -> tuple[str, str]:
    """Create `document` (an object or a List) with a server-side dry run; returns (stdout, stderr).

    kubectl's own schema check is off so that every verdict is the API server's; unknown fields are still
    refused, by the server's strict field validation.
    """
    result = api.kubectl(
        "-n",
        NAMESPACE,
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-o",
        "name",
        "-f",
        "-",
        input=json.dumps(document),
        check=False,
    )
    return result.stdout, result.stderr


@pytest.mark.parametrize("sample", sorted(path.name for path in SAMPLES.glob("*.yaml")))
def test_sample_is_accepted_and_reads_back(api: ControlPlane, sample: str) -> None:
    api.kubectl("-n", NAMESPACE, "apply", "--server-side", "-f", str(SAMPLES / sample))

    for document in sample_objects(sample):
        kind, name = document["kind"], document["metadata"]["name"]
        stored = json.loads(api.kubectl("-n", NAMESPACE, "get", f"{kind}/{name}", "-o", "json").stdout)
        if document["apiVersion"].startswith("lb.lbpair.dev/"):
            assert stored["spec"]["pairRef" if kind != "LoadBalancerPair" else "nodes"]


def test_defaults_are_applied(api: ControlPlane) -> None:
    api.kubectl("-n", NAMESPACE, "apply", "--server-side", "-f", str(SAMPLES / "active-active.yaml"))

    spec = json.loads(api.kubectl("-n", NAMESPACE, "get", "lbpair/edge", "-o", "json").stdout)["spec"]

    assert spec["nodeProfile"]["nginxConfigPath"] == "/etc/nginx/nginx.conf"
    assert spec["deletionPolicy"] == "Restore"
    assert spec["nodes"][0]["sshPort"] == 22


OPERATOR_STATUS = {
    "status": {
        "observedGeneration": 1,
        "vips": "198.51.100.10,198.51.100.20",
        "vipHolders": "198.51.100.10=lb1,198.51.100.20=lb2",
        "mode": "ActiveActive",
        "healthyNodes": "2/2",
        "nodes": [
            {
                "name": "lb1",
                "reachable": True,
                "vrrpState": "Master",
                "vipsHeld": ["198.51.100.10/24"],
                "nginxRunning": True,
                "keepalivedRunning": True,
                "appliedConfigHash": "0" * 64,
                "lastProbeTime": "2026-01-01T00:00:00Z",
            },
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Programmed",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
            },
        ],
    }
}


def test_get_lbpairs_shows_the_printer_columns(api: ControlPlane) -> None:
    api.kubectl("-n", NAMESPACE, "apply", "--server-side", "-f", str(SAMPLES / "active-active.yaml"))
    api.kubectl(
        "-n",
        NAMESPACE,
        "patch",
        "lbpair/edge",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(OPERATOR_STATUS),
    )

    table = api.kubectl("-n", NAMESPACE, "get", "lbpairs", "edge").stdout
    upstreams = api.kubectl("-n", NAMESPACE, "get", "ups").stdout
    hosts = api.kubectl("-n", NAMESPACE, "get", "vhost").stdout

    header = table.splitlines()[0].split()
    assert header == ["NAME", "VIPS", "HOLDER", "MODE", "HEALTHY", "READY", "AGE"]
    assert table.splitlines()[1].split()[:6] == [
        "edge",
        "198.51.100.10,198.51.100.20",
        "198.51.100.10=lb1,198.51.100.20=lb2",
        "ActiveActive",
        "2/2",
        "True",
    ]
    assert upstreams.splitlines()[0].split() == ["NAME", "PAIR", "METHOD", "PROGRAMMED", "AGE"]
    assert hosts.splitlines()[0].split() == ["NAME", "PAIR", "HOSTS", "PROGRAMMED", "AGE"]


def test_kubectl_explain_describes_the_fields(api: ControlPlane) -> None:
    explained = api.kubectl("explain", "loadbalancerpair.spec.vrrp").stdout

    assert "advertIntervalMilliseconds" in explained
    assert "VRRP protocol version" in explained
    assert "keepalived" in explained


@pytest.mark.parametrize(
    "variant", [v for v in INVALID_VARIANTS if not v.model_only], ids=lambda variant: variant.name
)
def test_invalid_variant_is_rejected_naming_the_field(api: ControlPlane, variant: InvalidVariant) -> None:
    (document,) = [
        doc
        for doc in sample_objects(variant.sample)
        if doc["kind"] == variant.kind and doc["metadata"]["name"] == variant.object_name
    ]

    created, errors = server_dry_run(api, variant.apply(document))

    assert created == ""
    assert variant.field in errors, errors


# The namespace travels in the request (kubectl -n), and kubectl itself refuses an object whose namespace
# differs before sending it; the model's corpus test covers the field.
NOT_SENT = {"metadata.namespace"}


def in_test_namespace(document: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    metadata = {**document["metadata"], "namespace": NAMESPACE}
    if name is not None:
        metadata["name"] = name
    return {**document, "metadata": metadata}


def test_every_corpus_document_is_accepted(api: ControlPlane) -> None:
    """So that each rejection below is the payload's doing."""
    documents = [
        in_test_namespace(document, f"corpus-{index}") for index, document in enumerate(corpus_documents())
    ]

    created, errors = server_dry_run(api, {"apiVersion": "v1", "kind": "List", "items": documents})

    assert errors == ""
    assert len(created.splitlines()) == len(documents)


def rejections(errors: str) -> list[str]:
    """kubectl's errors, one per refused object, in the order of the List's items."""
    return [f"Error from server{text}" for text in errors.split("Error from server")[1:]]


def names_the_field(rejection: str, field: str) -> bool:
    """The rejection lists `field` itself as a cause (`... is invalid: [a: ..., field: ...]`)."""
    return re.search(rf"(is invalid: \[?|, ){re.escape(field)}: ", rejection) is not None


def test_every_injection_payload_is_rejected_naming_the_changed_field(api: ControlPlane) -> None:
    injections: list[Injection] = [
        injection
        for injection in corpus_injections(appended_only=True)
        if injection.string.generic not in NOT_SENT
    ]
    # Each variant gets a name of its own, so its rejection can be matched to it; a variant whose name is
    # the injected field keeps that name and is matched by its place in the List.
    names = [
        None if injection.field == "metadata.name" else f"inj-{index}"
        for index, injection in enumerate(injections)
    ]
    variants = [
        in_test_namespace(injection.document, name) for injection, name in zip(injections, names, strict=True)
    ]

    created, errors = server_dry_run(api, {"apiVersion": "v1", "kind": "List", "items": variants})

    assert created == "", f"accepted: {created}"
    refused = rejections(errors)
    assert len(refused) == len(variants), errors[:2000]
    wrong = []
    for injection, name, rejection in zip(injections, names, refused, strict=True):
        if name is not None and f'"{name}" is invalid: ' not in rejection:
            wrong.append((injection.field, injection.payload, f"not {name}'s rejection: {rejection[:300]}"))
        elif not names_the_field(rejection, injection.field):
            wrong.append((injection.field, injection.payload, f"does not name the field: {rejection[:300]}"))
    assert wrong == []
    fields_tried = {(injection.document["kind"], injection.string.generic) for injection in injections}
    every_field = {
        (kind, field) for kind, schema in object_schemas().items() for field in schema_fields(schema)
    }
    assert fields_tried == {(kind, field) for kind, field in every_field if field not in NOT_SENT}


def test_a_rejection_for_another_field_does_not_count() -> None:
    rejection = (
        'Error from server (Invalid): error when creating "STDIN": VirtualHost.lb.lbpair.dev "inj-7" is '
        'invalid: [spec.proxy.headers[0].name: Invalid value: "X-Static;", spec.locations: Required value]'
    )

    assert names_the_field(rejection, "spec.proxy.headers[0].name")
    assert names_the_field(rejection, "spec.locations")
    assert not names_the_field(rejection, "spec.proxy.headers[0].value")
    assert not names_the_field(rejection, "spec.proxy.headers[0]")
