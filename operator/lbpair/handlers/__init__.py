"""kopf handlers: the only module that imports kopf. Each is thin and hands over to lbpair.reconcile.

Run with `kopf run -m lbpair.handlers --all-namespaces --standalone`.

How work flows: one daemon per LoadBalancerPair runs a convergence loop. Each pass renders the pair from
the in-memory indexes (Upstreams, VirtualHosts, namespace labels) and the Secret store, probes both
nodes, rolls out what differs and writes status. A pass starts when something the pair uses changes
(at once after a quiet spell; the rest of a burst of edits waits for quiet and makes one more push, see
Coalescing) or, failing that, every probe interval, which is also how failovers, drift and recovered
nodes are noticed. kopf fills the indexes before any handler or daemon runs, so a pair is never rendered
from a partial view of its VirtualHosts (e.g. right after a restart); the Secret store is listed at
startup, before kopf watches anything, for the same reason.

One operator acts at a time (handlers/leadership.py): with a leader Lease configured, a process stands by
(indexes filled, no pass, no node touched) until it holds the Lease.

kopf never watches Secrets: lbpair.kube.SecretWatch follows only those labelled usable, with the label
selector applied by the API server, in the namespaces the operator may read them in.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import kopf

from lbpair.build import PairResources
from lbpair.build.services import (
    ServiceView,
    followed_service,
    service_view_fields,
    slice_service,
    slice_view_fields,
)
from lbpair.config import OperatorConfig
from lbpair.drill import DRILL_ANNOTATION
from lbpair.handlers.leadership import Leadership
from lbpair.kube import KubeAPI, SecretWatch, load_client_config
from lbpair.metrics import PrometheusRecorder
from lbpair.model import GROUP, VERSION
from lbpair.model.common import ObjectRef, attached_pair
from lbpair.nodes.node import AgentNodes
from lbpair.reconcile import Reconciler
from lbpair.resolver import CachingResolver

FINALIZER = f"{GROUP}/cleanup"


class QuietSuccess(logging.Filter):
    """Drops kopf's per-event "Handler ... succeeded" lines: a pair with hundreds of VirtualHosts would log
    one per object on every edit, drowning the operator's own one line per pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            record.levelno <= logging.INFO and message.startswith("Handler ") and "succeeded" in message
        )


class Wakeups:
    """One event per pair: set when something the pair depends on changes; the pair's loop waits on it."""

    def __init__(self) -> None:
        self._events: dict[ObjectRef, asyncio.Event] = {}

    def event(self, key: ObjectRef) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    def wake(self, key: ObjectRef) -> None:
        self.event(key).set()

    def wake_all(self) -> None:
        for event in self._events.values():
            event.set()

    def forget(self, key: ObjectRef) -> None:
        self._events.pop(key, None)


@kopf.on.startup(id="configure")
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    # Events are posted explicitly, with stable reasons; kopf's per-log-line events would drown them.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    logging.getLogger("kopf.objects").addFilter(QuietSuccess())
    config = OperatorConfig.from_environment()
    memo.config = config
    # The pairs' blocking work (passes, a deleted pair's cleanup) runs here, not in asyncio's default pool
    # (CPUs + 4 threads, shared with anything else that calls to_thread): bounded, sized for the pairs.
    memo.pair_threads = ThreadPoolExecutor(max_workers=config.pass_threads, thread_name_prefix="pair")
    await asyncio.to_thread(load_client_config)
    metrics = PrometheusRecorder()
    memo.stop_metrics = metrics.serve(config.metrics_port).stop if config.metrics_port else None
    memo.metrics = metrics
    memo.leadership = Leadership.of(config, metrics)
    memo.electing = asyncio.create_task(memo.leadership.run(), name="leader election")
    kube = KubeAPI()
    memo.reconciler = Reconciler(AgentNodes(), kube, metrics, config, previews=kube)
    memo.resolver = CachingResolver()
    memo.cleanup_messages = {}
    memo.wakeups = Wakeups()
    memo.generations = LastSeen()  # attached objects' metadata.generation: bumped on spec changes only
    memo.namespace_labels_seen = LastSeen()
    memo.services_seen = LastSeen()  # what builds read of Services and EndpointSlices
    memo.drill_tokens = {}
    loop = asyncio.get_running_loop()

    def secret_changed(secret: ObjectRef) -> None:  # on a watch thread
        loop.call_soon_threadsafe(wake_secret_users, memo, secret)

    memo.secrets = SecretWatch(config.secret_namespaces, secret_changed)
    await asyncio.to_thread(memo.secrets.sync)
    memo.secrets.start()


