"""One pure build per pass, like MetalLB's `config.For(ClusterResources)`: a pair's resources → its
desired state (the render model), the problems of each attached object, the Secrets it read and the SSH
key to reach its nodes.

An attached object with a problem is left out and reported; the rest of the pair still builds. Only a
problem of the pair itself (an invalid spec, a Secret it needs) rejects the whole build.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from lbpair.build.backends import Backends
from lbpair.build.certificates import Certificate, certificates_of
from lbpair.build.firewall import firewall
from lbpair.build.inputs import Lookups, Versions, answers_as_logged, recording, versions_of
from lbpair.build.keepalived import TRACK_DIRECTORY, check_script, keepalived, nginx_watch
from lbpair.build.nginx import nginx_main
from lbpair.build.problems import Problem
from lbpair.build.reads import BuildMemo, Reads
from lbpair.build.resources import (
    PairResources,
    SecretLookup,
    SecretReader,
    SecretUnusable,
    generation_of,
    object_key,
)
from lbpair.build.upstreams import upstream
from lbpair.build.virtualhosts import VirtualHostBuilder, duplicate_server_names
from lbpair.model import SpecError, parse_pair, parse_upstream, parse_virtual_host
from lbpair.model.common import ObjectRef
from lbpair.model.files import ManagedFile
from lbpair.model.pair import LoadBalancerPair, PairSpec
from lbpair.model.patterns import VRRP_AUTH_PASS_PATTERN
from lbpair.model.upstream import Upstream as UpstreamSpec
from lbpair.model.virtualhost import VirtualHost as VirtualHostSpec
from lbpair.nodes.layout import NodeLayout
from lbpair.render import RenderedNode, RenderMemo, render_pair
from lbpair.render.keepalived_model import NodeConfig
from lbpair.render.model import DesiredState, ObjectKey, Upstream, VirtualHost

ParsedT = TypeVar("ParsedT", UpstreamSpec, VirtualHostSpec)
BuiltHost = tuple[tuple[VirtualHost, list[ManagedFile]] | None, list[Problem]]
"""A VirtualHost's build: its render model and TLS files (None when left out), and its problems."""
VRRP_AUTH_PASS = re.compile(VRRP_AUTH_PASS_PATTERN)
PLURALS = {"Upstream": "upstreams", "VirtualHost": "virtualhosts"}


@dataclass(frozen=True)
class AttachedObject:
    """An Upstream or VirtualHost whose pairRef names the pair, valid or not: each gets a status."""

    key: ObjectKey
    generation: int

    @property
    def plural(self) -> str:
        return PLURALS[self.key.kind]


@dataclass(frozen=True)
class PairBuild:
    pair: LoadBalancerPair
    generation: int
    state: DesiredState
    layout: NodeLayout
    ssh_private_key: str = field(repr=False)
    attached: list[AttachedObject]
    problems: list[Problem]
    """Why attached objects are left out; an object may have several."""
    secrets_used: frozenset[ObjectRef]
    renders: RenderMemo = field(default_factory=RenderMemo, repr=False, compare=False)
    """The pair's render memo (from its ParseCache): what the last render of the pair produced."""

    @property
    def vips(self) -> list[str]:
        return [vip.address.split("/")[0] for vip in self.pair.spec.vips]

    @functools.cached_property
    def _problems_by_object(self) -> dict[ObjectKey, list[str]]:
        # Grouped once: a pass asks for every attached object's problems, thousands on a busy pair.
        grouped: dict[ObjectKey, list[str]] = {}
        for problem in self.problems:
            grouped.setdefault(problem.object, []).append(f"{problem.field}: {problem.message}")
        return grouped

    @functools.cached_property
    def certificates(self) -> Mapping[ObjectKey, Certificate]:
        """The certificate each TLS VirtualHost serves, read once per build (an idle pair reuses it)."""
        return certificates_of(self.state.virtual_hosts, self.state.tls_files)

    def problems_of(self, key: ObjectKey) -> list[str]:
        return self._problems_by_object.get(key, [])

    @functools.cached_property
    def upstreams_by_key(self) -> dict[ObjectKey, Upstream]:
        """The built (included) Upstreams by their object's key."""
        return {upstream.source: upstream for upstream in self.state.upstreams}

    def render(self) -> dict[str, RenderedNode]:
        """Each node's files (lbpair.render.render_pair), re-rendering only what changed since the pair's
        last render."""
        return render_pair(self.state, self.renders)


