"""Operator-side cost of a pass by pair size: `python -m bench.render` (no lab, a few minutes).

For the seed pair with 1, 500 and 5,000 VirtualHosts (one location each, proxying to one of the pair's
Upstreams, one in ten Upstreams for ten hosts; every tenth host TLS with an HTTP redirect, proxy headers
and an access log, as config/samples/tls-virtualhost.yaml), measures parse + build + render (every
node's files and hashes) in-process, the way a pass does it with the pair's memory:

- cold: the first pass, nothing cached (what every pass cost before the caches; the baseline);
- warm after one edit: the next pass after one VirtualHost's spec changed (a new server name, a new
  generation), the figure of an edit; five edits of different hosts per run, one after another;
- unchanged: a pass with nothing changed (the probe passes of an idle pair), after each edit.

Each run starts from fresh objects and a fresh cache. Prints median, p99, min and max ms of each, as
wall-clock time (`*_ms`) and as the process's CPU time (`*_cpu_ms`: on a shared machine the wall-clock
time also holds whatever else runs; the load average is recorded), and the cold/warm median ratio; merges
them into bench/results.json under "render_pass" (other keys kept). Python's garbage collector runs as
in the operator: a full collection (~0.5 s at 5,000 VirtualHosts) lands in some passes.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.stats import summary
from lbpair.build import PairBuild, PairRejected, ParseCache, build_pair
from tests.unit.samples import Sample, sample

REPO_ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 500, 5000)
HOSTS_PER_UPSTREAM = 10
TLS_EVERY = 10
EDITED_NAME = "edited.bench.example.com"
EDITS_PER_RUN = 5


def pair_with(count: int) -> Sample:
    """The seed pair with `count` VirtualHosts and their Upstreams, as the API server returns them."""
    resources = sample("seed-tutorial.yaml", "tls-virtualhost.yaml")
    www, tls_host = resources.upstream("lb-www"), resources.vhost("shop")
    resources.upstreams = [
        _named(www, f"app{number}") for number in range(max(1, count // HOSTS_PER_UPSTREAM))
    ]
    resources.virtual_hosts = []
    for number in range(count):
        host = _named(tls_host, f"site{number}")
        spec = host["spec"]
        spec["serverNames"] = [f"site{number}.team{number % 37}.example.com"]
        spec["locations"] = [{"path": "/", "upstreamRef": {"name": f"app{number // HOSTS_PER_UPSTREAM}"}}]
        if number % TLS_EVERY:
            for key in ("listen", "tls", "proxy", "accessLog"):
                del spec[key]
        resources.virtual_hosts.append(host)
    for number, body in enumerate([resources.pair, *resources.upstreams, *resources.virtual_hosts]):
        body["metadata"].update(
            uid=f"00000000-0000-0000-0000-{number:012}",
            generation=1,
            resourceVersion=str(number + 1),
            creationTimestamp="2026-01-01T00:00:00Z",
        )
    return resources


def _named(body: dict[str, Any], name: str) -> dict[str, Any]:
    named = copy.deepcopy(body)
    named["metadata"]["name"] = name
    return named


def one_pass(resources: Sample, cache: ParseCache) -> tuple[tuple[float, float], PairBuild]:
    """Wall-clock and CPU milliseconds of one pass's parse + build + render, and its build."""
    started, cpu_started = time.perf_counter(), time.process_time()
    build = build_pair(resources.resources(), cache)
    if isinstance(build, PairRejected):
        raise TypeError(f"the bench pair was rejected: {build.message}")
    build.render()
    return ((time.perf_counter() - started) * 1000, (time.process_time() - cpu_started) * 1000), build


def measure(count: int, runs: int) -> dict[str, Any]:
    passes: dict[str, list[tuple[float, float]]] = {"cold": [], "warm_after_one_edit": [], "unchanged": []}
    for _ in range(runs):
        resources, cache = pair_with(count), ParseCache()
        gc.collect()  # each run starts without the previous run's garbage
        milliseconds, build = one_pass(resources, cache)
        passes["cold"].append(milliseconds)
        if build.problems or len(build.state.virtual_hosts) != count:
            raise RuntimeError(f"not every VirtualHost built: {build.problems[:3]}")
        for edit in range(EDITS_PER_RUN):
            edited = resources.virtual_hosts[(count // 2 + edit) % count]
            edited["spec"]["serverNames"].append(f"{edit}.{EDITED_NAME}")
            edited["metadata"]["generation"] += 1
            milliseconds, build = one_pass(resources, cache)
            passes["warm_after_one_edit"].append(milliseconds)
            (host,) = [h for h in build.state.virtual_hosts if h.source.name == edited["metadata"]["name"]]
            if f"{edit}.{EDITED_NAME}" not in next(iter(build.render().values())).files[host.path].content:
                raise RuntimeError("the edit was not rendered")
            passes["unchanged"].append(one_pass(resources, cache)[0])
    figures: dict[str, Any] = {"virtual_hosts": count}
    for name, measured in passes.items():
        figures[f"{name}_ms"] = summary([wall for wall, _ in measured])
        figures[f"{name}_cpu_ms"] = summary([cpu for _, cpu in measured])
    for clock in ("", "_cpu"):
        ratio = figures[f"cold{clock}_ms"]["median"] / figures[f"warm_after_one_edit{clock}_ms"]["median"]
        figures[f"cold_to_warm{clock}_median_ratio"] = round(ratio, 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="cold/warm/unchanged passes per size")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results.json")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {f"{count}_virtualhosts": measure(count, args.runs) for count in SIZES}
    results["load_average_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    results["cpus"] = os.cpu_count()
    for size, figures in results.items():
        print(f"[bench] render_pass {size}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    merged = json.loads(args.output.read_text()) if args.output.exists() else {}
    merged["render_pass"] = results
    args.output.write_text(json.dumps(merged, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