def wake_secret_users(memo: kopf.Memo, secret: ObjectRef) -> None:
    for key in memo.reconciler.pairs_using_secret(secret):
        memo.wakeups.wake(key)


@kopf.on.cleanup(id="close-connections")
async def close_connections(memo: kopf.Memo, **_: Any) -> None:
    memo.electing.cancel()
    await asyncio.to_thread(memo.leadership.release)
    memo.secrets.stop()
    await asyncio.to_thread(memo.reconciler.close)
    memo.resolver.close()
    memo.pair_threads.shutdown(wait=False, cancel_futures=True)
    if memo.stop_metrics:
        memo.stop_metrics()


# Indexes: the in-memory views a pass renders from.


@kopf.index(GROUP, VERSION, "upstreams", id="upstreams_by_pair")
def upstreams_by_pair(
    body: kopf.Body, namespace: str | None, spec: kopf.Spec, **_: Any
) -> dict[ObjectRef, Any]:
    return {attached_pair(namespace or "", spec): dict(body)}


@kopf.index(GROUP, VERSION, "virtualhosts", id="virtualhosts_by_pair")
def virtualhosts_by_pair(
    body: kopf.Body, namespace: str | None, spec: kopf.Spec, **_: Any
) -> dict[ObjectRef, Any]:
    return {attached_pair(namespace or "", spec): dict(body)}


@kopf.index(GROUP, VERSION, "upstreams", id="upstreams_by_service")
def upstreams_by_service(namespace: str | None, spec: kopf.Spec, **_: Any) -> dict[ObjectRef, Any] | None:
    """The pairs of the Upstreams that follow each Service (spec.serviceRef)."""
    service = followed_service(namespace or "", spec)
    return {service: attached_pair(namespace or "", spec)} if service else None


