"""The model accepts the samples and rejects what the API server rejects, naming the field."""

from __future__ import annotations

import ast
import re
from typing import Annotated, Any

import pytest
from pydantic import StringConstraints, TypeAdapter, ValidationError

from lbpair.model import SpecError, parse_pair, parse_upstream, parse_virtual_host, patterns
from tests.unit import corpus
from tests.unit.corpus import (
    INVALID_VARIANTS,
    PAYLOAD_CLASSES,
    SEED_LB1_KEY,
    InvalidVariant,
    corpus_documents,
    corpus_injections,
    object_schemas,
    schema_fields,
    uncovered_fields,
)
from tests.unit.samples import REPO, SAMPLES, sample_documents

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


def test_the_corpus_sets_every_string_field_of_every_kind() -> None:
    """A field no corpus document sets would never be tried: add a value for it to corpus.ADDITIONS."""
    assert uncovered_fields() == {}


def test_a_field_the_corpus_does_not_set_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "ADDITIONS", ())

    assert "spec.proxy.headers[].value" in uncovered_fields()["VirtualHost"]


def test_every_corpus_document_is_accepted() -> None:
    """So that a rejected injection is rejected for the payload, not for something else."""
    for document in corpus_documents():
        parse(document)


@pytest.mark.parametrize("payload_class", PAYLOAD_CLASSES, ids=lambda payload_class: payload_class.name)
def test_every_injection_payload_is_rejected_at_every_string_field(
    payload_class: corpus.PayloadClass,
) -> None:
    accepted = []
    fields_tried = set()
    for injection in corpus_injections(payload_classes=(payload_class,)):
        fields_tried.add((injection.document["kind"], injection.string.generic))
        try:
            parse(injection.document)
        except SpecError as error:
            if not any(problem.startswith(injection.field) for problem in error.problems):
                accepted.append((injection.field, injection.payload, f"rejected for another field: {error}"))
        else:
            accepted.append((injection.field, injection.payload, "accepted"))

    every_field = {
        (kind, field) for kind, schema in object_schemas().items() for field in schema_fields(schema)
    }
    assert fields_tried == every_field
    assert accepted == []


def test_errors_name_the_dotted_path_of_a_list_item() -> None:
    document = sample_document("seed-tutorial.yaml", "LoadBalancerPair", "seed")
    document["spec"]["nodes"][1]["vrrpAddress"] = "198.51.100.300"

    with pytest.raises(SpecError) as rejected:
        parse_pair(document)

    assert rejected.value.problems[0].startswith("spec.nodes[1].vrrpAddress: String should match pattern")


PATTERN_EXAMPLES = {
    "IPV4_PATTERN": "198.51.100.10",
    "IPV4_CIDR_PATTERN": "198.51.100.10/24",
    "DNS_LABEL_PATTERN": "lb1",
    "DNS_SUBDOMAIN_PATTERN": "lb-www.demo",
    "HOST_PATTERN": "lb1.example.com",
    "SERVER_NAME_PATTERN": "*.example.com",
    "INTERFACE_PATTERN": "eth0.100",
    "UNIX_USER_PATTERN": "www-data",
    "SSH_HOST_KEY_PATTERN": SEED_LB1_KEY,
    "SECRET_KEY_PATTERN": "tls.crt",
    "NGINX_CONFIG_FILE_PATTERN": "/etc/nginx/nginx.conf",
    "KEEPALIVED_CONFIG_FILE_PATTERN": "/etc/keepalived/keepalived.conf",
    "RUN_FILE_PATTERN": "/run/nginx.pid",
    "NGINX_LOG_DIR_PATTERN": "/var/log/nginx",
    "NGINX_CACHE_DIR_PATTERN": "/var/cache/nginx/lbpair",
    "SYSTEMD_UNIT_PATTERN": "nginx.service",
    "NGINX_SIZE_PATTERN": "256k",
    "NGINX_TIME_PATTERN": "600s",
    "NGINX_VARIABLE_PATTERN": "remote_addr",
    "NGINX_NAME_PATTERN": "main",
    "HASH_VARIABLE_PATTERN": "cookie_session",
    "CHARSET_PATTERN": "utf-8",
    "MIME_TYPE_PATTERN": "application/json",
    "LOG_LITERAL_PATTERN": '" [',
    "HEADER_NAME_PATTERN": "X-Real-IP",
    "HEADER_VALUE_PATTERN": "v1.2/a=b,c",
    "LOCATION_PATH_PATTERN": "/.well-known/security.txt",
    "PROXY_URL_PATTERN": "http://198.18.0.11:8080/svn/",
    "REDIRECT_URL_PATTERN": "https://www.example.com/",
    "LABEL_KEY_PATTERN": "lb.lbpair.dev/edge",
    "LABEL_VALUE_PATTERN": "allowed",
    "VRRP_AUTH_PASS_PATTERN": "1111",
}
PATTERN_NAMES = sorted(name for name in vars(patterns) if name.endswith("_PATTERN"))


