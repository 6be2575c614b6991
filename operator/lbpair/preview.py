"""A paused pair's pass (spec.paused): the config is staged and validated on the backup node but never
swapped in, and what it would change is reported instead (status.preview and a ConfigMap).

The node's live files stay as they are on both nodes: staging writes beside them, and the agent's
`validate` reads the stage through a private overlay. The diff is against the files the node really has
(read back over SSH; lbpair.filediff keeps secrets out of it). A preview is made once per config and
live file set: later passes over the same ones only probe the nodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from lbpair.build import PairBuild
from lbpair.events import Event
from lbpair.filediff import ConfigDiff, LiveFile, diff_config
from lbpair.health import NodeReport, RolloutProblem
from lbpair.isolated_rollout import plans_for
from lbpair.model.common import ObjectMeta, ObjectRef
from lbpair.model.files import ManagedFile
from lbpair.model.status import PreviewStatus
from lbpair.nodes.client import NodeError
from lbpair.nodes.node import Node
from lbpair.nodes.observe import NodeObservation
from lbpair.nodes.operations import ValidationFailedError
from lbpair.rollout import NodePlan, PairRollout, compare, observe_all, rollout_order

MAX_FILES_READ = 200
"""Files whose live content a preview reads back (the diff is cut long before more would show)."""
CONFIG_MAP_SUFFIX = "-preview"
MAX_CONFIG_MAP_NAME = 253


class PreviewSink(Protocol):
    """Where previews are published (lbpair.kube.KubeAPI): a ConfigMap in the pair's namespace."""

    def put_config_map(self, owner: ObjectMeta, name: str, data: Mapping[str, str]) -> None: ...


@dataclass(frozen=True)
class _Made:
    """A preview as made for one config on one node's file set; reused while both stay the same."""

    made_for: tuple[str, str, frozenset[tuple[str, str | None]]]  # node, config hash, live files
    status: PreviewStatus
    problem: RolloutProblem | None


def preview_config_map_name(pair: str) -> str:
    return pair[: MAX_CONFIG_MAP_NAME - len(CONFIG_MAP_SUFFIX)] + CONFIG_MAP_SUFFIX


class Previewer:
    """Previews of paused pairs, remembered per pair so an unchanged preview is neither made nor
    published again."""

    def __init__(self, sink: PreviewSink | None) -> None:
        self._sink = sink
        self._made: dict[ObjectRef, _Made] = {}
        self._lock = threading.Lock()

    def forget(self, key: ObjectRef) -> None:
        with self._lock:
            self._made.pop(key, None)

    def run(
        self, key: ObjectRef, build: PairBuild, nodes: Mapping[str, Node]
    ) -> tuple[PairRollout, PreviewStatus]:
        """The pass's node reports (nothing rolled out: a node is programmed only if it runs the config
        already), its preview, and the problem that keeps Programmed False while the config differs."""
        observations, errors = observe_all(list(nodes.values()))
        plans = plans_for(build, nodes)
        reports = [_report(plan, observations.get(plan.name), errors.get(plan.name, "")) for plan in plans]
        reachable = [plan for plan in plans if plan.name in observations]
        name = preview_config_map_name(build.pair.metadata.name)
        if not reachable:
            message = "no node is reachable to validate the config on"
            status = PreviewStatus(config_map=name, node="", config_hash="", message=message)
            return PairRollout(reports, RolloutProblem("PreviewFailed", message)), status
        plan = rollout_order(reachable, observations, build.vips)[0]
        observation = observations[plan.name]
        made_for = (plan.name, plan.config_hash, _live_set(observation))
        with self._lock:
            made = self._made.get(key)
        events: list[Event] = []
        if made is None or made.made_for != made_for:
            try:
                made, data = _make(plan, observation, name, made_for)
            except NodeError as error:  # not remembered: the next pass tries again
                message = f"{plan.name}: {error}"
                status = PreviewStatus(
                    config_map=name, node=plan.name, config_hash=plan.config_hash, message=message
                )
                return PairRollout(reports, RolloutProblem("PreviewFailed", message)), status
            if self._sink is not None:
                self._sink.put_config_map(build.pair.metadata, name, data)
            with self._lock:
                self._made[key] = made
            events.append(_event(made))
        return PairRollout(reports, made.problem, events), made.status


