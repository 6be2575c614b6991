"""Prometheus metrics of the operator's passes: the only module that imports prometheus_client.

The coordinator reports through lbpair.sinks.PassRecorder; this is its Prometheus implementation,
served on LBPAIR_METRICS_PORT at /metrics. Labels stay bounded: a pair's namespace and name, its nodes,
and outcomes and reasons from fixed sets. Every series of a pair goes away with the pair, so an alert on
a deleted pair's last Ready=0 cannot fire forever.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Sequence
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

from lbpair.health import PairHealth
from lbpair.model.common import ObjectRef

PASS_OUTCOMES = ("applied", "unchanged", "rejected", "rollout-failed", "error")
"""What a pass can end in (lbpair.reconcile logs the same words); each starts at 0 for every pair."""
PASS_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""An unchanged pass takes milliseconds, a push to both nodes about a second, a node timing out tens."""
APPLIED = "Applied"
"""A node rollout's reason when the node took the config; a failed one has its event's reason."""
PAIR = ("namespace", "pair")
NODE = (*PAIR, "node")
Metric = TypeVar("Metric", bound=MetricWrapperBase)


class PrometheusRecorder:
    """lbpair.sinks.PassRecorder, kept in a Prometheus registry. Passes of different pairs run on
    threads of their own: the pair's series bookkeeping is locked."""

    def __init__(self) -> None:
        registry = self._registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # the operator's own memory, CPU and open files
        self._passes = Counter(
            "lbpair_passes", "Passes over a pair, by how they ended.", [*PAIR, "outcome"], registry=registry
        )
        self._pass_seconds = Histogram(
            "lbpair_pass_duration_seconds",
            "How long a pass over a pair took: build, probe, rollout and status.",
            PAIR,
            buckets=PASS_SECONDS_BUCKETS,
            registry=registry,
        )
        self._rollouts = Counter(
            "lbpair_node_rollouts",
            "Config rollouts to a node: outcome applied or failed, reason Applied or the event's reason "
            "(Rejected, NodeUnreachable, RolledBack, RestoreFailed).",
            [*NODE, "outcome", "reason"],
            registry=registry,
        )
        self._ready = Gauge(
            "lbpair_pair_ready",
            "1 while the pair's Ready condition is True, else 0.",
            PAIR,
            registry=registry,
        )
        self._left_out = Gauge(
            "lbpair_pair_refused_objects",
            "Attached objects a node's validators refused, left out of the pair's config until they change.",
            PAIR,
            registry=registry,
        )
        self._last_applied = Gauge(
            "lbpair_pair_last_applied_timestamp_seconds",
            "When a pass last put a new config live on every node that needed it (Unix time).",
            PAIR,
            registry=registry,
        )
        self._vips_held = Gauge(
            "lbpair_node_vips_held",
            "The pair's VIPs on the node's interfaces as last probed (more than one holder: split brain).",
            NODE,
            registry=registry,
        )
        self._reachable = Gauge(
            "lbpair_node_reachable", "1 if the node answered the last probe, else 0.", NODE, registry=registry
        )
        self._lock = threading.Lock()
        self._series: defaultdict[ObjectRef, set[tuple[MetricWrapperBase, tuple[str, ...]]]] = defaultdict(
            set
        )
        self._nodes: dict[ObjectRef, set[str]] = {}

    def serve(self, port: int) -> MetricsEndpoint:
        """Serve /metrics on `port` (all addresses; 0: a free one) from a thread of its own."""
        server, thread = start_http_server(port, registry=self._registry)
        return MetricsEndpoint(server, thread)

    def pass_finished(self, pair: ObjectRef, outcome: str, seconds: float, *, ready: bool) -> None:
        with self._lock:
            for each in PASS_OUTCOMES:  # increase() needs a series before its first rise: all start at 0
                self._series_of(self._passes, pair, each)
            self._series_of(self._passes, pair, outcome).inc()
            self._series_of(self._pass_seconds, pair).observe(seconds)
            self._series_of(self._ready, pair).set(ready)
            if outcome == "applied":
                self._series_of(self._last_applied, pair).set(time.time())

    def node_rolled_out(self, pair: ObjectRef, node: str, reason: str) -> None:
        outcome = "applied" if reason == APPLIED else "failed"
        with self._lock:
            self._series_of(self._rollouts, pair, node, outcome, reason).inc()

    def pair_observed(self, pair: ObjectRef, health: PairHealth, refused_objects: int) -> None:
        """The nodes as the pass probed them; a node that left the pair loses its series."""
        held = {node.name: 0 for node in health.nodes}
        for holders in health.holders.values():
            for name in holders:
                held[name] += 1
        with self._lock:
            for gone in self._nodes.get(pair, set()) - held.keys():
                self._remove(pair, (self._vips_held, self._reachable), gone)
            self._nodes[pair] = set(held)
            for node in health.nodes:
                self._series_of(self._vips_held, pair, node.name).set(held[node.name])
                self._series_of(self._reachable, pair, node.name).set(node.reachable)
            self._series_of(self._left_out, pair).set(refused_objects)

    def pair_removed(self, pair: ObjectRef) -> None:
        with self._lock:
            for metric, labels in self._series.pop(pair, set()):
                metric.remove(*labels)
            self._nodes.pop(pair, None)

    def _series_of(self, metric: Metric, pair: ObjectRef, *labels: str) -> Metric:
        values = (pair.namespace, pair.name, *labels)
        self._series[pair].add((metric, values))
        return metric.labels(*values)

    def _remove(self, pair: ObjectRef, metrics: Sequence[MetricWrapperBase], node: str) -> None:
        values = (pair.namespace, pair.name, node)
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