@dataclass(frozen=True)
class PairRejected:
    """The pair itself cannot be configured; nothing is pushed."""

    reason: Literal["InvalidSpec", "SecretMissing"]
    message: str
    generation: int
    secrets_used: frozenset[ObjectRef]


def node_layout(spec: PairSpec) -> NodeLayout:
    profile = spec.node_profile
    return NodeLayout(
        nginx_service=profile.nginx_service,
        keepalived_service=profile.keepalived_service,
        nginx_config_path=profile.nginx_config_path,
        keepalived_config_path=profile.keepalived_config_path,
        status_port=profile.nginx_status_port,
        nginx_pid_path=profile.nginx_pid_path,
        directories=(profile.nginx_cache_dir, TRACK_DIRECTORY),
        firewall_path=profile.firewall_ruleset_path,
    )


@dataclass(frozen=True)
class PairAccess:
    """The pair's spec and how to reach its nodes: all that a deletion needs."""

    pair: LoadBalancerPair
    generation: int
    layout: NodeLayout
    ssh_private_key: str | None = field(repr=False)
    """None when the key cannot be read (the reason is `missing_key`)."""
    missing_key: str
    secrets: SecretReader


def pair_access(pair_body: Mapping[str, Any], secrets: SecretLookup) -> PairAccess | PairRejected:
    generation = generation_of(pair_body)
    try:
        pair = parse_pair(pair_body)
    except SpecError as error:
        return PairRejected("InvalidSpec", str(error), generation, frozenset())
    reader = SecretReader(secrets)
    key_ref = pair.spec.ssh.private_key_secret_ref
    ssh_key, missing_key = None, ""
    try:
        ssh_key = reader.text(pair.metadata.namespace, key_ref.name, key_ref.key)
    except SecretUnusable as error:
        missing_key = f"{_pair_name(pair)}: spec.ssh.privateKeySecretRef: {error}"
    return PairAccess(pair, generation, node_layout(pair.spec), ssh_key, missing_key, reader)


def _pair_name(pair: LoadBalancerPair) -> str:
    return f"LoadBalancerPair {pair.metadata.namespace}/{pair.metadata.name}"


@dataclass
class ParseCache:
    """A pair's parsed attached objects, reused while their uid and generation stay the same, with its
    Upstream and VirtualHost builds (lbpair.build.reads), its last build (lbpair.build.inputs) and its
    render memo. At thousands of VirtualHosts parsing, building and rendering them are most of a pass, and
    a pass usually changes one object or none.

    The API server bumps metadata.generation on spec changes only, and a parse reads nothing but the spec
    and metadata that never change (name, namespace, uid, creationTimestamp): so the operator's own status
    writes, which give an object a new resourceVersion, do not make it parse again."""

    upstreams: BuildMemo[UpstreamSpec, Upstream | list[Problem]] = field(default_factory=BuildMemo)
    hosts: BuildMemo[VirtualHostSpec, BuiltHost] = field(default_factory=BuildMemo)
    last_build: LastBuild | None = None
    renders: RenderMemo = field(default_factory=RenderMemo)
    _entries: dict[tuple[str, str, str], tuple[tuple[str, int], Any]] = field(default_factory=dict)
    _seen: set[tuple[str, str, str]] = field(default_factory=set)

    def parse(
        self, kind: str, body: Mapping[str, Any], parse: Callable[[Mapping[str, Any]], ParsedT]
    ) -> ParsedT:
        """`parse(body)`, or its earlier result (a model, or the SpecError it raised) for this version."""
        metadata = body.get("metadata") or {}
        version = (str(metadata.get("uid") or ""), generation_of(body))
        if not all(version):
            return parse(body)  # not from the API server: nothing identifies the version
        key = (kind, str(metadata.get("namespace")), str(metadata.get("name")))
        self._seen.add(key)
        cached = self._entries.get(key)
        if cached is None or cached[0] != version:
            try:
                cached = (version, parse(body))
            except SpecError as error:
                cached = (version, error)
            self._entries[key] = cached
        if isinstance(cached[1], SpecError):
            raise cached[1]
        result: ParsedT = cached[1]
        return result

    def forget_unseen(self) -> None:
        """Drop what the last build did not ask for (deleted or moved objects)."""
        for key in self._entries.keys() - self._seen:
            del self._entries[key]
        self._seen.clear()


