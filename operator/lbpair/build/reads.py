"""What one VirtualHost's build reads besides its own spec and the pair, recorded, so that a later pass can
reuse the build while every read still gives the same answer.

At thousands of VirtualHosts building them is most of a pass, and a pass usually changes one object or
none. A VirtualHost's build is a pure function of its parsed spec, the pair and these reads (the
Upstreams it names, the addresses its URL hosts stand for, its TLS Secret's values); so every read goes
through `Reads`, and a cached build holds exactly while replaying its reads answers as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from lbpair.build.backends import BackendRefused, Backends
from lbpair.build.resources import SecretReader, SecretUnusable, ServiceLookup, no_services
from lbpair.build.services import ServiceView
from lbpair.model.common import ObjectRef
from lbpair.model.pair import LoadBalancerPair
from lbpair.model.secret import TLS_SECRET_TYPE
from lbpair.render.model import ObjectKey, Upstream

T = TypeVar("T")
Answer = object
"""What a read returned, or (the exception's type, its message) for what it raised."""
ReadLog = list[tuple[str, tuple[str, ...], Answer]]
"""Each read's name, arguments and answer, in the order they were made."""


@dataclass
class Reads:
    """The reads one Upstream's or VirtualHost's build makes, each logged with its answer."""

    secrets: SecretReader
    backends: Backends
    upstreams: Mapping[tuple[str, str], Upstream]
    rejected_upstreams: Mapping[tuple[str, str], str]
    """Upstreams of this pair that are left out, with why."""
    services: ServiceLookup = no_services
    log: ReadLog = field(default_factory=list)

    def tls_text(self, namespace: str, name: str, key: str) -> str:
        """A key of a `kubernetes.io/tls` Secret as text (SecretReader.text)."""
        return self._logged(
            "tls_text",
            (namespace, name, key),
            lambda: self.secrets.text(namespace, name, key, secret_type=TLS_SECRET_TYPE),
        )

    def addresses(self, host: str) -> list[str]:
        """The allowed addresses `host` stands for (Backends.addresses)."""
        return self._logged("addresses", (host,), lambda: self.backends.addresses(host))

    def service(self, namespace: str, name: str) -> ServiceView | None:
        """A Service's ports and EndpointSlices (PairResources.services)."""
        return self._logged("service", (namespace, name), lambda: self.services(ObjectRef(namespace, name)))

    def upstream(self, namespace: str, name: str) -> Upstream | str | None:
        """The pair's built Upstream of that name, or why it is left out, or None when there is none."""
        reference = (namespace, name)

        def read() -> Upstream | str | None:
            if reference in self.rejected_upstreams:
                return self.rejected_upstreams[reference]
            return self.upstreams.get(reference)

        return self._logged("upstream", reference, read)

    def answer_as_logged(self, logged: ReadLog) -> bool:
        """Whether reading again everything in `logged` (another build's log) gives the same answers."""
        for what, arguments, answer in logged:
            with contextlib.suppress(SecretUnusable, BackendRefused):  # logged like an answer
                getattr(self, what)(*arguments)  # each read is logged under its method's name
            if self.log[-1][2] != answer:
                return False
        return True

    def _logged(self, what: str, arguments: tuple[str, ...], read: Callable[[], T]) -> T:
        try:
            answer = read()
        except (SecretUnusable, BackendRefused) as error:
            self.log.append((what, arguments, (type(error), str(error))))
            raise
        self.log.append((what, arguments, answer))
        return answer


SpecT = TypeVar("SpecT")
BuiltT = TypeVar("BuiltT")


@dataclass
class BuildMemo(Generic[SpecT, BuiltT]):
    """The last build of each attached object of one kind of one pair, with what it read; forgotten whole
    when the pair changes."""

    _pair: LoadBalancerPair | None = None
    _entries: dict[ObjectKey, tuple[SpecT, ReadLog, BuiltT]] = field(default_factory=dict)

    def use_pair(self, pair: LoadBalancerPair) -> None:
        """Called once per build, before any `build`: a changed pair invalidates every cached build."""
        if pair != self._pair:
            self._entries.clear()
            self._pair = pair

    def build(self, key: ObjectKey, spec: SpecT, reads: Reads, build: Callable[[Reads], BuiltT]) -> BuiltT:
        """`build(reads)`, or the last build of `key` when its spec is the same parsed object (see
        ParseCache) and `reads` answers everything that build read as it did then."""
        cached = self._entries.get(key)
        if cached is not None and cached[0] is spec and reads.answer_as_logged(cached[1]):
            return cached[2]
        reads.log.clear()
        built = build(reads)
        self._entries[key] = (spec, list(reads.log), built)
        return built

    def keep_only(self, keys: set[ObjectKey]) -> None:
        """Drop the builds of objects that are gone (or left out)."""
        for key in self._entries.keys() - keys:
            del self._entries[key]
