"""crds/ is generated from the model and every user-facing string in it is allow-listed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from hack.gen_crds import CRD_DIR, render_crds


def test_committed_crds_are_what_the_model_generates() -> None:
    generated = render_crds()

    assert sorted(path.name for path in CRD_DIR.glob("*.yaml")) == sorted(generated)
    for name, text in generated.items():
        assert (CRD_DIR / name).read_text() == text, f"crds/{name} is stale: run hack/gen_crds.py"


def string_schemas(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if schema.get("type") == "string":
        yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from string_schemas(child, f"{path}.{name}")
    if "items" in schema:
        yield from string_schemas(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from string_schemas(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_every_spec_string_has_an_allow_list_and_a_length_limit(name: str) -> None:
    crd = yaml.safe_load(render_crds()[name])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    unbounded = [
        path
        for path, schema in string_schemas(spec, "spec")
        if not ("enum" in schema or ("pattern" in schema and "maxLength" in schema))
    ]

    assert unbounded == []


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_every_spec_field_is_described_for_kubectl_explain(name: str) -> None:
    crd = yaml.safe_load(render_crds()[name])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def undescribed(schema: dict[str, Any], path: str) -> Iterator[str]:
        for child_name, child in schema.get("properties", {}).items():
            if not child.get("description"):
                yield f"{path}.{child_name}"
            yield from undescribed(child.get("items", child), f"{path}.{child_name}")

    assert list(undescribed(spec, "spec")) == []