@dataclass(frozen=True)
class LastBuild:
    """A pair's last build, with the versions and lookup answers it was built from."""

    versions: Versions
    lookups: Lookups
    build: PairBuild | PairRejected


def build_pair(
    resources: PairResources,
    cache: ParseCache | None = None,
    left_out: Mapping[ObjectKey, str] | None = None,
) -> PairBuild | PairRejected:
    """The pair's desired state; `left_out` names attached objects to leave out whatever their spec says,
    with the reason reported on each (e.g. the nodes' nginx refused it). With the pair's `cache`, the
    last build again when nothing it was built from changed."""
    cache = cache or ParseCache()
    versions = versions_of(resources, left_out or {})
    last = cache.last_build
    if last is not None and versions == last.versions and answers_as_logged(resources, last.lookups):
        return last.build
    recorded, lookups = recording(resources)
    build = _build_pair(recorded, cache, left_out)
    cache.last_build = LastBuild(versions, lookups, build) if versions is not None else None
    return build


def _build_pair(
    resources: PairResources, cache: ParseCache, left_out: Mapping[ObjectKey, str] | None
) -> PairBuild | PairRejected:
    access = pair_access(resources.pair, resources.secrets)
    if isinstance(access, PairRejected):
        return access
    pair, generation, secrets = access.pair, access.generation, access.secrets
    spec, namespace = pair.spec, pair.metadata.namespace
    ssh_key = access.ssh_private_key
    if ssh_key is None:
        return PairRejected("SecretMissing", access.missing_key, generation, frozenset(secrets.used))
    auth_pass: str | None = None
    if spec.vrrp.authentication is not None:
        auth_ref = spec.vrrp.authentication.secret_ref
        field_name = f"{_pair_name(pair)}: spec.vrrp.authentication.secretRef"
        try:
            auth_pass = secrets.text(namespace, auth_ref.name, auth_ref.key)
        except SecretUnusable as error:
            return PairRejected(
                "SecretMissing", f"{field_name}: {error}", generation, frozenset(secrets.used)
            )
        if not VRRP_AUTH_PASS.fullmatch(auth_pass):
            message = (
                f"{field_name}: Secret {auth_ref.name} key {auth_ref.key} is not 1-8 characters of "
                "[A-Za-z0-9._+=-]"
            )
            return PairRejected("SecretMissing", message, generation, frozenset(secrets.used))

    admitted = _Admission(pair, resources, cache, dict(left_out or {}))
    upstream_specs = admitted.parse("Upstream", resources.upstreams, parse_upstream)
    host_specs = admitted.parse("VirtualHost", resources.virtual_hosts, parse_virtual_host)
    backends = Backends(pair, resources.resolve)
    upstreams: dict[tuple[str, str], Upstream] = {}
    upstream_problems: list[Problem] = []
    cache.upstreams.use_pair(pair)
    for key, upstream_spec in upstream_specs:
        built_upstream = cache.upstreams.build(
            key,
            upstream_spec,
            Reads(secrets, backends, {}, {}, resources.services),
            functools.partial(upstream, spec, key, upstream_spec.spec),
        )
        if isinstance(built_upstream, Upstream):
            upstreams[(key.namespace, key.name)] = built_upstream
        else:
            upstream_problems += built_upstream
    rejected_upstreams = {
        (problem.object.namespace, problem.object.name): problem.message
        for problem in reversed(admitted.problems + upstream_problems)  # the first problem of each wins
        if problem.object.kind == "Upstream"
    }
    problems = upstream_problems + duplicate_server_names(host_specs)
    in_conflict = {problem.object for problem in problems}
    hosts: list[VirtualHost] = []
    tls_files: dict[str, ManagedFile] = {}
    cache.hosts.use_pair(pair)
    for key, item in host_specs:
        if key in in_conflict:
            continue
        reads = Reads(secrets, backends, upstreams, rejected_upstreams)
        built, host_problems = cache.hosts.build(key, item, reads, _host_builder(pair, key, item))
        problems += host_problems
        if built is not None:
            hosts.append(built[0])
            tls_files.update((tls_file.path, tls_file) for tls_file in built[1])

    cache.forget_unseen()
    cache.hosts.keep_only({key for key, _ in host_specs if key not in in_conflict})
    cache.upstreams.keep_only({key for key, _ in upstream_specs})
    upstream_list = [upstreams[reference] for reference in sorted(upstreams)]
    state = DesiredState(
        pair=ObjectKey("LoadBalancerPair", namespace, pair.metadata.name),
        nodes=[
            NodeConfig(
                node.name, keepalived(pair, node, auth_pass), nginx_watch(spec, node), firewall(spec, node)
            )
            for node in spec.nodes
        ],
        nginx=nginx_main(spec, [u.path for u in upstream_list] + [h.path for h in hosts], hosts),
        upstreams=upstream_list,
        virtual_hosts=hosts,
        tls_files=[tls_files[path] for path in sorted(tls_files)],
        check_script=check_script(spec),
    )
    return PairBuild(
        pair=pair,
        generation=generation,
        state=state,
        layout=access.layout,
        ssh_private_key=ssh_key,
        attached=admitted.attached,
        problems=admitted.problems + sorted(problems),
        secrets_used=frozenset(secrets.used),
        renders=cache.renders,
    )


