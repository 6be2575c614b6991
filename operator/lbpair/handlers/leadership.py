"""One active operator: the process that holds the leader Lease (lbpair.kube.LeaderLease) acts; every other
replica, or a stray second install given the same Lease, stands by with its indexes filled and takes over
when the holder stops renewing.

Why a Lease and not kopf's peering: kopf pauses an operator only for a peer of *higher* priority; replicas
of one Deployment share a priority, and kopf then lets both run (with a warning). Peering also needs
cluster-wide CRDs and a ClusterRole to write them, where a Lease needs a Role on one object in the
operator's own namespace.

Losing the Lease (not renewed within two thirds of its duration) ends the process at once, as
kube-controller-manager does: a graceful stop could still push while the new holder starts, and the nodes'
own commands are crash-safe (journaled swaps). The kubelet restarts it, and it stands by.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

from lbpair.config import OperatorConfig
from lbpair.kube import LeaderLease
from lbpair.metrics import PrometheusRecorder

log = logging.getLogger(__name__)

RENEW_FRACTION = 1 / 3  # the holder renews every third of the lease's duration ...
RENEW_DEADLINE_FRACTION = 2 / 3  # ... and exits if it could not for two thirds of it
RETRY_FRACTION = 2 / 15  # a standby looks every 2 s of a 15 s lease (client-go's defaults)
LOST_LEASE_EXIT_CODE = 3


class Leadership:
    """`leading` is set while this process may act; without a Lease configured, from the start."""

    def __init__(
        self, lease: LeaderLease | None, duration_seconds: float, metrics: PrometheusRecorder
    ) -> None:
        self.leading = asyncio.Event()
        self._lease, self._duration, self._metrics = lease, duration_seconds, metrics

    @classmethod
    def of(cls, config: OperatorConfig, metrics: PrometheusRecorder) -> Leadership:
        lease = None
        if config.leader_lease:
            namespace, _, name = config.leader_lease.partition("/")
            # As client-go names candidates: the host (the pod's name in a pod), made unique per process.
            identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
            lease = LeaderLease(namespace, name, identity, config.leader_lease_seconds, clock=time.monotonic)
        return cls(lease, config.leader_lease_seconds, metrics)

    async def run(self) -> None:
        """Acquire the Lease (standing by while another holds it), then renew it for as long as we run."""
        lease = self._lease
        self._metrics.leading(lease is None)
        if lease is None:
            self.leading.set()
            return
        log.info("leader election: Lease %s/%s as %s", lease.namespace, lease.name, lease.identity)
        standing_by_for: str | None = None
        while not await self._attempt(lease):
            if lease.holder != standing_by_for:
                standing_by_for = lease.holder
                log.info("standing by: Lease %s/%s is held by %s", lease.namespace, lease.name, lease.holder)
            await asyncio.sleep(self._duration * RETRY_FRACTION)
        log.info("leading: holds Lease %s/%s as %s", lease.namespace, lease.name, lease.identity)
        self._metrics.leading(True)
        self.leading.set()
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self._duration * RENEW_FRACTION)
            deadline = renewed + self._duration * RENEW_DEADLINE_FRACTION
            while not await self._attempt(lease, deadline - time.monotonic()):
                if lease.holder != lease.identity or time.monotonic() >= deadline:
                    self._lost(lease)
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            renewed = time.monotonic()

    def release(self) -> None:
        """On a clean shutdown, after the handlers stopped: a standby takes over at its next look."""
        if self._lease is not None and self.leading.is_set():
            self._lease.release()

    async def _attempt(self, lease: LeaderLease, timeout: float | None = None) -> bool:
        try:
            return await asyncio.wait_for(asyncio.to_thread(lease.try_acquire), timeout)
        except TimeoutError:
            log.warning("leader lease %s/%s: no answer in time", lease.namespace, lease.name)
        except Exception as error:  # noqa: BLE001 - the API server away: try again, within the deadline
            log.warning("leader lease %s/%s: %s", lease.namespace, lease.name, error)
        return False

    def _lost(self, lease: LeaderLease) -> None:
        log.critical(
            "lost Lease %s/%s (held by %r): exiting so that only one operator acts",
            *(lease.namespace, lease.name, lease.holder),
        )
        logging.shutdown()
        os._exit(LOST_LEASE_EXIT_CODE)
