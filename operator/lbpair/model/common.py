"""Types shared by the three resources: object metadata, references, status conditions."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from lbpair.model.base import ApiModel
from lbpair.model.patterns import DnsLabel, DnsSubdomain, SecretKey


class ObjectMeta(ApiModel):
    """The part of metadata the model reads."""

    name: DnsSubdomain
    namespace: DnsLabel


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