def _host_builder(
    pair: LoadBalancerPair, key: ObjectKey, item: VirtualHostSpec
) -> Callable[[Reads], BuiltHost]:
    def build(reads: Reads) -> BuiltHost:
        builder = VirtualHostBuilder(pair, key, reads)
        return builder.build(item), builder.problems

    return build


@dataclass
class _Admission:
    """Parses the attached objects and admits those the pair allows, recording why others are out."""

    pair: LoadBalancerPair
    resources: PairResources
    cache: ParseCache
    left_out: dict[ObjectKey, str]
    attached: list[AttachedObject] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def parse(
        self,
        kind: str,
        bodies: Sequence[Mapping[str, Any]],
        parse: Callable[[Mapping[str, Any]], ParsedT],
    ) -> list[tuple[ObjectKey, ParsedT]]:
        admitted = []
        for body in bodies:
            key = object_key(kind, body)
            self.attached.append(AttachedObject(key, generation_of(body)))
            try:
                item = self.cache.parse(kind, body, parse)
            except SpecError as error:
                self.problems.extend(Problem(key, "spec", problem) for problem in error.problems)
                continue
            if key in self.left_out:
                self.problems.append(Problem(key, "spec", self.left_out[key]))
            elif self._namespace_allowed(key.namespace):
                admitted.append((key, item))
            else:
                pair_key = ObjectKey(
                    "LoadBalancerPair", self.pair.metadata.namespace, self.pair.metadata.name
                )
                self.problems.append(
                    Problem(key, "spec.pairRef", f"{pair_key} does not allow namespace {key.namespace}")
                )
        # By the key's fields: a tuple of strings compares in C, the dataclass's own order in Python.
        return sorted(admitted, key=lambda entry: (entry[0].namespace, entry[0].name))

    def _namespace_allowed(self, namespace: str) -> bool:
        pair = self.pair
        allowed = pair.spec.allowed_namespaces
        if namespace == pair.metadata.namespace or allowed.from_ == "All":
            return True
        if allowed.from_ == "Same" or allowed.selector is None:
            return False
        labels = self.resources.namespace_labels(namespace) or {}
        return all(labels.get(key) == value for key, value in allowed.selector.match_labels.items())


__all__ = [
    "AttachedObject",
    "PairAccess",
    "PairBuild",
    "PairRejected",
    "PairResources",
    "ParseCache",
    "Problem",
    "build_pair",
    "pair_access",
]
