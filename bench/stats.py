"""How the benchmarks summarise repeated measurements."""

from __future__ import annotations

import math
import statistics


def summary(values: list[float]) -> dict[str, float]:
    """Median, p99 (nearest rank), min and max (rounded to ms) and the number of runs."""
    ranked = sorted(values)
    return {
        "median": round(statistics.median(values), 3),
        "p99": round(ranked[math.ceil(0.99 * len(ranked)) - 1], 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
    }
