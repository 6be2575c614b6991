"""Where a pass reports: the API server (status) and the operator's metrics. Protocols, so the coordinator
is driven by fakes in unit tests and depends on neither kubernetes nor prometheus_client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from lbpair.health import PairHealth
from lbpair.model.common import ObjectRef
from lbpair.model.status import StatusModel


class StatusSink(Protocol):
    def patch_status(self, plural: str, namespace: str, name: str, status: StatusModel) -> None: ...


class PassRecorder(Protocol):
    """Where passes report for the operator's metrics (lbpair.metrics.PrometheusRecorder)."""

    def pass_finished(self, pair: ObjectRef, outcome: str, seconds: float, *, ready: bool) -> None: ...

    def node_rolled_out(self, pair: ObjectRef, node: str, reason: str) -> None:
        """A rollout to `node` took its config ("Applied") or failed with this event reason."""

    def services_reloaded(self, pair: ObjectRef, reloads: Sequence[str]) -> None:
        """The services a pass reloaded, each as `<service>@<node>`."""

    def pair_observed(self, pair: ObjectRef, health: PairHealth, refused_objects: int) -> None: ...

    def pair_removed(self, pair: ObjectRef) -> None: ...
