"""What one build reads: a snapshot of a pair's resources, and the Secret reads it makes."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lbpair.build.services import ServiceView
from lbpair.model import SECRET_SELECTOR
from lbpair.model.common import ObjectRef
from lbpair.model.secret import HeldSecret
from lbpair.render.model import ObjectKey

SecretLookup = Callable[[ObjectRef, str], HeldSecret | None]
"""A Secret labelled usable, holding at least the value of the key asked for if it has that key; None if
there is no such Secret or it is not labelled."""
LabelLookup = Callable[[str], Mapping[str, str] | None]
"""A namespace's labels by name; None if there is no such namespace."""
NameResolver = Callable[[str], Sequence[str]]
"""The IPv4 addresses a DNS name resolves to, in a stable order; empty when it does not resolve."""
ServiceLookup = Callable[[ObjectRef], ServiceView | None]
"""A Service's ports and EndpointSlices by namespace and name; None if there is no such Service."""


def no_services(_: ObjectRef) -> ServiceView | None:
    """The ServiceLookup of a build that sees no Services (e.g. tests of the other kinds)."""
    return None


@dataclass(frozen=True)
class PairResources:
    """Everything a build of one pair reads, as the API holds it: the pair, the Upstreams and VirtualHosts
    whose pairRef names it (valid or not), read-only views of Secrets, namespace labels and Services
    (with their EndpointSlices), and the DNS resolver for backend host names."""

    pair: Mapping[str, Any]
    upstreams: Sequence[Mapping[str, Any]]
    virtual_hosts: Sequence[Mapping[str, Any]]
    secrets: SecretLookup
    namespace_labels: LabelLookup
    resolve: NameResolver
    services: ServiceLookup = no_services

    def attached_by_key(self) -> dict[ObjectKey, Mapping[str, Any]]:
        """Every attached object's body by its key."""
        attached: dict[ObjectKey, Mapping[str, Any]] = {}
        for kind, bodies in (("Upstream", self.upstreams), ("VirtualHost", self.virtual_hosts)):
            attached.update((object_key(kind, body), body) for body in bodies)
        return attached

    def generations(self) -> dict[ObjectKey | None, int]:
        """metadata.generation of each attached object, and of the pair under None."""
        generations: dict[ObjectKey | None, int] = {None: generation_of(self.pair)}
        generations.update((key, generation_of(body)) for key, body in self.attached_by_key().items())
        return generations


def object_key(kind: str, body: Mapping[str, Any]) -> ObjectKey:
    metadata = body.get("metadata") or {}
    return ObjectKey(kind, str(metadata.get("namespace")), str(metadata.get("name")))


def generation_of(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)


class SecretUnusable(Exception):
    """A referenced Secret cannot be used; the message says why, naming the Secret and key."""


@dataclass
class SecretReader:
    """Reads Secret values as text and remembers which Secrets were asked for, found or not, so that a
    change to any of them (including its creation or labelling) wakes the pair.

    Every reference is resolved in the namespace of the object that makes it: a Secret is usable only by
    objects in its own namespace."""

    lookup: SecretLookup
    used: set[ObjectRef] = field(default_factory=set)

    def text(self, namespace: str, name: str, key: str, *, secret_type: str | None = None) -> str:
        """The value as text; raises SecretUnusable when the Secret is missing or not labelled, is not of
        `secret_type` (when given), lacks the key, or the value is not UTF-8 text."""
        reference = ObjectRef(namespace, name)
        self.used.add(reference)
        secret = self.lookup(reference, key)
        if secret is None:
            raise SecretUnusable(
                f"Secret {name} not found in namespace {namespace} or not labelled {SECRET_SELECTOR}"
            )
        if secret_type is not None and secret.type != secret_type:
            raise SecretUnusable(f"Secret {name} is of type {secret.type}, not {secret_type}")
        if key not in secret.data:
            raise SecretUnusable(f"Secret {name} has no key {key}")
        try:
            return base64.b64decode(secret.data[key], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretUnusable(f"Secret {name} key {key} is not UTF-8 text") from None
