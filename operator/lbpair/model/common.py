"""Types shared by the three resources: object metadata, references, status conditions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NamedTuple

from pydantic import AwareDatetime, Field
from pydantic.json_schema import SkipJsonSchema

from lbpair.model.base import ApiModel
from lbpair.model.patterns import DnsLabel, DnsSubdomain, SecretKey


class ObjectMeta(ApiModel):
    """The part of metadata the model reads."""

    name: DnsSubdomain
    namespace: DnsLabel
    creation_timestamp: SkipJsonSchema[Annotated[AwareDatetime, Field(strict=False)] | None] = None
    """Set by the API server (RFC 3339 text), never by a user, so not part of what the schema lists;
    None only for objects that did not come from an API server (tests)."""
    uid: SkipJsonSchema[Annotated[str, Field(pattern=r"^[0-9a-f-]{0,64}$")]] = ""
    """Set by the API server (never by a user, so not part of what the schema lists); "" in objects that
    did not come from an API server (tests)."""

    @property
    def owner(self) -> str:
        """Who has a node this object's pair runs on, as the node records it: "UID NAMESPACE/NAME"."""
        return f"{self.uid or f'{self.namespace}/{self.name}'} {self.namespace}/{self.name}"


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace as the referring object."""

    name: DnsSubdomain
    """Name of the Secret."""
    key: SecretKey
    """Key inside the Secret's data."""


class PairRef(ApiModel):
    """The LoadBalancerPair this object is served by."""

    name: DnsSubdomain
    """Name of the LoadBalancerPair."""
    namespace: DnsLabel | None = None
    """Namespace of the LoadBalancerPair; defaults to this object's namespace. Another namespace works only
    where the pair's spec.allowedNamespaces admits this object's namespace."""


Port = Annotated[int, Field(ge=1, le=65535)]


class ObjectRef(NamedTuple):
    """A namespaced object by name: a pair, a Secret, an attached object."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def attached_pair(namespace: str, spec: Mapping[str, Any]) -> ObjectRef:
    """The pair an Upstream or VirtualHost asks for: its pairRef, whose namespace defaults to the object's
    own. Reads the raw spec, so an object the model refuses still reaches its pair and is told why."""
    reference = spec.get("pairRef") or {}
    return ObjectRef(str(reference.get("namespace") or namespace), str(reference.get("name") or ""))
