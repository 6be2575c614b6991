"""Crash-safety benchmarks (issue 11), on the seed pair of `bench.run` (lb1, lb2).

Kill storm: the operator is SIGKILLed at a random moment (seeded) within 0-1.5 s of an edit of the
Upstream lb-oa that gives both nodes a new config, i.e. while that config is being pushed, and restarted
as the chart's Deployment would restart it; then the next round. Right after each kill (with the agent's
lock held, so a command of the dead operator still running on a node finishes first) each node's state is
read as it is, before anything recovers it: an interrupted push shows as a journal (txn.new/ prepared,
txn/ committed), files swapped but never verified live (`live` absent), or files staged but not swapped.
Every live file must match the manifest, or (a committed journal) the old or the new manifest path by
path, and the config the node will hold once recovered must be the previous or the new desired one.
After the restart, the passes until the pair converges come from the operator log (one line per pass), and
each node is checked again: the manifest's files all there with their recorded hashes, the manifest the
desired config (status appliedConfigHash), `live` saying so, nginx and keepalived running. (A journal
shows only if the kill cuts an agent command itself; a command the killed operator had started runs on
to its end on the node unless it writes to the dropped connection, so most kills fall between commands:
staged but not swapped, swapped but not verified, or one node done and the other not yet started.)

Hung node: a second pair (lb3, lb4) on the same operator; the seed pair's edit -> served through its VIP,
measured with lb4 healthy and with lb4's management network blackholed while the operator's probe of it
runs (pair B's pass then waits out its deadline).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.stats import summary
from lbpair.nodes.operations import DEFAULT_STATE_DIR
from testbed.addressing import LB_NODES
from testbed.operator import attached_object, blackhole_mid_probe, lab_pair, wait_for, web_objects

if TYPE_CHECKING:
    from bench.run import Bench

PUSH_WINDOW_SECONDS = 1.5
EDIT_WEIGHT_BASE = 100  # an edit reaches both nodes within ~1.5 s (apply_to_live_seconds)
CONVERGE_TIMEOUT_SECONDS = 60.0
PASS_LINE = re.compile(r"pass pair=(?P<pair>\S+) outcome=(?P<outcome>\S+) seconds=(?P<seconds>[\d.]+)")
CONVERGED_OUTCOMES = frozenset({"applied", "unchanged"})  # the pass left every node on the desired config
IDLE = "idle"

# Read with the agent's lock held (it waits for a running command), without recovering anything.
SNAPSHOT_SCRIPT = r"""
state=$1
exec 9>>"$state/lock"
flock -w 40 9 || exit 75
section() { printf '== %s\n' "$1"; }
section manifest; cat "$state/manifest" 2>/dev/null
section live; cat "$state/live" 2>/dev/null
section journal
if [ -d "$state/txn" ]; then echo committed; fi
if [ -d "$state/txn.new" ]; then echo prepared; fi
if [ -d "$state/stage.new" ]; then echo staging; fi
section txn-manifest; cat "$state/txn/manifest" 2>/dev/null
section stage-manifest; cat "$state/stage/manifest" 2>/dev/null
section actual
{ cat "$state/manifest" "$state/txn/manifest" 2>/dev/null || true; } | awk '{print $3}' | sort -u |
    while read -r path; do
        if [ -f "$path" ]; then sha256sum "$path"; else printf 'missing %s\n' "$path"; fi
    done
