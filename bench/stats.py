"""How the benchmarks summarise repeated measurements."""

from __future__ import annotations

import statistics


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max (rounded to ms) and the number of runs."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
    }