@kopf.index("", "v1", "services", id="services_by_name")
def services_by_name(namespace: str | None, name: str | None, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    return {ObjectRef(namespace or "", name or ""): service_view_fields(spec)}


@kopf.index("discovery.k8s.io", "v1", "endpointslices", id="endpointslices_by_service")
def endpointslices_by_service(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[ObjectRef, Any] | None:
    service = slice_service(namespace or "", labels)
    return {service: slice_view_fields(body)} if service else None


@kopf.index("", "v1", "namespaces", id="namespace_labels")
def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    return {name: dict(labels)}


# Changes to what a pair uses wake its loop.


class LastSeen:
    """What a pass reads of each watched object, as last seen: an event that changes none of it (a status
    write, above all the operator's own, one per object it programs; an annotation) wakes no pass."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, ...], object] = {}

    def changed(self, key: tuple[str, ...], value: object, *, deleted: bool) -> bool:
        if deleted:
            self._seen.pop(key, None)
            return True
        previous = self._seen.get(key)
        self._seen[key] = value
        return previous != value


@kopf.on.event(GROUP, VERSION, "upstreams", id="upstream-changed")
@kopf.on.event(GROUP, VERSION, "virtualhosts", id="virtualhost-changed")
async def attached_changed(
    *,
    resource: kopf.Resource,
    namespace: str | None,
    name: str | None,
    meta: kopf.Meta,
    spec: kopf.Spec,
    type: str | None,  # ADDED, MODIFIED, DELETED, or None while listing
    memo: kopf.Memo,
    **_: Any,
) -> None:
    key = (resource.plural, namespace or "", name or "")
    generation = int(meta.get("generation") or 0)
    if memo.generations.changed(key, generation, deleted=type == "DELETED"):
        memo.wakeups.wake(attached_pair(namespace or "", spec))


@kopf.on.event("", "v1", "services", id="service-changed")
@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", id="endpointslice-changed")
async def service_changed(
    *,
    body: kopf.Body,
    resource: kopf.Resource,
    namespace: str | None,
    name: str | None,
    labels: kopf.Labels,
    spec: kopf.Spec,
    type: str | None,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """A Service or EndpointSlice change wakes the pairs of the Upstreams that follow the Service, as an
    edit of those Upstreams would; one that changes nothing a build reads wakes none."""
    if resource.plural == "services":
        service: ObjectRef | None = ObjectRef(namespace or "", name or "")
        seen: object = service_view_fields(spec)
    else:
        service, seen = slice_service(namespace or "", labels), slice_view_fields(body)
    key = (resource.plural, namespace or "", name or "")
    if service and memo.services_seen.changed(key, seen, deleted=type == "DELETED"):
        for pair in set(Indexes(kwargs).values("upstreams_by_service", service)):
            memo.wakeups.wake(pair)


@kopf.on.event(GROUP, VERSION, "loadbalancerpairs", id="drill-requested")
async def drill_requested(
    *, namespace: str | None, name: str | None, annotations: kopf.Annotations, memo: kopf.Memo, **_: Any
) -> None:
    """A new drill token starts a pass now rather than at the next probe interval."""
    key = ObjectRef(namespace or "", name or "")
    token = annotations.get(DRILL_ANNOTATION)
    if token and memo.drill_tokens.get(key) != token:
        memo.drill_tokens[key] = token
        memo.wakeups.wake(key)


@kopf.on.event("", "v1", "namespaces", id="namespace-changed")
async def namespace_changed(
    name: str | None, labels: kopf.Labels, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    # Label changes can admit or evict attached objects of pairs with a namespace selector.
    if memo.namespace_labels_seen.changed((name or "",), dict(labels), deleted=type == "DELETED"):
        memo.wakeups.wake_all()


@kopf.daemon(GROUP, VERSION, "loadbalancerpairs", id="converge", cancellation_timeout=30)
async def converge(
    *,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """The pair's convergence loop: one pass per change or probe interval, until the pair goes away."""
    key = ObjectRef(namespace or "", name)
    indexes = Indexes(kwargs)
    wakeup = memo.wakeups.event(key)
    # The pair runs one pass at a time on a thread of memo.pair_threads: a pair whose node hangs holds one
    # thread, never another pair's passes (as long as there are at most config.pass_threads pairs).
    loop = asyncio.get_running_loop()
    coalescing, after_change = Coalescing(memo.config), False
    try:
        while not (memo.leadership.leading.is_set() or stopped):  # a standby: no pass, no node touched
            await _wait_for_change(memo.leadership.leading, stopped, memo.config.probe_interval_seconds)
        while not stopped:
            wakeup.clear()
            resources = PairResources(
                pair=dict(body),
                upstreams=indexes.values("upstreams_by_pair", key),
                virtual_hosts=indexes.values("virtualhosts_by_pair", key),
                secrets=memo.secrets.store.lookup,
                namespace_labels=indexes.lookup("namespace_labels"),
                resolve=memo.resolver,
                services=service_lookup(indexes),
            )
            events = await loop.run_in_executor(memo.pair_threads, memo.reconciler.run_pass, resources)
            memo.metrics.events_posted(key, events)
            attached = resources.attached_by_key()
            for event in events:
                # An attached object's event goes on the object itself (it may be gone by now: then the pair).
                regarding = attached.get(event.regarding, body) if event.regarding else body
                # kopf reads only apiVersion, kind and metadata of the object: a plain dict does.
                kopf.event(
                    cast("kopf.Body", regarding), type=event.type, reason=event.reason, message=event.message
                )
            coalescing.pass_ended(loop.time(), after_change=after_change)
            await _wait_for_change(wakeup, stopped, memo.config.probe_interval_seconds)
            after_change = wakeup.is_set()
            if after_change and not coalescing.starts_at_once(loop.time()):
                await _wait_for_quiet(wakeup, memo.config)
    finally:
        memo.wakeups.forget(key)


def service_lookup(indexes: Indexes) -> Callable[[ObjectRef], ServiceView | None]:
    """A Service's ports and EndpointSlices from the indexes (PairResources.services)."""
    services = indexes.lookup("services_by_name")

    def lookup(service: ObjectRef) -> ServiceView | None:
        ports = services(service)
        if ports is None:
            return None
        slices = sorted(indexes.values("endpointslices_by_service", service), key=lambda s: str(s["name"]))
        return ServiceView(ports=ports, slices=tuple(slices))

    return lookup


class Indexes:
    """The indexes kopf passes to handlers as keyword arguments named after the index functions."""

    def __init__(self, kwargs: Mapping[str, Any]) -> None:
        self._kwargs = kwargs

    def values(self, index: str, key: object) -> list[Any]:
        store: kopf.Index[Any, Any] = self._kwargs[index]
        return list(store.get(key, []))

    def lookup(self, index: str) -> Callable[[Any], Any]:
        """Point lookups into an index whose keys are unique names (each key's store holds one value)."""
        store: kopf.Index[Any, Any] = self._kwargs[index]

        def lookup(key: Any) -> Any:
            return next(iter(store.get(key, [])), None)

        return lookup


@dataclass
class Coalescing:
    """Whether a change starts the pair's next pass at once or waits for its burst to end.

    A change after a quiet spell starts a pass at once (the leading edge: a lone edit waits for nothing).
    Changes that come while a pass started by a change runs, or within `coalesce_seconds` after it ends,
    are the same burst going on (one `kubectl apply` of many objects): they wait until no change has come
    for `coalesce_seconds` (capped, see _wait_for_quiet), so the rest of the burst makes one more push.
    """

    config: OperatorConfig
    burst_until: float = -math.inf
    """Until when (the loop's clock) a change continues the last burst."""

    def pass_ended(self, now: float, *, after_change: bool) -> None:
        self.burst_until = now + self.config.coalesce_seconds if after_change else -math.inf

    def starts_at_once(self, now: float) -> bool:
        """For a change noticed at `now` (a change during the pass is noticed when it ends)."""
        return now >= self.burst_until


async def _wait_for_quiet(wakeup: asyncio.Event, config: OperatorConfig) -> None:
    """Let a burst of edits land before rendering, so it makes one push: wait until no change has come for
    `coalesce_seconds`, but no longer than `coalesce_max_seconds`, so a steady stream still gets passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.coalesce_max_seconds
    while True:
        wakeup.clear()
        quiet_for = min(config.coalesce_seconds, deadline - loop.time())
        if quiet_for <= 0:
            return
        try:
            await asyncio.wait_for(wakeup.wait(), timeout=quiet_for)
        except TimeoutError:
            return  # quiet


async def _wait_for_change(wakeup: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    waiters = {asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.on.delete(GROUP, VERSION, "loadbalancerpairs", id="remove-from-nodes")
async def remove_from_nodes(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Per the pair's deletionPolicy; an unreachable node keeps the finalizer until it can be cleaned."""
    await memo.leadership.leading.wait()  # a standby leaves the finalizer to the active operator
    problem = await asyncio.get_running_loop().run_in_executor(
        memo.pair_threads, memo.reconciler.remove_from_nodes, dict(body), memo.secrets.store.lookup
    )
    key = ObjectRef(body.metadata.namespace or "", body.metadata.name or "")
    if problem:
        if memo.cleanup_messages.get(key) != problem:  # one event per distinct problem, not per retry
            kopf.event(body, type="Warning", reason="CleanupPending", message=problem)
        memo.cleanup_messages[key] = problem
        raise kopf.TemporaryError(problem, delay=10)
    memo.cleanup_messages.pop(key, None)
