"""Failover drills on demand: the annotation lb.lbpair.dev/drill with a token of the user's choosing.

A new token (GitOps-friendly: set it in Git, the drill runs once) drains the VIP holder, measures on the
nodes how long the VIP was on no node, fails back and records status.lastDrill plus an event. The token
done is recorded, so the same value never runs again, even after an operator restart (status keeps it).

The drill flips the maintenance track file directly (one agent command per step: the rollout's staging and
validation would add a second per step) and puts back the rendered value before it ends, whatever
happens. It runs inside the pair's pass, so no other pass touches the nodes meanwhile; it refuses to start
unless the pair is Ready, one node holds the VIP, the peer is healthy and no drain is asked for.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lbpair.build import PairBuild
from lbpair.drain import DrainPlan
from lbpair.events import Event
from lbpair.health import PairHealth
from lbpair.model.status import DRILL_TOKEN_LIMIT, DrillStatus, PairStatus, find_condition
from lbpair.nodes.client import NodeError
from lbpair.nodes.drill import MICROSECONDS, VipSample
from lbpair.nodes.node import Node

log = logging.getLogger(__name__)

DRILL_ANNOTATION = "lb.lbpair.dev/drill"
# Each watch ends at the first change it sees; these only bound a move that never comes.
TAKEOVER_WATCH_SECONDS = 5
FAILBACK_WATCH_SECONDS = 10
# The watches are started first: an SSH session takes a round trip or two before its first sample.
WATCH_LEAD_SECONDS = 0.3
UNDRAIN_WAIT_SECONDS = 5.0
UNDRAIN_POLL_SECONDS = 0.1


class DrillFailedError(Exception):
    """The VIP did not move as the drill expected."""


def requested_token(pair_body: Mapping[str, Any], previous: PairStatus | None) -> str | None:
    """The annotation's token when no drill ran for it yet (cut to what status keeps)."""
    annotations = (pair_body.get("metadata") or {}).get("annotations") or {}
    token = str(annotations.get(DRILL_ANNOTATION) or "")[:DRILL_TOKEN_LIMIT]
    done = previous.last_drill.token if previous and previous.last_drill else None
    return token if token and token != done else None


