"""Pure: events on transitions. What the previous pass observed and what this pass observes give the
events users see (`kubectl get events`): each fires once per change, not on every pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lbpair.health import PairHealth
from lbpair.model.status import MESSAGE_LIMIT, AttachedStatus, Condition, find_condition, truncate
from lbpair.nodes.backend_probe import BackendChange
from lbpair.render.model import ObjectKey


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
    regarding: ObjectKey | None = None
    """The attached object the event is about, posted in its namespace for its owners; None: the pair."""

    @classmethod
    def normal(cls, reason: str, message: str) -> Event:
        return cls("Normal", reason, truncate(message, MESSAGE_LIMIT))

    @classmethod
    def warning(cls, reason: str, message: str, regarding: ObjectKey | None = None) -> Event:
        return cls("Warning", reason, truncate(message, MESSAGE_LIMIT), regarding)


@dataclass(frozen=True)
class PairObservation:
    """What one pass saw of the pair, as far as events are concerned."""

    holders: Mapping[str, list[str]] = field(default_factory=dict)  # VIP -> nodes, only VIPs held
    split_brain: bool = False
    unreachable: frozenset[str] = frozenset()

    @classmethod
    def of(cls, health: PairHealth) -> PairObservation:
        return cls(
            holders={vip: holders for vip, holders in health.holders.items() if holders},
            split_brain=any(len(holders) > 1 for holders in health.holders.values()),
            unreachable=frozenset(node.name for node in health.nodes if not node.reachable),
        )


def transition_events(before: PairObservation, after: PairObservation, health: PairHealth) -> list[Event]:
    """FailoverDetected, SplitBrain, NodeUnreachable and NodeRecovered, each on the pass that sees it
    (`after` is `PairObservation.of(health)`)."""
    events = []
    for vip, holders in health.holders.items():
        previous = before.holders.get(vip)
        if previous and len(previous) == 1 and len(holders) == 1 and previous != holders:
            events.append(
                Event.warning("FailoverDetected", f"{vip} moved from {previous[0]} to {holders[0]}")
            )
    split = find_condition(list(health.conditions), "SplitBrain")
    if after.split_brain and not before.split_brain and split is not None:
        events.append(Event.warning("SplitBrain", split.message))
    for node in health.nodes:
        if node.name in after.unreachable - before.unreachable:
            events.append(Event.warning("NodeUnreachable", f"{node.name}: {node.error}"))
        if node.name in before.unreachable - after.unreachable:
            events.append(Event.normal("NodeRecovered", f"{node.name} is reachable again"))
    return events


def rejection_event(before: str, problem: str) -> list[Event]:
    """The pair itself is rejected: once per distinct problem."""
    return [Event.warning("Rejected", problem)] if problem != before else []


def attached_rejection_event(
    key: ObjectKey, previous: AttachedStatus | None, current: AttachedStatus
) -> list[Event]:
    """An Upstream or VirtualHost the pair leaves out: once when it becomes unaccepted, on the object."""
    accepted = find_condition(current.conditions, "Accepted")
    before = find_condition(previous.conditions, "Accepted") if previous else None
    if accepted is None or accepted.status == "True" or (before is not None and before.status == "False"):
        return []
    return [Event.warning("Rejected", accepted.message, regarding=key)]


CERTIFICATE_TROUBLE = {"CertificateValid": "False", "CertificateExpiring": "True"}
"""The status of each certificate condition that warrants a warning."""


def certificate_events(
    key: ObjectKey, previous: AttachedStatus | None, current: AttachedStatus
) -> list[Event]:
    """A TLS VirtualHost's certificate expiring soon, expired, not yet valid or not covering its names: a
    Warning on the VirtualHost when a condition enters that state or its reason changes (expiring ->
    expired), once per reason."""
    before = previous.conditions if previous else []
    return trouble_events(before, current.conditions, CERTIFICATE_TROUBLE, regarding=key)


def trouble_events(
    previous: Sequence[Condition],
    current: Sequence[Condition],
    trouble: Mapping[str, str],
    regarding: ObjectKey | None = None,
) -> list[Event]:
    """A Warning, its reason the condition's, when a condition of `trouble` (type -> the status that is
    trouble) enters that status or changes its reason while in it; once per reason."""
    events: dict[str, Event] = {}
    for condition_type, bad in trouble.items():
        now = find_condition(list(current), condition_type)
        before = find_condition(list(previous), condition_type)
        if now is None or now.status != bad:
            continue
        if before is None or (before.status, before.reason) != (now.status, now.reason):
            events.setdefault(now.reason, Event.warning(now.reason, now.message, regarding=regarding))
    return list(events.values())


def backend_events(key: ObjectKey, changes: Sequence[BackendChange]) -> list[Event]:
    """A backend server of an Upstream going down or coming back from a node's point of view, on it."""
    return [
        Event(
            "Normal" if change.reachable else "Warning",
            "BackendUp" if change.reachable else "BackendDown",
            f"{change.server} is {'reachable again' if change.reachable else 'unreachable'} "
            f"from {change.node}",
            key,
        )
        for change in changes
    ]
