"""The model accepts the samples and rejects what the API server rejects, naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from lbpair.model import SpecError, parse_pair, parse_upstream, parse_virtual_host
from tests.unit.corpus import INVALID_VARIANTS, PAYLOADS, InvalidVariant, injections
from tests.unit.samples import SAMPLES, sample_documents

PARSERS = {"LoadBalancerPair": parse_pair, "Upstream": parse_upstream, "VirtualHost": parse_virtual_host}
SAMPLE_FILES = sorted(path.name for path in SAMPLES.glob("*.yaml"))


def parse(document: dict[str, Any]) -> object:
    return PARSERS[document["kind"]](document)


def sample_document(sample: str, kind: str, name: str) -> dict[str, Any]:
    (document,) = [d for d in sample_documents(sample) if d["kind"] == kind and d["metadata"]["name"] == name]
    return document


@pytest.mark.parametrize("sample", SAMPLE_FILES)
def test_every_sample_object_is_accepted(sample: str) -> None:
    documents = sample_documents(sample)

    assert documents
    for document in documents:
        parse(document)


@pytest.mark.parametrize("variant", INVALID_VARIANTS, ids=lambda variant: variant.name)
def test_invalid_variant_is_rejected_naming_the_field(variant: InvalidVariant) -> None:
    document = variant.apply(sample_document(variant.sample, variant.kind, variant.object_name))

    with pytest.raises(SpecError) as rejected:
        parse(document)

    assert any(problem.startswith(variant.field) for problem in rejected.value.problems), (
        rejected.value.problems
    )


@pytest.mark.parametrize("sample", SAMPLE_FILES)
def test_every_injection_payload_is_rejected_at_every_string_field(sample: str) -> None:
    accepted = []
    tried = 0
    for document in sample_documents(sample):
        for injection in injections(document):
            tried += 1
            try:
                parse(injection.document)
            except SpecError as error:
                if not any(problem.startswith(injection.field) for problem in error.problems):
                    accepted.append((injection.field, injection.payload, "rejected for another field"))
            else:
                accepted.append((injection.field, injection.payload, "accepted"))

    assert tried > len(PAYLOADS) * 20
    assert accepted == []


def test_errors_name_the_dotted_path_of_a_list_item() -> None:
    document = sample_document("seed-tutorial.yaml", "LoadBalancerPair", "seed")
    document["spec"]["nodes"][1]["vrrpAddress"] = "198.51.100.300"

    with pytest.raises(SpecError) as rejected:
        parse_pair(document)

    assert rejected.value.problems[0].startswith("spec.nodes[1].vrrpAddress: String should match pattern")


def test_a_trailing_newline_does_not_slip_past_a_pattern() -> None:
    """CVE-2021-25748: Python's `re` lets `$` match before a final newline; the model must not."""
    document = sample_document("seed-tutorial.yaml", "VirtualHost", "www")
    document["spec"]["serverNames"] = ["www.example.com\n"]

    with pytest.raises(SpecError, match=r"spec\.serverNames\[0\]"):
        parse_virtual_host(document)


def test_strings_are_not_coerced_into_numbers() -> None:
    document = sample_document("seed-tutorial.yaml", "LoadBalancerPair", "seed")
    document["spec"]["nodes"][0]["priority"] = "101"

    with pytest.raises(SpecError, match=r"spec\.nodes\[0\]\.priority"):
        parse_pair(document)
