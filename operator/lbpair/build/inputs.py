"""Whether a pair's inputs are still what its last build read, so that a pass with nothing changed (the
probe passes of an idle pair, one every probe interval) reuses that build instead of building thousands
of objects again.

A build is a pure function of the objects' specs (known by uid and metadata.generation, as in
ParseCache), the objects left out, and the answers of the lookups it makes through PairResources
(Secrets, namespace labels, DNS, Services with their EndpointSlices). The lookups are logged with their
answers and asked again on the next pass: the same answers and versions mean the same build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lbpair.build.resources import PairResources, generation_of, object_key
from lbpair.build.services import ServiceView
from lbpair.model.common import ObjectRef
from lbpair.model.secret import HeldSecret
from lbpair.render.model import ObjectKey

Lookups = dict[tuple[str, tuple[Any, ...]], object]
"""(lookup, its arguments) → its answer, as a build made them."""
Versions = tuple[object, ...]


def versions_of(resources: PairResources, left_out: Mapping[ObjectKey, str]) -> Versions | None:
    """What identifies the specs of the pair and its objects, and what is left out; None when an object
    is not from an API server (no uid or generation), and so cannot be told apart from an edited copy."""
    versions: list[object] = [tuple(sorted(left_out.items()))]
    for kind, bodies in (
        ("LoadBalancerPair", [resources.pair]),
        ("Upstream", resources.upstreams),
        ("VirtualHost", resources.virtual_hosts),
    ):
        for body in bodies:
            uid, generation = (body.get("metadata") or {}).get("uid"), generation_of(body)
            if not uid or not generation:
                return None
            versions.append((object_key(kind, body), uid, generation))
    return tuple(versions)


def recording(resources: PairResources) -> tuple[PairResources, Lookups]:
    """`resources` whose lookups log their answers into the returned Lookups."""
    logged: Lookups = {}

    def secrets(reference: ObjectRef, key: str) -> HeldSecret | None:
        answer = resources.secrets(reference, key)
        logged["secrets", (reference, key)] = answer
        return answer

    def namespace_labels(namespace: str) -> Mapping[str, str] | None:
        answer = resources.namespace_labels(namespace)
        logged["namespace_labels", (namespace,)] = None if answer is None else dict(answer)
        return answer

    def resolve(name: str) -> Sequence[str]:
        answer = resources.resolve(name)
        logged["resolve", (name,)] = tuple(answer)
        return answer

    def services(reference: ObjectRef) -> ServiceView | None:
        answer = resources.services(reference)
        logged["services", (reference,)] = answer
        return answer

    recorded = dataclasses.replace(
        resources, secrets=secrets, namespace_labels=namespace_labels, resolve=resolve, services=services
    )
    return recorded, logged


def answers_as_logged(resources: PairResources, logged: Lookups) -> bool:
    """Whether every lookup in `logged` answers the same from `resources` now."""
    recorded, again = recording(resources)
    lookups: dict[str, Callable[..., object]] = {
        "secrets": recorded.secrets,
        "namespace_labels": recorded.namespace_labels,
        "resolve": recorded.resolve,
        "services": recorded.services,
    }
    for (lookup, arguments), answer in logged.items():
        lookups[lookup](*arguments)
        if again[lookup, arguments] != answer:
            return False
    return True