section services
for unit in nginx keepalived; do printf '%s %s\n' "$unit" "$(systemctl is-active "$unit" 9>&- || true)"; done
"""


def config_hash(manifest: str) -> str:
    """The operator's config hash of a manifest (lbpair.model.files.manifest_hash: sha256 over the
    sorted `MODE SHA256 PATH` lines); '' for no manifest. Checked against status before the storm."""
    lines = [f"{line}\n" for line in manifest.splitlines() if line.strip()]
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest() if lines else ""


def manifest_entries(manifest: str) -> dict[str, str]:
    """Path -> sha256 recorded in a manifest."""
    return {words[2]: words[1] for line in manifest.splitlines() if len(words := line.split()) == 3}


@dataclass(frozen=True)
class NodeSnapshot:
    manifest: str
    live: str
    journal: frozenset[str]  # committed, prepared, staging
    txn_manifest: str
    stage_manifest: str
    actual: dict[str, str]  # path -> sha256, or "missing"
    services: dict[str, str]

    @classmethod
    def parse(cls, output: str) -> NodeSnapshot:
        sections: dict[str, list[str]] = {}
        current: list[str] = []
        for line in output.splitlines():
            if line.startswith("== "):
                current = sections.setdefault(line[3:].strip(), [])
            else:
                current.append(line)
        actual = {}
        for line in sections.get("actual", []):
            first, _, path = line.partition(" ")
            actual[path.strip()] = first
        return cls(
            manifest="\n".join(sections.get("manifest", [])),
            live="".join(sections.get("live", [])).strip(),
            journal=frozenset(word.strip() for word in sections.get("journal", []) if word.strip()),
            txn_manifest="\n".join(sections.get("txn-manifest", [])),
            stage_manifest="\n".join(sections.get("stage-manifest", [])),
            actual=actual,
            services=dict(line.split(" ", 1) for line in sections.get("services", []) if " " in line),
        )

    def complete(self, manifest: str) -> bool:
        """Every file of `manifest` is live with the content it records."""
        return all(self.actual.get(path) == sha for path, sha in manifest_entries(manifest).items())

    @property
    def state(self) -> str:
        """Where a push stood on this node: idle, or the step it was cut at."""
        if "committed" in self.journal:
            return "swap committed, not finished"
        if "prepared" in self.journal:
            return "swap prepared, not committed"
        if self.live != config_hash(self.manifest):
            return "swapped, not verified live"
        if "staging" in self.journal:
            return "staging"
        if self.stage_manifest and config_hash(self.stage_manifest) != config_hash(self.manifest):
            return "staged, not swapped"
        return IDLE

    @property
    def consistent(self) -> bool:
        """The live files are one complete set: the manifest's, or with a committed journal (which the
        next agent command finishes) each path the old or the new manifest's."""
        if "committed" not in self.journal:
            return self.complete(self.manifest)
        old, new = manifest_entries(self.manifest), manifest_entries(self.txn_manifest)
        return all(
            self.actual.get(path) in {old.get(path), new.get(path)} for path in old.keys() | new.keys()
        )

    @property
    def recovered_hash(self) -> str:
        """The config the node holds once the next agent command has recovered it."""
        return config_hash(self.txn_manifest if "committed" in self.journal else self.manifest)


def snapshot_nodes(bench: Bench, nodes: tuple[str, ...] = LB_NODES) -> dict[str, NodeSnapshot]:
    def one(node: str) -> NodeSnapshot:
        completed = bench.lab.exec(
            node, "sh", "-c", SNAPSHOT_SCRIPT, "snapshot", DEFAULT_STATE_DIR, timeout=60
        )
        return NodeSnapshot.parse(completed.stdout)

    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return dict(zip(nodes, pool.map(one, nodes), strict=True))


@dataclass
class Round:
    delay_seconds: float
    prior: dict[str, str]  # node -> config hash before the edit
    killed: dict[str, NodeSnapshot]
    desired: dict[str, str] = field(default_factory=dict)  # node -> config hash after the edit
    outcomes: list[str] = field(default_factory=list)  # pass outcomes after the restart, to convergence
    converge_seconds: float = 0.0
    converged: dict[str, NodeSnapshot] = field(default_factory=dict)

    @property
    def interrupted(self) -> list[str]:
        return [node for node, snapshot in self.killed.items() if snapshot.state != IDLE]

    @property
    def cut_between_nodes(self) -> bool:
        """Both nodes idle, one on the previous config and one on the new: the kill fell between them."""
        hashes = {node: snapshot.recovered_hash for node, snapshot in self.killed.items()}
        old = [node for node in hashes if hashes[node] == self.prior[node]]
        new = [node for node in hashes if hashes[node] == self.desired[node]]
        return not self.interrupted and bool(old) and bool(new)

    def problems(self) -> list[tuple[str, str]]:
        """(kind, what) for every failure of crash safety: a `partial` (or mixed) file set, a `foreign`
        config (neither the old nor the new), a node not `verified` live on the desired config, or
        `services` not running."""
        found = []
        for node, snapshot in self.killed.items():
            if not snapshot.consistent:
                found.append(("partial", f"{node} after the kill: no complete file set ({snapshot.state})"))
            if snapshot.recovered_hash not in {self.prior[node], self.desired[node]}:
                config = snapshot.recovered_hash[:12]
                found.append(
                    ("foreign", f"{node} after the kill: config {config} is neither the old nor the new")
                )
        for node, snapshot in self.converged.items():
            if not snapshot.complete(snapshot.manifest):
                found.append(("partial", f"{node} after converging: no complete file set"))
            if config_hash(snapshot.manifest) != self.desired[node] or snapshot.live != self.desired[node]:
                found.append(
                    ("verified", f"{node} after converging: not verified live on the desired config")
                )
            if set(snapshot.services.values()) != {"active"}:
                found.append(("services", f"{node} after converging: {snapshot.services}"))
        return found

    @property
    def passes_to_converge(self) -> int:
        return len(self.outcomes)