@dataclass
class Drill:
    """One pass's view of the pair, enough to run a drill on it."""

    build: PairBuild
    health: PairHealth
    nodes: Mapping[str, Node]
    drains: DrainPlan
    pause: Callable[[float], None] = time.sleep

    def run_if_requested(
        self, pair_body: Mapping[str, Any], previous: PairStatus | None, status: PairStatus, at: str
    ) -> tuple[PairStatus, list[Event]]:
        """`status` with lastDrill (as before, or this pass's drill) and the drill's event."""
        token = requested_token(pair_body, previous)
        if token is None:
            return status.model_copy(update={"last_drill": previous.last_drill if previous else None}), []
        drill = self.run(token, at)
        log.info("drill token=%s result=%s %s", token, drill.result, drill.message)
        summary = f"drill {token}: {drill.result}: {drill.message}"
        post = Event.normal if drill.result == "Succeeded" else Event.warning
        return status.model_copy(update={"last_drill": drill}), [post(f"Drill{drill.result}", summary)]

    def run(self, token: str, at: str) -> DrillStatus:
        roles = self._roles()
        refusal = self._refusal(roles)
        if refusal or roles is None:
            return DrillStatus(token=token, started_at=at, result="Refused", message=refusal)
        holder, peer, vip = roles
        drilled = DrillStatus(
            token=token, started_at=at, result="Failed", vip=vip, from_node=holder, to_node=peer
        )
        maintenance = self.build.state.nodes[0].keepalived.maintenance
        if maintenance is None:
            return drilled.model_copy(update={"message": "the nodes have no maintenance track file"})
        path, old, new = maintenance.path, self.nodes[holder], self.nodes[peer]
        try:
            drain_old = functools.partial(old.set_maintenance, path, drained=True)
            takeover = self._move(vip, old, new, drain_old, TAKEOVER_WATCH_SECONDS)
            fail_back = functools.partial(self._fail_back, old, new, path)
            failback = self._move(vip, new, old, fail_back, FAILBACK_WATCH_SECONDS)
        except (DrillFailedError, NodeError) as error:
            return drilled.model_copy(update={"message": str(error)})
        finally:
            self._put_back(path)
        # A negative gap is an overlap: the new holder had the VIP before the old one let go (a preempting
        # node takes over before the master it preempts steps down), so nothing went unserved.
        overlaps = [
            f"{way}: both nodes held it for {-gap:.3f} s"
            for way, gap in (("takeover", takeover), ("failback", failback))
            if gap < 0
        ]
        unserved = (round(max(takeover, 0.0), 3), round(max(failback, 0.0), 3))
        message = f"{vip} moved {holder} -> {peer} unserved {unserved[0]:.3f} s and back {unserved[1]:.3f} s"
        return drilled.model_copy(
            update={
                "result": "Succeeded",
                "takeover_seconds": unserved[0],
                "failback_seconds": unserved[1],
                "message": "; ".join([message, *overlaps]),
            }
        )

    def _roles(self) -> tuple[str, str, str] | None:
        """The holder of the first VIP held by exactly one node, its peer, and that VIP."""
        for vip, holders in self.health.holders.items():
            peers = [node.name for node in self.health.nodes if node.name not in holders]
            if len(holders) == 1 and peers:
                return holders[0], peers[0], vip
        return None

    def _refusal(self, roles: tuple[str, str, str] | None) -> str:
        ready = find_condition(list(self.health.conditions), "Ready")
        if ready is None or ready.status != "True":
            return f"the pair is not Ready ({ready.message if ready else 'not observed'})"
        if roles is None:
            return "no VIP is held by exactly one node"
        peer = roles[1]
        if self.drains.drained or self.drains.refused:
            return "a node is drained or asked to drain (spec.nodes[].maintenance)"
        report = next(node for node in self.health.nodes if node.name == peer)
        if not report.healthy:
            return f"the peer {peer} is not healthy: {report.error or 'nginx or keepalived down, or FAULT'}"
        return ""

    def _move(
        self, vip: str, leaving: Node, arriving: Node, act: Callable[[], object], seconds: int
    ) -> float:
        """Seconds between the VIP leaving `leaving` and reaching `arriving` when `act` makes it move."""
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="drill-watch") as pool:
            watches = [pool.submit(node.watch_vip, vip, seconds) for node in (leaving, arriving)]
            self.pause(WATCH_LEAD_SECONDS)
            act()
            left, reached = (watch.result() for watch in watches)
        return vip_gap(vip, leaving.name, left, arriving.name, reached)

    def _fail_back(self, old: Node, new: Node, path: str) -> None:
        """Undrain the old holder. With Preempt (no delay) it takes the VIP back by itself, being the
        higher-priority node (the holder under Preempt); otherwise, once it is out of FAULT (so never both
        nodes down), the new holder is drained, which sends the VIP back under any preempt policy."""
        old.set_maintenance(path, drained=False)
        preempt = self.build.pair.spec.vrrp.preempt
        if preempt.mode == "Preempt" and preempt.delay_seconds == 0:
            return
        waited = 0.0
        while any(instance.state == "FAULT" for instance in old.observe().vrrp):
            if waited >= UNDRAIN_WAIT_SECONDS:
                message = f"{old.name} stayed in FAULT {UNDRAIN_WAIT_SECONDS:.0f} s after its undrain"
                raise DrillFailedError(message)
            self.pause(UNDRAIN_POLL_SECONDS)
            waited += UNDRAIN_POLL_SECONDS
        new.set_maintenance(path, drained=True)

    def _put_back(self, path: str) -> None:
        """Both nodes back to the rendered value (a drill runs only when neither is drained)."""
        for node in self.nodes.values():
            try:
                node.set_maintenance(path, drained=False)
            except NodeError:
                log.exception(
                    "drill: %s: the maintenance file is left for the next pass to revert", node.name
                )


def vip_gap(vip: str, leaving: str, left: list[VipSample], arriving: str, reached: list[VipSample]) -> float:
    """Seconds the VIP was on neither node: from the first sample without it on `leaving` to the first with
    it on `arriving` (each sample is within ~10 ms of the change)."""
    if not left[0].held or len(left) < 2:  # noqa: PLR2004 - the start and the first change
        raise DrillFailedError(f"{vip} did not leave {leaving}")
    if reached[0].held or len(reached) < 2:  # noqa: PLR2004
        raise DrillFailedError(f"{vip} did not reach {arriving}")
    return (reached[1].at_us - left[1].at_us) / MICROSECONDS
