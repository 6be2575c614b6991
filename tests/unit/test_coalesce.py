"""How a pair's loop waits for a burst of edits to end before its pass (the daemon itself runs in e2e)."""

from __future__ import annotations

import asyncio

from lbpair.config import OperatorConfig
from lbpair.handlers import _wait_for_quiet


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
