"""The drill benchmark's client-side view: how long the VIP was unserved, from probes every 10 ms."""

from __future__ import annotations

from bench.drain import unserved_windows

MS = 1000  # probe start times are in microseconds


def probes(pattern: str, step_ms: int = 10) -> list[tuple[int, bool]]:
    """'+' a probe that was served, '-' one that failed, one every `step_ms`."""
    return [(index * step_ms * MS, mark == "+") for index, mark in enumerate(pattern)]


def test_each_run_of_failures_is_one_window_between_the_midpoints_around_it() -> None:
    assert unserved_windows(probes("+++----++++--+++")) == [0.04, 0.02]


def test_no_failure_is_no_window_and_failures_to_the_end_are_not_a_closed_window() -> None:
    assert unserved_windows(probes("++++++")) == []
    assert unserved_windows(probes("+++---")) == []


def test_failures_from_the_first_probe_on_have_no_start_and_are_not_counted() -> None:
    assert unserved_windows(probes("--+++-+")) == [0.01]
