"""What a pair's passes remember from one to the next (lbpair.reconcile keeps one per pair)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from lbpair.build import PairResources, ParseCache
from lbpair.build.router_ids import RouterIdClaim
from lbpair.deletion import FormerNodes
from lbpair.events import PairObservation
from lbpair.model.common import ObjectRef
from lbpair.model.status import AttachedStatus, PairStatus
from lbpair.render.model import ObjectKey
from lbpair.rollout import FailedRollout


@dataclass
class PairMemory:
    """What earlier passes saw and wrote, so events fire on transitions and unchanged status is not
    written again."""

    # Passes and the deletion of a pair never overlap: a pass in flight must not re-push what the
    # deletion just removed. Once deleting, no pass touches the nodes again.
    lock: threading.Lock = field(default_factory=threading.Lock)
    deleting: bool = False
    observed: PairObservation = field(default_factory=PairObservation)
    problem: str = ""
    pass_error: str = ""
    applied_hashes: dict[str, str] = field(default_factory=dict)
    failures: dict[str, FailedRollout] = field(default_factory=dict)
    secrets: frozenset[ObjectRef] = frozenset()
    status: PairStatus | None = None
    status_written_at: float | None = None  # time.monotonic()
    attached: dict[ObjectKey, AttachedStatus] = field(default_factory=dict)
    parsed: ParseCache = field(default_factory=ParseCache)
    refusals: dict[ObjectKey, Refusal] = field(default_factory=dict)
    former_nodes: FormerNodes = field(default_factory=FormerNodes)
    router_ids: RouterIdClaim | None = None
    """The VRRP router ids and networks of its last build, checked against every other pair's."""

    def refusals_in_force(self, resources: PairResources) -> dict[ObjectKey, str]:
        """Forgets the refusals of objects that changed (or went away) or of a pair that changed: those are
        tried again. The rest stay left out, with why."""
        generations = resources.generations()
        pair_generation = generations.pop(None)
        self.refusals = {
            key: refusal
            for key, refusal in self.refusals.items()
            if generations.get(key) == refusal.generation and refusal.pair_generation == pair_generation
        }
        return self.left_out()

    def left_out(self) -> dict[ObjectKey, str]:
        return {key: refusal.message for key, refusal in self.refusals.items()}


@dataclass(frozen=True)
class Refusal:
    """An attached object a node's validators refused: left out, and not tried again on a timer (which would
    hold up everyone else's changes), but as soon as it or its pair changes."""

    generation: int
    pair_generation: int
    message: str