class KillStorm:
    """SIGKILL the operator mid-push, restart it, `rounds` times; see the module docstring."""

    def __init__(self, bench: Bench, rounds: int, seed: int) -> None:
        self.bench, self.rounds, self.random = bench, rounds, random.Random(seed)  # noqa: S311 - not crypto
        self.pair_key = f"{bench.namespace}/{bench.pair}"

    def applied_hashes(self) -> dict[str, str]:
        nodes = self.bench.status().get("nodes", [])
        return {node["name"]: node.get("appliedConfigHash", "") for node in nodes}

    def converged(self) -> bool:
        upstream = json.loads(self.bench.kubectl("get", "upstream", "lb-oa", "-o", "json"))
        conditions = {c["type"]: c for c in upstream.get("status", {}).get("conditions", [])}
        programmed = conditions.get("Programmed", {})
        current = programmed.get("observedGeneration") == upstream["metadata"]["generation"]
        return bool(current and programmed.get("status") == "True" and self.bench.ready())

    def passes_since(self, offset: int) -> list[str]:
        outcomes = []
        for line in self.bench.operator.log_lines_since(offset).splitlines():
            found = PASS_LINE.search(line)
            if found and found["pair"] == self.pair_key:
                outcomes.append(found["outcome"])
                if found["outcome"] in CONVERGED_OUTCOMES:
                    break
        return outcomes

    def converging_passes(self, offset: int) -> list[str]:
        """The restarted operator's pass outcomes up to the first that left the pair converged (the
        status it wrote says so: the pass line is logged after the status write); [] until then."""
        outcomes = self.passes_since(offset)
        return outcomes if outcomes and outcomes[-1] in CONVERGED_OUTCOMES and self.converged() else []

    def diagnosis(self, record: Round, offset: int) -> str:
        """What a user would look at when the pair does not converge: status, the edited object, the
        nodes (as they were right after the kill, and now), the restarted operator's passes."""
        upstream = json.loads(self.bench.kubectl("get", "upstream", "lb-oa", "-o", "json"))
        lines = [
            f"pair conditions: {json.dumps(self.bench.status().get('conditions', []))}",
            f"lb-oa generation {upstream['metadata']['generation']}, spec {json.dumps(upstream['spec'])}",
            f"lb-oa status: {json.dumps(upstream.get('status', {}))}",
            f"kill at +{record.delay_seconds:.2f} s; prior config hashes {record.prior}",
        ]
        now = snapshot_nodes(self.bench)
        for node, snapshot in record.killed.items():
            lines.append(f"{node} after the kill: {snapshot.state}, config {snapshot.recovered_hash[:12]}")
            lines.append(f"{node} now: {now[node].state}, config {config_hash(now[node].manifest)[:12]}")
        lines.append(f"passes since the restart: {self.passes_since(offset)}")
        lines.append(f"operator log: {self.bench.operator.log_path}")
        return "\n".join(lines)

    def edit(self, number: int) -> None:
        """A new weight for be1 in lb-oa (earlier scenarios use 1 and 2): a new config for both nodes."""
        backends = self.bench.backends
        servers = [
            {"address": backends["be1"], "port": 8080, "weight": EDIT_WEIGHT_BASE + number},
            {"address": backends["be2"], "port": 8080},
        ]
        patched = self.bench.kubectl(
            "patch", "upstream", "lb-oa", "--type=merge", "-p", json.dumps({"spec": {"servers": servers}})
        )
        if "no change" in patched:
            raise RuntimeError(f"edit {number} changed nothing: {patched.strip()}")

    def check_hash_formula(self) -> None:
        wait_for(self.converged, timeout=CONVERGE_TIMEOUT_SECONDS, what="the pair converged before the storm")
        applied, snapshots = self.applied_hashes(), snapshot_nodes(self.bench)
        computed = {node: config_hash(snapshot.manifest) for node, snapshot in snapshots.items()}
        if computed != applied:
            raise RuntimeError(f"config hashes of the nodes' manifests {computed} are not status's {applied}")

    def one_round(self, number: int) -> Round:
        operator = self.bench.operator
        prior = self.applied_hashes()
        delay = self.random.uniform(0, PUSH_WINDOW_SECONDS)
        self.edit(number)
        time.sleep(delay)
        operator.kill()
        record = Round(delay_seconds=delay, prior=prior, killed=snapshot_nodes(self.bench))
        offset = len(operator.log())
        restarted = time.monotonic()
        operator.start()
        try:
            record.outcomes = wait_for(
                lambda: self.converging_passes(offset),
                timeout=CONVERGE_TIMEOUT_SECONDS,
                interval=0.05,
                what=f"kill {number + 1}: the pair converged after the restart",
            )
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n{self.diagnosis(record, offset)}") from None
        record.converge_seconds = time.monotonic() - restarted
        record.desired = self.applied_hashes()
        record.converged = snapshot_nodes(self.bench)
        return record

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.check_hash_formula()
        records = []
        for number in range(self.rounds):
            record = self.one_round(number)
            records.append(record)
            states = ", ".join(f"{node}: {snapshot.state}" for node, snapshot in record.killed.items())
            print(
                f"[bench] kill {number + 1}/{self.rounds} at +{record.delay_seconds:.2f} s ({states}); "
                f"passes {record.outcomes}, converged in {record.converge_seconds:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        problems = [
            (kind, f"kill {number + 1}: {what}")
            for number, r in enumerate(records)
            for kind, what in r.problems()
        ]
        interrupted_states = Counter(r.killed[node].state for r in records for node in r.interrupted)
        final = records[-1]
        return {
            "kills": len(records),
            "kill_delay_seconds": summary([r.delay_seconds for r in records]),
            "pushes_interrupted": sum(bool(r.interrupted) for r in records),
            "node_pushes_interrupted": dict(sorted(interrupted_states.items())),
            "rollouts_cut_between_nodes": sum(r.cut_between_nodes for r in records),
            "first_pass_after_restart_pushed": sum(r.outcomes[0] == "applied" for r in records),
            "partial_or_mixed_file_sets": sum(kind == "partial" for kind, _ in problems),
            "configs_neither_old_nor_new": sum(kind == "foreign" for kind, _ in problems),
            "problems": [what for _, what in problems],
            "passes_to_converge": summary([float(r.passes_to_converge) for r in records]),
            "seconds_to_converge": summary([r.converge_seconds for r in records]),
            "final_restart": {
                "passes_to_converge": final.passes_to_converge,
                "pass_outcomes": final.outcomes,
                "seconds_to_converge": round(final.converge_seconds, 3),
                "nodes": {
                    node: {
                        "complete_file_set": snapshot.complete(snapshot.manifest),
                        "config_is_desired": config_hash(snapshot.manifest) == final.desired[node],
                        "services": snapshot.services,
                    }
                    for node, snapshot in final.converged.items()
                },
            },
            "per_kill": [
                f"+{r.delay_seconds:.2f} s: "
                + ", ".join(f"{node} {snapshot.state}" for node, snapshot in r.killed.items())
                + f"; passes {' '.join(r.outcomes)}; converged in {r.converge_seconds:.2f} s"
                for r in records
            ],
            "scenario_seconds": round(time.monotonic() - started, 1),
        }