def pattern_adapter(name: str) -> TypeAdapter[str]:
    """The pattern checked the way the model checks it (pydantic-core's regex engine)."""
    return TypeAdapter(Annotated[str, StringConstraints(pattern=getattr(patterns, name))])


def test_every_pattern_has_an_example() -> None:
    assert sorted(PATTERN_EXAMPLES) == PATTERN_NAMES


@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_a_trailing_newline_does_not_slip_past_a_pattern(name: str) -> None:
    """CVE-2021-25748: Python's `re` lets `$` match before a final newline; the model's engine must not."""
    adapter = pattern_adapter(name)
    example = PATTERN_EXAMPLES[name]
    adapter.validate_python(example)

    for value in (f"{example}\n", f"{example}\r\n", f"\n{example}", f"{example}\nx"):
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


def test_pythons_re_match_would_let_a_trailing_newline_through() -> None:
    """Why the test above matters, and why Python code must use `fullmatch`: one pattern, two verdicts."""
    label = patterns.DNS_LABEL_PATTERN  # (a local name, so the scan below does not count this on purpose)
    value = "lb1\n"

    assert re.match(label, value)
    assert not re.fullmatch(label, value)
    with pytest.raises(ValidationError):
        pattern_adapter("DNS_LABEL_PATTERN").validate_python(value)


def pattern_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, method) of every Python `re` use of a `*_PATTERN`: `re.X(PATTERN, ...)` and `NAME.X(...)` where
    `NAME = re.compile(...PATTERN...)`."""

    def names_a_pattern(node: ast.expr) -> bool:
        return any(
            (isinstance(name, ast.Name) and name.id.endswith("_PATTERN"))
            or (isinstance(name, ast.Attribute) and name.attr.endswith("_PATTERN"))
            for name in ast.walk(node)
        )

    compiled = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and names_a_pattern(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    uses = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Name) and owner.id == "re" and node.args and names_a_pattern(node.args[0]):
            if node.func.attr != "compile":
                uses.append((node.lineno, f"re.{node.func.attr}"))
        elif isinstance(owner, ast.Name) and owner.id in compiled:
            uses.append((node.lineno, f"{owner.id}.{node.func.attr}"))
    return uses


def test_python_code_checks_the_patterns_with_fullmatch() -> None:
    trees = ("operator", "hack", "testbed", "tests", "bench")
    sources = [path for tree in trees for path in sorted((REPO / tree).rglob("*.py"))]
    uses = {
        f"{path.relative_to(REPO)}:{line}": method
        for path in sources
        for line, method in pattern_uses(ast.parse(path.read_text()))
    }
    matching = {where: method for where, method in uses.items() if not method.endswith(".fullmatch")}

    assert uses, "the operator checks Secret material (the VRRP password) with these patterns in Python"
    assert matching == {}


def test_the_fullmatch_check_sees_re_match() -> None:
    source = "CHECK = re.compile(X_PATTERN)\nre.match(X_PATTERN, v)\nCHECK.search(v)\nCHECK.fullmatch(v)\n"

    assert pattern_uses(ast.parse(source)) == [(2, "re.match"), (3, "CHECK.search"), (4, "CHECK.fullmatch")]


def test_strings_are_not_coerced_into_numbers() -> None:
    document = sample_document("seed-tutorial.yaml", "LoadBalancerPair", "seed")
    document["spec"]["nodes"][0]["priority"] = "101"

    with pytest.raises(SpecError, match=r"spec\.nodes\[0\]\.priority"):
        parse_pair(document)
