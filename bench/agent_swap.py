"""Node agent cost of a one-file change, by config size: `python -m bench.agent_swap` (root, ~1 minute).

On a temporary tree (no lab, no services), for 5, 500 and 5,000 managed files already live: stage one
edited file (the operator's staging command and bundle), validate it (the real overlay in a private mount
namespace; `true` stands in for nginx -t and keepalived -t, so the validators' own parse time is not in
these figures), swap it. Prints the median ms of each step and of the three together, and merges them
into bench/results.json under "agent_one_file_swap" (other keys are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lbpair.model.files import ManagedFile
from lbpair.nodes.operations import AGENT_SCRIPT, build_agent_command, build_bundle, build_staging_command

REPO_ROOT = Path(__file__).resolve().parent.parent
SIZES = (5, 500, 5000)
PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


class TempNode:
    def __init__(self, root: Path, count: int) -> None:
        self.root, self.state = root, root / "var" / "lib" / "lbpair"
        self.conf_dir = root / "etc" / "app"
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        for validator in ("nginx", "keepalived"):
            (self.bin / validator).write_text("#!/bin/sh\nexit 0\n")
            (self.bin / validator).chmod(0o755)
        self.files = {
            f"{self.conf_dir}/hosts/vhost_{number:05}.conf": f"server {{ server_name h{number}; }}\n"
            for number in range(count)
        }
        # Installed directly, as a completed earlier swap leaves it (that first swap is not measured).
        for path, content in self.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content)
        self.state.mkdir(parents=True)
        (self.state / "manifest").write_text(self.manifest())

    def managed(self) -> list[ManagedFile]:
        return [ManagedFile(path, content) for path, content in self.files.items()]

    def manifest(self) -> str:
        return "".join(managed.manifest_line for managed in sorted(self.managed(), key=lambda f: f.path))

    def run(self, command: str, stdin: bytes) -> None:
        subprocess.run(
            ["sh", "-c", command],
            input=stdin,
            env={"PATH": f"{self.bin}:{PATH}", "LBPAIR_OWNER": "bench bench/agent-swap"},
            capture_output=True,
            check=True,
            timeout=300,
        )

    def agent(self, *args: str) -> None:
        self.run(build_agent_command(args, 300, state_dir=str(self.state)), AGENT_SCRIPT)

    def one_edit(self, round_number: int) -> dict[str, float]:
        path = f"{self.conf_dir}/hosts/vhost_{len(self.files) // 2:05}.conf"
        self.files[path] = f"server {{ server_name edited{round_number}; }}\n"
        timings = {}
        started = time.perf_counter()
        bundle = build_bundle(self.managed(), {path})
        self.run(build_staging_command(state_dir=str(self.state)), bundle)
        timings["stage_ms"] = time.perf_counter() - started
        started = time.perf_counter()
        self.agent(
            "validate", f"{self.conf_dir}/nginx.conf", f"{self.conf_dir}/keepalived.conf", str(self.conf_dir)
        )
        timings["validate_ms"] = time.perf_counter() - started
        started = time.perf_counter()
        self.agent("swap")
        timings["swap_ms"] = time.perf_counter() - started
        return {name: seconds * 1000 for name, seconds in timings.items()}


def measure(count: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lbpair-bench-agent-") as directory:
        node = TempNode(Path(directory), count)
        rounds = [node.one_edit(number) for number in range(runs)]
    figures: dict[str, Any] = {
        name: round(statistics.median(r[name] for r in rounds), 1)
        for name in ("stage_ms", "validate_ms", "swap_ms")
    }
    figures["total_ms"] = round(statistics.median(sum(r.values()) for r in rounds), 1)
    figures["runs"] = runs
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="one-file edits per size")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.agent_swap: validate mounts an overlay in a private mount namespace: run as root")
        return 1
    results = {f"{count}_files": measure(count, args.runs) for count in SIZES}
    for size, figures in results.items():
        print(f"[bench] agent_one_file_swap {size}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    merged = json.loads(args.output.read_text()) if args.output.exists() else {}
    merged["agent_one_file_swap"] = results
    args.output.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