def kill_storm(bench: Bench, rounds: int, seed: int) -> dict[str, Any]:
    return KillStorm(bench, rounds, seed).run()


# --- a hung node of another pair ---------------------------------------------------------------------

PAIR_B = "pair-b"
PAIR_B_LAB_PAIR = 2  # lb3, lb4
HUNG_NODE = "lb4"  # pair B's backup


def _pair_b_healthy(bench: Bench) -> bool:
    status = json.loads(bench.kubectl("get", "lbpair", PAIR_B, "-o", "json")).get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    nodes_reachable = [node.get("reachable") for node in status.get("nodes", [])]
    return conditions.get("Ready") == "True" and nodes_reachable == [True, True]


def _pair_b_node(bench: Bench, node: str) -> Mapping[str, Any]:
    status = json.loads(bench.kubectl("get", "lbpair", PAIR_B, "-o", "json")).get("status", {})
    return next((found for found in status.get("nodes", []) if found["name"] == node), {})


def _edit_to_vip_seconds(bench: Bench, run: int) -> float:
    """A new location of the seed's VirtualHost `iso` applied until the seed's VIP serves it."""
    host = "iso.example.com"
    location = {"path": "/", "url": f"http://{bench.backends['be2']}:8080/iso-{run}/"}
    virtual_host = attached_object(
        "VirtualHost", bench.namespace, "iso", bench.pair, {"serverNames": [host], "locations": [location]}
    )
    started = time.monotonic()
    bench.apply(virtual_host)
    wait_for(
        lambda: f"path=/iso-{run}/" in bench.lab.http_get_via(bench.vip, host, "/", timeout=1).body,
        timeout=60,
        interval=0.05,
        what=f"iso-{run} served through the VIP",
    )
    return time.monotonic() - started


