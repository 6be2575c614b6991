"""kopf handlers: the only module that imports kopf. Each is thin and hands over to lbpair.reconcile.

Run with `kopf run -m lbpair.handlers --all-namespaces --standalone`.

How work flows: one daemon per LoadBalancerPair runs a convergence loop. Each pass renders the pair from
the in-memory indexes (Upstreams, VirtualHosts, namespace labels) and the Secret store, probes both
nodes, rolls out what differs and writes status. A pass starts when something the pair uses changes
(coalesced over a short window, so a burst of edits makes one push) or, failing that, every probe
interval, which is also how failovers, drift and recovered nodes are noticed. kopf fills the indexes
before any handler or daemon runs, so a pair is never rendered from a partial view of its VirtualHosts
(e.g. right after a restart); the Secret store is listed at startup, before kopf watches anything, for
the same reason.

One operator acts at a time (handlers/leadership.py): with a leader Lease configured, a process stands by
(indexes filled, no pass, no node touched) until it holds the Lease.

kopf never watches Secrets: lbpair.kube.SecretWatch follows only those labelled usable, with the label
selector applied by the API server, in the namespaces the operator may read them in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from lbpair.build import PairResources
from lbpair.config import OperatorConfig
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
    await asyncio.to_thread(load_client_config)
    metrics = PrometheusRecorder()
    memo.stop_metrics = metrics.serve(config.metrics_port).stop if config.metrics_port else None
    memo.metrics = metrics
    memo.leadership = Leadership.of(config, metrics)
    memo.electing = asyncio.create_task(memo.leadership.run(), name="leader election")
    memo.reconciler = Reconciler(AgentNodes(), KubeAPI(), metrics, config)
    memo.resolver = CachingResolver()
    memo.cleanup_messages = {}
    memo.wakeups = Wakeups()
    memo.generations = SpecGenerations()
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


@kopf.index("", "v1", "namespaces", id="namespace_labels")
def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    return {name: dict(labels)}


# Changes to what a pair uses wake its loop.


class SpecGenerations:
    """The metadata.generation last seen per attached object. The API server bumps it on spec changes
    only, so a status write (above all the operator's own, one per object it programs) wakes no pass."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], int] = {}

    def changed(self, key: tuple[str, str, str], generation: int, *, deleted: bool) -> bool:
        if deleted:
            self._seen.pop(key, None)
            return True
        previous = self._seen.get(key)
        self._seen[key] = generation
        return previous != generation


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


@kopf.on.event("", "v1", "namespaces", id="namespace-changed")
async def namespace_changed(memo: kopf.Memo, **_: Any) -> None:
    # Label changes can admit or evict attached objects of pairs with a namespace selector.
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
    # Each pair's passes run on a thread of their own: a pair whose node hangs never holds up another's
    # passes, as it would in asyncio's shared default pool (a handful of threads on a small machine).
    pass_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pass-{key}")
    loop = asyncio.get_running_loop()
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
            )
            events = await loop.run_in_executor(pass_thread, memo.reconciler.run_pass, resources)
            memo.metrics.events_posted(key, events)
            attached = resources.attached_by_key()
            for event in events:
                # An attached object's event goes on the object itself (it may be gone by now: then the pair).
                regarding = attached.get(event.regarding, body) if event.regarding else body
                # kopf reads only apiVersion, kind and metadata of the object: a plain dict does.
                kopf.event(
                    cast("kopf.Body", regarding), type=event.type, reason=event.reason, message=event.message
                )
            await _wait_for_change(wakeup, stopped, memo.config.probe_interval_seconds)
            if wakeup.is_set():
                await _wait_for_quiet(wakeup, memo.config)
    finally:
        memo.wakeups.forget(key)
        pass_thread.shutdown(wait=False, cancel_futures=True)


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
    problem = await asyncio.to_thread(
        memo.reconciler.remove_from_nodes, dict(body), memo.secrets.store.lookup
    )
    key = ObjectRef(body.metadata.namespace or "", body.metadata.name or "")
    if problem:
        if memo.cleanup_messages.get(key) != problem:  # one event per distinct problem, not per retry
            kopf.event(body, type="Warning", reason="CleanupPending", message=problem)
        memo.cleanup_messages[key] = problem
        raise kopf.TemporaryError(problem, delay=10)
    memo.cleanup_messages.pop(key, None)
