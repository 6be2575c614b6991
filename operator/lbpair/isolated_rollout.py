"""A pair's rollout that one tenant's refused object cannot hold up (lbpair.isolation says which objects a
refusal blames): while a node's validators refuse the build for attached objects' sake, those objects are
remembered as refused and left out, and the rest is rolled out in the same pass."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from lbpair.build import PairBuild, PairRejected, PairResources, ParseCache, build_pair
from lbpair.config import OperatorConfig
from lbpair.events import Event
from lbpair.isolation import bisect, blame, node_at_fault, told_to
from lbpair.memory import PairMemory, Refusal
from lbpair.model.common import ObjectRef
from lbpair.nodes.client import NodeError
from lbpair.nodes.node import Node
from lbpair.nodes.observe import NodeObservation
from lbpair.nodes.operations import ValidationFailedError
from lbpair.render.model import ObjectKey
from lbpair.rollout import ConfigRejectedError, NodePlan, PairRollout, compare, observe_all, roll_out_pair
from lbpair.sinks import PassRecorder

log = logging.getLogger(__name__)
ISOLATION_ROUNDS = 8
"""Rollouts a pass makes while isolating refused objects (nginx -t stops at the first error it meets);
a pass that runs out records what it found, and the next pass goes on from there without a backoff."""


@dataclass(frozen=True)
class IsolatingRollout:
    config: OperatorConfig
    clock: Callable[[], float]  # times rollout backoffs; a test advances it instead of sleeping
    metrics: PassRecorder

    def run(
        self,
        key: ObjectRef,
        build: PairBuild,
        resources: PairResources,
        nodes: Mapping[str, Node],
        memory: PairMemory,
    ) -> tuple[PairBuild, PairRollout, list[Event]]:
        """Returns the build that went out, its rollout, and the events."""
        observations, errors = observe_all(list(nodes.values()))
        events: list[Event] = []
        for attempt in itertools.count(1):
            plans = plans_for(build, nodes)
            rollout = roll_out_pair(
                plans,
                observations,
                errors,
                pair=str(key),
                vips=build.vips,
                layout=build.layout,
                failures=memory.failures,
                config=self.config,
                clock=self.clock,
            )
            for node, reason in rollout.node_rollouts:
                self.metrics.node_rolled_out(key, node, reason)
            refusal = rollout.refused_by
            refusing = next((plan for plan in plans if refusal and plan.name == refusal.node), None)
            refused = self._refused_objects(build, refusal, refusing, resources, observations, memory)
            if not refused:
                events += rollout.events
                break
            # The tenants' objects are at fault, not the pair: their own status and events say so.
            events += [event for event in rollout.events if event.reason != ConfigRejectedError.reason]
            generations = {item.key: item.generation for item in build.attached}
            for refused_key, message in refused.items():
                memory.refusals[refused_key] = Refusal(generations[refused_key], build.generation, message)
                log.info("pass pair=%s left out %s: %s", key, refused_key, message)
            if attempt == ISOLATION_ROUNDS:
                break  # the next pass goes on from here, without these objects: a new config, no backoff
            build = rebuild(resources, memory.parsed, memory.left_out())
        return build, rollout, events

    def _refused_objects(  # noqa: PLR0917 - the refusal and what it is judged against
        self,
        build: PairBuild,
        refusal: ConfigRejectedError | None,
        refusing: NodePlan | None,
        resources: PairResources,
        observations: Mapping[str, NodeObservation],
        memory: PairMemory,
    ) -> dict[ObjectKey, str]:
        """The attached objects the refusing node's validators blame: by the files their output names, or
        else by bisecting what changed on that node; empty when the pair's own settings are at fault."""
        if refusal is None or refusing is None or refusal.node not in observations:
            return {}
        if node_at_fault(refusal.output):
            return {}
        prefix = f"refused by the validators on {refusal.node}: "
        sources = build.state.sources_by_path()
        blamed = blame(refusal.output, sources)
        if blamed:
            return {object_key: prefix + lines for object_key, lines in blamed.items()}
        node, observation = refusing.node, observations[refusal.node]
        changed = compare(observation, refusing).changed
        suspects = sorted({key for path in changed for key in sources.get(path, ())})

        def refuses(left_out: Collection[ObjectKey]) -> str | None:
            candidate = rebuild(
                resources, memory.parsed, {**memory.left_out(), **dict.fromkeys(left_out, "")}
            )
            plan = plans_for(candidate, {node.name: node})[0]
            try:
                node.stage(plan.files, compare(observation, plan).changed)
                node.validate()
            except ValidationFailedError as error:
                return str(error)
            return None

        try:
            found = bisect(suspects, refusal.output, refuses)
        except NodeError as error:  # cannot tell: the refusal stands for the whole pair, retried on backoff
            log.warning(
                "pair=%s: bisecting the refused config on %s failed: %s",
                build.pair.metadata.name,
                node.name,
                error,
            )
            return {}
        return {found[0]: prefix + told_to(found[0], found[1], sources)} if found else {}


def rebuild(resources: PairResources, cache: ParseCache, left_out: Mapping[ObjectKey, str]) -> PairBuild:
    """The pass's build again, leaving out other attached objects."""
    build = build_pair(resources, cache, left_out)
    if isinstance(build, PairRejected):  # only attached objects differ from the pass's own, accepted build
        raise TypeError(f"the pair's rebuild was rejected: {build.message}")
    return build


def plans_for(build: PairBuild, nodes: Mapping[str, Node]) -> list[NodePlan]:
    """What each of `nodes` should run for `build`, in the pair's node order."""
    return [
        NodePlan(nodes[name], tuple(r.files.values()), r.config_hash, r.nginx_hash)
        for name, r in build.render().items()
        if name in nodes
    ]
