"""Status writes of a pass: the pair's, and each attached object's (with the backend probe the Upstreams'
need), each written only when its own content changed."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from lbpair.build import PairBuild, PairRejected, PairResources
from lbpair.build.certificates import ExpiryCheck
from lbpair.config import OperatorConfig
from lbpair.events import Event, attached_rejection_event, backend_events, certificate_events, rejection_event
from lbpair.health import NodeReport, PairHealth
from lbpair.memory import PairMemory
from lbpair.model.common import ObjectRef
from lbpair.model.status import PairStatus, timestamp
from lbpair.nodes.backend_probe import BackendTarget
from lbpair.nodes.client import NodeError
from lbpair.nodes.node import Node
from lbpair.sinks import StatusSink
from lbpair.status import (
    attached_status,
    attached_status_in,
    failed_pass_status,
    rejected_pair_status,
    same_but_probe_times,
    with_backends,
)

log = logging.getLogger(__name__)


class StatusWriter:
    """Writes statuses through the sink, remembering in the pair's memory what it wrote."""

    def __init__(self, sink: StatusSink, config: OperatorConfig) -> None:
        self._sink = sink
        self._warning_days = config.certificate_warning_days
        self._refresh_seconds = config.status_refresh_seconds

    def pair(self, key: ObjectRef, memory: PairMemory, status: PairStatus) -> None:
        """The pair's status, unless it differs from the one last written only in probe times and that
        one is younger than the refresh interval."""
        now = time.monotonic()
        written_at = memory.status_written_at
        fresh = written_at is not None and now - written_at < self._refresh_seconds
        if fresh and same_but_probe_times(status, memory.status):
            return
        self._sink.patch_status("loadbalancerpairs", key.namespace, key.name, status)
        memory.status, memory.status_written_at = status, now

    def failed_pass(self, key: ObjectRef, memory: PairMemory, error: Exception) -> list[Event]:
        """Conditions go Unknown with the error (a stale Ready=True must not stand); one event per distinct
        error, not one per pass. The next pass starts afresh."""
        message = f"internal error ({type(error).__name__}: {error}); see the operator log"
        # Nothing of the current generation was observed: keep the one last observed.
        generation = (memory.status.observed_generation if memory.status else None) or 0
        events = [Event.warning("PassFailed", message)] if message != memory.pass_error else []
        memory.pass_error = message
        now = timestamp(datetime.datetime.now(datetime.UTC))
        try:
            self.pair(key, memory, failed_pass_status(memory.status, generation, message, now))
        except Exception:
            log.exception("pair=%s: writing the failed pass's status failed too", key)
        return events

    def rejected(self, key: ObjectRef, memory: PairMemory, build: PairRejected, now: str) -> list[Event]:
        """A pair whose spec cannot be built: its status says why; one event per new reason."""
        events = rejection_event(memory.problem, build.message)
        memory.problem = build.message
        self.pair(key, memory, rejected_pair_status(build, memory.status, now))
        return events

    def attached(
        self,
        build: PairBuild,
        *,
        health: PairHealth,
        resources: PairResources,
        memory: PairMemory,
        moment: datetime.datetime,
        backends: tuple[list[str], Callable[[], dict[str, dict[BackendTarget, bool]]]],
    ) -> tuple[int, list[Event]]:
        """Each attached object's status, written only when its own content changed; returns how many
        were written and their events (refusals, certificate trouble, backends down or back per node, as
        the pair's nodes' probes see them: `backends` = node names and the probe, run once, after every
        VirtualHost's status is written, so that no VirtualHost's Programmed waits on a backend's timeout)."""
        node_names, probe = backends
        probes: dict[str, dict[BackendTarget, bool]] | None = None
        now = timestamp(moment)
        written, events, included = 0, list[Event](), set(build.state.included)
        expiry = ExpiryCheck.warning_days_ahead(moment, self._warning_days)
        bodies = resources.attached_by_key()
        for item in sorted(build.attached, key=lambda item: item.key.kind == "Upstream"):
            previous = memory.attached.get(item.key) or attached_status_in(bodies.get(item.key))
            status = attached_status(
                build, health, item, included=item.key in included, previous=previous, at=now, expiry=expiry
            )
            events += attached_rejection_event(item.key, previous, status)
            events += certificate_events(item.key, previous, status)
            if item.key.kind == "Upstream":
                probes = probe() if probes is None else probes
                upstream = build.upstreams_by_key.get(item.key)
                status, changes = with_backends(
                    status, upstream, probes, nodes=node_names, previous=previous, at=now
                )
                events += backend_events(item.key, changes)
            if status != previous:
                self._sink.patch_status(item.plural, item.key.namespace, item.key.name, status)
                written += 1
            memory.attached[item.key] = status
        return written, events


def probe_backends(
    nodes: Mapping[str, Node], reports: Sequence[NodeReport], build: PairBuild
) -> dict[str, dict[BackendTarget, bool]]:
    """Each reachable node's view of every backend server of the pair's Upstreams: one agent command per
    node, both at once (a blackholed backend costs the pass its 1 s timeout once, not once per node); a
    node whose probe fails is left out (its last view stands)."""
    targets = {
        BackendTarget(server.address, server.port, upstream.health_path or "")
        for upstream in build.state.upstreams
        for server in upstream.servers
    }
    probed = [nodes[r.name] for r in reports if targets and r.observation is not None and r.name in nodes]
    with ThreadPoolExecutor(max_workers=max(len(probed), 1), thread_name_prefix="backend-probe") as pool:
        futures = {node.name: pool.submit(node.probe_backends, targets) for node in probed}
    probes: dict[str, dict[BackendTarget, bool]] = {}
    for name, future in futures.items():
        try:
            probes[name] = future.result()
        except NodeError as error:
            log.warning("pair node=%s: probing backends failed: %s", name, error)
    return probes
