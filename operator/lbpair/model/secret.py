"""A Secret as the operator holds it: never all of it, only what a build needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - a Secret type, not a credential


@dataclass(frozen=True)
class HeldSecret:
    """A Secret labelled usable: its type, the names of all its keys, and the values (base64, as the API
    returns them) of only the keys some build has asked for."""

    type: str
    keys: frozenset[str]
    data: Mapping[str, str] = field(default_factory=dict, repr=False)