def _report(plan: NodePlan, observation: NodeObservation | None, error: str) -> NodeReport:
    programmed = observation is not None and not compare(observation, plan).any
    return NodeReport(plan.name, observation, error, plan.config_hash if programmed else "", programmed)


def _live_set(observation: NodeObservation) -> frozenset[tuple[str, str | None]]:
    return frozenset((path, state.actual_sha256) for path, state in observation.managed_files.items())


def _make(
    plan: NodePlan,
    observation: NodeObservation,
    name: str,
    made_for: tuple[str, str, frozenset[tuple[str, str | None]]],
) -> tuple[_Made, dict[str, str]]:
    """Stage and validate the plan on its node, read back what it would replace, diff."""
    difference = compare(observation, plan)
    validated, message = True, ""
    if difference.changed:
        plan.node.stage(plan.files, difference.changed)
        try:
            plan.node.validate()
        except ValidationFailedError as error:
            validated, message = False, str(error)
    diff = diff_config(plan.files, live_files(plan.files, observation, plan.node.read_files))
    status = PreviewStatus(
        config_map=name,
        node=plan.name,
        config_hash=plan.config_hash,
        files_added=len(diff.added),
        files_changed=len(diff.changed),
        files_removed=len(diff.removed),
        validated=validated,
        message=message,
        diff_truncated=diff.diff.truncated,
    )
    return _Made(made_for, status, _problem(status, diff)), _config_map_data(status, diff)


def live_files(
    files: Sequence[ManagedFile],
    observation: NodeObservation,
    read: Callable[[list[str]], Mapping[str, str | None]],
) -> dict[str, LiveFile]:
    """The node's managed files as a diff against `files` needs them: with the content, read by `read`
    (the node's read-files), of the first MAX_FILES_READ that `files` would change or remove. The mode of
    a file `files` keeps is taken as theirs (the node reports hashes, not modes); a file only the node has
    is taken as a secret unless the node showed its content (it never shows a secret's)."""
    wanted = {managed.path: managed for managed in files}
    present = {path: state.actual_sha256 for path, state in observation.managed_files.items()}
    differing = [
        path
        for path, sha256 in present.items()
        if sha256 and (path not in wanted or wanted[path].sha256 != sha256)
    ]
    to_read = sorted(differing)[:MAX_FILES_READ]
    contents = read(to_read) if to_read else {}
    live: dict[str, LiveFile] = {}
    for path, sha256 in present.items():
        if sha256 is None:
            continue  # gone from the node: the config adds it back
        content = contents.get(path)
        mode = wanted[path].mode if path in wanted else (0o644 if content is not None else 0o600)
        live[path] = LiveFile(mode, sha256, content)
    return live


def _problem(status: PreviewStatus, diff: ConfigDiff) -> RolloutProblem | None:
    where = f"see ConfigMap {status.config_map}"
    if not status.validated:
        return RolloutProblem(
            "PreviewRejected", f"{status.node}: config rejected by the node ({where}): {status.message}"
        )
    if diff.any:
        return RolloutProblem(
            "Paused", f"spec.paused: {diff.summary} on {status.node} when unpaused ({where})"
        )
    return None


def _event(made: _Made) -> Event:
    status = made.status
    if not status.validated:
        return Event.warning(
            "PreviewRejected", f"{status.node}: the previewed config was refused: {status.message}"
        )
    counts = f"{status.files_added} added, {status.files_changed} changed, {status.files_removed} removed"
    return Event.normal("Previewed", f"{status.node}: config {status.config_hash[:12]} validated: {counts}")


def _config_map_data(status: PreviewStatus, diff: ConfigDiff) -> dict[str, str]:
    summary = [
        f"node: {status.node}",
        f"configHash: {status.config_hash}",
        f"files: {diff.summary}",
        f"validated: {str(status.validated).lower()}",
    ]
    if status.message:
        summary.append(f"message: {status.message}")
    return {"summary": "\n".join(summary) + "\n", "files": diff.file_list.text, "diff": diff.diff.text}
