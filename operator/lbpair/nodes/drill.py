"""What a failover drill does on a node, one agent command each: flip the maintenance track file, and watch
when the node takes or gives up a VIP, timed by the node's own clock.

Timing on the nodes, not from the operator: an SSH round trip (tens of milliseconds, more under load)
would blur a move that itself takes tens of milliseconds. The two nodes' clocks are compared, which the
lab's shared kernel clock makes exact and NTP keeps within a millisecond or so on real servers.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbpair.nodes.client import NodeClient, NodeError
from lbpair.nodes.operations import COMMAND_TIMEOUT_SECONDS, _agent, _checked

# The watch's own bound plus room for the session around it.
WATCH_MARGIN_SECONDS = 5.0
MICROSECONDS = 1_000_000


@dataclass(frozen=True)
class VipSample:
    """Whether the node held the VIP at `at_us` (microseconds since the epoch, by the node's clock: kept
    whole, since a float of epoch seconds loses the sub-microsecond digits)."""

    at_us: int
    held: bool


def parse_vip_samples(output: str) -> list[VipSample]:
    """The agent's `watch-vip` lines ("MICROSECONDS 1|0"): the start, then the first change if any."""
    samples = []
    for line in output.splitlines():
        if line.strip():
            microseconds, held = line.split()
            samples.append(VipSample(int(microseconds), held == "1"))
    if not samples:
        raise NodeError("watch-vip reported nothing")
    return samples


def apply_maintenance(client: NodeClient, path: str, *, drained: bool) -> float:
    """Write the maintenance track file (keepalived reacts at once); returns when, by the node's clock."""
    result = _checked(_agent(client, "maintenance", path, "1" if drained else "0"), "writing maintenance")
    return int(result.stdout.split()[-1]) / MICROSECONDS


def observe_vip_change(client: NodeClient, address: str, seconds: int) -> list[VipSample]:
    """Whether the node holds `address` now, and when that first changes (within `seconds`)."""
    timeout = min(seconds + WATCH_MARGIN_SECONDS, COMMAND_TIMEOUT_SECONDS)
    result = _checked(_agent(client, "watch-vip", address, str(seconds), timeout=timeout), "watching the VIP")
    try:
        return parse_vip_samples(result.stdout)
    except ValueError as error:
        raise NodeError(f"unreadable watch-vip output: {error}") from error