def hung_node(bench: Bench, runs: int) -> dict[str, Any]:
    lab = bench.lab
    lab.resize(PAIR_B_LAB_PAIR)
    try:
        documents = [
            lab_pair(lab, PAIR_B_LAB_PAIR, PAIR_B, bench.namespace, deletion_policy="Retain"),
            *web_objects(lab, bench.namespace, PAIR_B, "b.example.com"),
        ]
        bench.apply(*documents)
        wait_for(lambda: _pair_b_healthy(bench), timeout=60, what="pair B Ready")
        healthy = [_edit_to_vip_seconds(bench, run) for run in range(runs)]
        hung, reported = [], []
        for run in range(runs):
            wait_for(lambda: _pair_b_healthy(bench), timeout=60, what="pair B Ready with both nodes")
            hung_at = blackhole_mid_probe(lab, HUNG_NODE)
            try:
                hung.append(_edit_to_vip_seconds(bench, runs + run))
                wait_for(
                    lambda: _pair_b_node(bench, HUNG_NODE).get("reachable") is False,
                    timeout=60,
                    interval=0.1,
                    what=f"{HUNG_NODE} unreachable in pair B's status",
                )
                reported.append(time.monotonic() - hung_at)
            finally:
                lab.heal_mgmt(HUNG_NODE)
        wait_for(lambda: _pair_b_healthy(bench), timeout=60, what="pair B recovered")
    finally:
        lab.heal_mgmt()
        bench.kubectl("delete", "lbpair", PAIR_B, "--timeout=60s")
        bench.kubectl("delete", "virtualhost", "iso", f"{PAIR_B}-web", "--ignore-not-found")
        bench.kubectl("delete", "upstream", f"{PAIR_B}-web", "--ignore-not-found")
        lab.resize(1)
    healthy_summary, hung_summary = summary(healthy), summary(hung)
    return {
        "edit_to_vip_seconds_other_pair_healthy": healthy_summary,
        "edit_to_vip_seconds_other_pair_hung": hung_summary,
        "hung_over_healthy_median_ratio": round(hung_summary["median"] / healthy_summary["median"], 2),
        "hung_node_reported_unreachable_seconds": summary(reported),
        "hung_node": HUNG_NODE,
    }
