"""Prometheus metrics of the operator's passes: the only module that imports prometheus_client.

The coordinator reports through lbpair.sinks.PassRecorder; this is its Prometheus implementation,
served on LBPAIR_METRICS_PORT at /metrics. The handlers add the events a pass posted (failovers, split
brain, drift reverted) and whether this process is the active operator. Labels stay bounded: a pair's
namespace and name, its nodes, the services reloaded, outcomes and reasons from fixed sets, and a node's
current config hash (one series per node: the previous hash's goes). Every series of a pair goes away
with the pair, so an alert on a deleted pair's last Ready=0 cannot fire forever.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase

from lbpair.events import Event
from lbpair.health import PairHealth
from lbpair.model.common import ObjectRef

PASS_OUTCOMES = ("applied", "unchanged", "rejected", "rollout-failed", "error")
"""What a pass can end in (lbpair.reconcile logs the same words); each starts at 0 for every pair."""
PASS_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""An unchanged pass takes milliseconds, a push to both nodes about a second, a node timing out tens."""
APPLIED = "Applied"
"""A node rollout's reason when the node took the config; a failed one has its event's reason."""
ROLLED_BACK = "RolledBack"
PAIR = ("namespace", "pair")
NODE = (*PAIR, "node")
Metric = TypeVar("Metric", bound=MetricWrapperBase)


@dataclass(frozen=True)
class PairMetrics:
    """Every lbpair_* metric but the process-wide lbpair_leader, in one registry."""

    passes: Counter
    pass_seconds: Histogram
    rollouts: Counter
    rollbacks: Counter
    reloads: Counter
    ready: Gauge
    left_out: Gauge
    last_applied: Gauge
    split_brain: Gauge
    vips_held: Gauge
    reachable: Gauge
    last_probe: Gauge
    config_info: Gauge
    event_counters: dict[str, Counter]
    """Counters of the pair's events by reason: FailoverDetected, SplitBrain, DriftReverted."""

    @classmethod
    def define(cls, registry: CollectorRegistry) -> PairMetrics:
        def counter(name: str, documentation: str, labels: Sequence[str] = PAIR) -> Counter:
            return Counter(name, documentation, labels, registry=registry)

        def gauge(name: str, documentation: str, labels: Sequence[str] = PAIR) -> Gauge:
            return Gauge(name, documentation, labels, registry=registry)

        return cls(
            passes=counter("lbpair_passes", "Passes over a pair, by how they ended.", [*PAIR, "outcome"]),
            pass_seconds=Histogram(
                "lbpair_pass_duration_seconds",
                "How long a pass over a pair took: build, probe, rollout and status.",
                PAIR,
                buckets=PASS_SECONDS_BUCKETS,
                registry=registry,
            ),
            rollouts=counter(
                "lbpair_node_rollouts",
                "Config rollouts to a node: outcome applied or failed, reason Applied or the event's reason "
                "(Rejected, NodeUnreachable, RolledBack, RestoreFailed).",
                [*NODE, "outcome", "reason"],
            ),
            rollbacks=counter(
                "lbpair_node_rollbacks",
                "Rollouts a node's verification failed after the reload: its last good files restored.",
                NODE,
            ),
            reloads=counter(
                "lbpair_node_reloads", "Service reloads (nginx, keepalived) on a node.", [*NODE, "service"]
            ),
            ready=gauge("lbpair_pair_ready", "1 while the pair's Ready condition is True, else 0."),
            left_out=gauge(
                "lbpair_pair_refused_objects",
                "Attached objects a node's validators refused, left out of the pair's config until they "
                "change.",
            ),
            last_applied=gauge(
                "lbpair_pair_last_applied_timestamp_seconds",
                "When a pass last put a new config live on every node that needed it (Unix time).",
            ),
            split_brain=gauge("lbpair_pair_split_brain", "1 while a VIP is on more than one node, else 0."),
            vips_held=gauge(
                "lbpair_node_vips_held",
                "The pair's VIPs on the node's interfaces as last probed (more than one holder: split "
                "brain).",
                NODE,
            ),
            reachable=gauge("lbpair_node_reachable", "1 if the node answered the last probe, else 0.", NODE),
            last_probe=gauge(
                "lbpair_node_last_probe_timestamp_seconds",
                "When the node last answered a probe (Unix time).",
                NODE,
            ),
            config_info=gauge(
                "lbpair_node_config_info",
                "1 for the config hash the node's services were last verified to run (label config_hash).",
                [*NODE, "config_hash"],
            ),
            event_counters={
                "FailoverDetected": counter("lbpair_failovers", "VIPs seen moving from one node to another."),
                "SplitBrain": counter("lbpair_split_brains", "Times a VIP was seen on more than one node."),
                "DriftReverted": counter(
                    "lbpair_drift_reverts", "Rollouts that put back hand edits of managed files on a node."
                ),
            },
        )


