"""How a pair's loop waits for a burst of edits to end before its pass (the daemon itself runs in e2e)."""

from __future__ import annotations

import asyncio
import itertools

from lbpair.config import OperatorConfig
from lbpair.handlers import Coalescing, _wait_for_quiet


async def _stream_of_changes(wakeup: asyncio.Event, count: int, every: float, sent: list[int]) -> None:
    for _ in range(count):
        await asyncio.sleep(every)
        wakeup.set()
        sent.append(1)


def _changes_sent_before_the_pass(count: int, config: OperatorConfig) -> int:
    async def scenario() -> int:
        wakeup, sent = asyncio.Event(), list[int]()
        stream = asyncio.create_task(_stream_of_changes(wakeup, count, every=0.02, sent=sent))
        await _wait_for_quiet(wakeup, config)
        before = len(sent)
        await stream
        return before

    return asyncio.run(scenario())


def test_a_burst_is_waited_out_so_one_pass_takes_all_of_it() -> None:
    # Changes 20 ms apart, a quiet window of 0.5 s: the pass waits for the last one.
    config = OperatorConfig(coalesce_seconds=0.5, coalesce_max_seconds=30)
    assert _changes_sent_before_the_pass(10, config) == 10


def test_a_steady_stream_still_gets_a_pass_at_the_cap() -> None:
    # 60 changes 20 ms apart (1.2 s or more): the 0.3 s cap cuts the wait short while they still come.
    config = OperatorConfig(coalesce_seconds=0.2, coalesce_max_seconds=0.3)
    assert _changes_sent_before_the_pass(60, config) < 60


def _passes(changes: list[float], pass_seconds: float, config: OperatorConfig) -> list[tuple[float, int]]:
    """The daemon's loop (lbpair.handlers.converge) on a virtual clock, for changes at the given times:
    (start, changes taken) of each pass a change started. A pass takes `pass_seconds`; changes that come
    while it runs are noticed when it ends; a burst waits for quiet as _wait_for_quiet does."""
    coalescing, now, after_change, taken, passes = Coalescing(config), 0.0, False, 0, []
    pending = sorted(changes)
    while taken < len(pending):
        coalescing.pass_ended(now, after_change=after_change)
        now = max(now, pending[taken])  # waits for the next change (no periodic pass comes first here)
        after_change = True
        if not coalescing.starts_at_once(now):
            deadline = now + config.coalesce_max_seconds
            while (quiet_for := min(config.coalesce_seconds, deadline - now)) > 0:
                later = next((t for t in pending if now < t <= now + quiet_for), None)
                if later is None:
                    now += quiet_for  # quiet
                    break
                now = later
        arrived = sum(1 for t in pending if t <= now)
        passes.append((now, arrived - taken))
        taken = arrived
        now += pass_seconds
    return passes


def test_a_lone_change_after_a_quiet_spell_starts_a_pass_at_once() -> None:
    coalescing = Coalescing(OperatorConfig(coalesce_seconds=0.3))
    coalescing.pass_ended(100.0, after_change=False)  # a periodic pass

    assert coalescing.starts_at_once(100.0)
    assert _passes([5.0], pass_seconds=0.5, config=OperatorConfig()) == [(5.0, 1)]


def test_a_change_soon_after_a_pass_a_change_started_continues_its_burst() -> None:
    coalescing = Coalescing(OperatorConfig(coalesce_seconds=0.3))
    coalescing.pass_ended(100.0, after_change=True)

    assert not coalescing.starts_at_once(100.0)  # it came during the pass
    assert not coalescing.starts_at_once(100.29)
    assert coalescing.starts_at_once(100.3)  # a quiet spell again


def test_a_burst_of_ten_writes_from_one_apply_makes_two_pushes() -> None:
    # One `kubectl apply` of 10 objects: events 2 ms apart; a pass takes 0.5 s.
    writes = [0.002 * number for number in range(10)]

    passes = _passes(writes, pass_seconds=0.5, config=OperatorConfig(coalesce_seconds=0.3))

    assert passes == [(0.0, 1), (0.8, 9)]  # the first at once, the rest of the burst after quiet


def test_a_steady_stream_still_goes_live_at_the_cap() -> None:
    # A change every 0.1 s for 10 s never leaves 0.3 s of quiet: passes still come, at most 3 s apart.
    stream = [0.1 * number for number in range(100)]

    passes = _passes(stream, pass_seconds=0.5, config=OperatorConfig(coalesce_seconds=0.3))

    starts = [start for start, _ in passes]
    assert sum(taken for _, taken in passes) == len(stream)
    assert all(later - earlier <= 0.5 + 3.0 for earlier, later in itertools.pairwise(starts))
    assert len(passes) < 10
