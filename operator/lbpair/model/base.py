"""The base of every API model: strict camelCase pydantic models, CEL rules shared with the CRDs, and
errors reported with the dotted field path (`spec.nodes[1].address: ...`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

ModelT = TypeVar("ModelT", bound=BaseModel)


class ApiModel(BaseModel):
    """Unknown fields are errors, field docstrings become the CRD descriptions (`kubectl explain`), and
    strict mode refuses the coercions the API server refuses too (e.g. "8" for an integer)."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=True,
        use_attribute_docstrings=True,
    )


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule, enforced by the API server (CEL) and again by the model (Python).

    `field_path` is relative to the object the rule sits on and names the field the message is about.
    """

    rule: str
    message: str
    field_path: str = ""

    def as_schema(self) -> JsonDict:
        schema: JsonDict = {"rule": self.rule, "message": self.message}
        if self.field_path:
            schema["fieldPath"] = self.field_path
        return schema

    def enforce(self, holds: bool) -> None:
        """The Python half of the rule: `holds` is the same condition as `rule`, evaluated by the caller."""
        if not holds:
            raise PydanticCustomError("cel_rule", self.message, {"field_path": self.field_path})


def cel_config(*rules: CelRule) -> ConfigDict:
    """Model config that places the rules on the model's CRD schema as `x-kubernetes-validations`."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": [rule.as_schema() for rule in rules]})


@dataclass(frozen=True)
class UniqueItems:
    """List annotation: entries unique (whole scalars, or objects by `keys`), checked in Python and marked
    in the CRD as `x-kubernetes-list-type: set` or `map`, which makes the API server check it too."""

    keys: tuple[str, ...] = ()

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:  # noqa: ANN401
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if self.keys:
            json_schema["x-kubernetes-list-type"] = "map"
            json_schema["x-kubernetes-list-map-keys"] = [to_camel(key) for key in self.keys]
        else:
            json_schema["x-kubernetes-list-type"] = "set"
        return json_schema

    def _check(self, items: list[Any]) -> list[Any]:
        identities = [tuple(getattr(item, key) for key in self.keys) if self.keys else item for item in items]
        if len(set(identities)) != len(identities):
            what = f" by {', '.join(to_camel(key) for key in self.keys)}" if self.keys else ""
            raise ValueError(f"entries must be unique{what}")
        return items


class SpecError(ValueError):
    """An object the model refuses, with one `path: message` line per problem."""

    def __init__(self, kind: str, name: str, problems: Sequence[str]) -> None:
        self.kind, self.name, self.problems = kind, name, list(problems)
        super().__init__(f"{kind} {name}: " + "; ".join(self.problems))


def field_path(location: Sequence[int | str]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def describe_errors(error: ValidationError) -> list[str]:
    problems = []
    for detail in error.errors():
        path = field_path(detail["loc"]) + str((detail.get("ctx") or {}).get("field_path", ""))
        problems.append(f"{path or '<root>'}: {detail['msg']}")
    return problems


def parse_object(model: type[ModelT], kind: str, body: Mapping[str, Any]) -> ModelT:
    """Validate a Kubernetes object (as the API returns it) into `model`; only metadata.name/namespace
    (uid, which marks the nodes a pair has; creationTimestamp, which decides who keeps a contested host
    name) and spec are read, so status and the rest of the server-populated metadata never cause an error."""
    metadata = body.get("metadata") or {}
    document = {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid", ""),
            "creationTimestamp": metadata.get("creationTimestamp"),
        },
        "spec": body.get("spec"),
    }
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise SpecError(
            kind, f"{metadata.get('namespace')}/{metadata.get('name')}", describe_errors(error)
        ) from None