class PrometheusRecorder:
    """lbpair.sinks.PassRecorder, kept in a Prometheus registry. Passes of different pairs run on
    threads of their own: the pair's series bookkeeping is locked."""

    def __init__(self) -> None:
        registry = self._registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # the operator's own memory, CPU and open files
        self._metrics = PairMetrics.define(registry)
        self._leader = Gauge(
            "lbpair_leader",
            "1 while this operator process is the active one (holds the leader Lease, or runs without one).",
            registry=registry,
        )
        self._lock = threading.Lock()
        self._series: defaultdict[ObjectRef, set[tuple[MetricWrapperBase, tuple[str, ...]]]] = defaultdict(
            set
        )
        self._nodes: dict[ObjectRef, set[str]] = {}
        self._config_hashes: dict[tuple[ObjectRef, str], str] = {}

    def serve(self, port: int) -> MetricsEndpoint:
        """Serve /metrics on `port` (all addresses; 0: a free one) from a thread of its own."""
        server, thread = start_http_server(port, registry=self._registry)
        return MetricsEndpoint(server, thread)

    def leading(self, active: bool) -> None:
        """Whether this process is the one that acts (lbpair.kube.LeaderLease)."""
        self._leader.set(active)

    def pass_finished(self, pair: ObjectRef, outcome: str, seconds: float, *, ready: bool) -> None:
        metrics = self._metrics
        with self._lock:
            # increase() needs a series before its first rise: every counter of a pair starts at 0.
            for each in PASS_OUTCOMES:
                self._series_of(metrics.passes, pair, each)
            for counter in metrics.event_counters.values():
                self._series_of(counter, pair)
            self._series_of(metrics.passes, pair, outcome).inc()
            self._series_of(metrics.pass_seconds, pair).observe(seconds)
            self._series_of(metrics.ready, pair).set(ready)
            if outcome == "applied":
                self._series_of(metrics.last_applied, pair).set(time.time())

    def node_rolled_out(self, pair: ObjectRef, node: str, reason: str) -> None:
        outcome = "applied" if reason == APPLIED else "failed"
        with self._lock:
            self._series_of(self._metrics.rollouts, pair, node, outcome, reason).inc()
            rollbacks = self._series_of(self._metrics.rollbacks, pair, node)
            if reason == ROLLED_BACK:
                rollbacks.inc()

    def services_reloaded(self, pair: ObjectRef, reloads: Sequence[str]) -> None:
        """`reloads` as lbpair.rollout.PairRollout.reloads lists them: `<service>@<node>`."""
        with self._lock:
            for reload in reloads:
                service, _, node = reload.partition("@")
                self._series_of(self._metrics.reloads, pair, node, service).inc()

    def events_posted(self, pair: ObjectRef, events: Iterable[Event]) -> None:
        """The events of the pair's pass (failovers, split brain, drift reverted are counted)."""
        with self._lock:
            for event in events:
                counter = self._metrics.event_counters.get(event.reason)
                if counter is not None and event.regarding is None:
                    self._series_of(counter, pair).inc()

    def pair_observed(self, pair: ObjectRef, health: PairHealth, refused_objects: int) -> None:
        """The nodes as the pass probed them; a node that left the pair loses its series."""
        metrics = self._metrics
        held = {node.name: 0 for node in health.nodes}
        for holders in health.holders.values():
            for name in holders:
                held[name] += 1
        probed_at = time.time()
        with self._lock:
            for gone in self._nodes.get(pair, set()) - held.keys():
                self._remove(pair, (metrics.vips_held, metrics.reachable, metrics.last_probe), gone)
                self._set_config_hash(pair, gone, "")
            self._nodes[pair] = set(held)
            for node in health.nodes:
                self._series_of(metrics.vips_held, pair, node.name).set(held[node.name])
                self._series_of(metrics.reachable, pair, node.name).set(node.reachable)
                if node.observation is not None:
                    self._series_of(metrics.last_probe, pair, node.name).set(probed_at)
                    self._set_config_hash(pair, node.name, node.observation.live_hash)
            self._series_of(metrics.left_out, pair).set(refused_objects)
            split = any(len(holders) > 1 for holders in health.holders.values())
            self._series_of(metrics.split_brain, pair).set(split)

    def pair_removed(self, pair: ObjectRef) -> None:
        with self._lock:
            for metric, labels in self._series.pop(pair, set()):
                metric.remove(*labels)
            self._nodes.pop(pair, None)
            for key in [key for key in self._config_hashes if key[0] == pair]:
                del self._config_hashes[key]

    def _set_config_hash(self, pair: ObjectRef, node: str, config_hash: str) -> None:
        """One config_info series per node: the hash it runs now ("" after a swap not yet verified: none)."""
        previous = self._config_hashes.pop((pair, node), "")
        if previous and previous != config_hash:
            self._remove(pair, (self._metrics.config_info,), node, previous)
        if config_hash:
            self._config_hashes[pair, node] = config_hash
            self._series_of(self._metrics.config_info, pair, node, config_hash).set(1)

    def _series_of(self, metric: Metric, pair: ObjectRef, *labels: str) -> Metric:
        values = (pair.namespace, pair.name, *labels)
        self._series[pair].add((metric, values))
        return metric.labels(*values)

    def _remove(self, pair: ObjectRef, metrics: Sequence[MetricWrapperBase], *labels: str) -> None:
        values = (pair.namespace, pair.name, *labels)
        for metric in metrics:
            self._series[pair].discard((metric, values))
            metric.remove(*values)


@dataclass(frozen=True)
class MetricsEndpoint:
    """The HTTP server of /metrics."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
