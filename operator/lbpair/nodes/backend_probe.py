"""Backend health as each LB node sees it: the agent's `probe-backends` command (a TCP connect to every
backend server, or an HTTP GET of the Upstream's healthPath, from the node, in parallel, each bounded by a
timeout and all of them by a total budget), and, pure, the Upstream status and the changes it makes from
one pass's answers.

From the node, not from the operator: the operator may sit in another network, and what matters is
whether the node that carries the VIP can reach the backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from lbpair.model.status import BackendNodeStatus, BackendStatus
from lbpair.nodes.client import NodeClient, NodeError
from lbpair.nodes.operations import _agent, _checked

CONNECT_TIMEOUT_SECONDS = 1
"""Per backend: a connect that takes longer counts as unreachable."""
BUDGET_SECONDS = 3
"""All backends of a node together: the command ends by then, whatever is still pending unreachable."""
MAX_TARGETS = 512
"""Backends probed per node and pass (the first by address and port); one shell process each, at once."""
SESSION_MARGIN_SECONDS = 5.0


class BackendTarget(NamedTuple):
    address: str
    port: int
    path: str = ""
    """An HTTP path to GET (the Upstream's healthPath); "": a TCP connect."""

    def __str__(self) -> str:
        return f"{self.address}:{self.port}{self.path}"


def probe_backends(client: NodeClient, targets: Iterable[BackendTarget]) -> dict[BackendTarget, bool]:
    """Whether the node can open a TCP connection to each target (at most MAX_TARGETS of them)."""
    probed = sorted(set(targets))[:MAX_TARGETS]
    if not probed:
        return {}
    arguments = [str(CONNECT_TIMEOUT_SECONDS), str(BUDGET_SECONDS), *(str(target) for target in probed)]
    result = _checked(
        _agent(client, "probe-backends", *arguments, timeout=BUDGET_SECONDS + SESSION_MARGIN_SECONDS),
        "probing backends",
    )
    return parse_backend_probe(result.stdout, probed)


def parse_backend_probe(output: str, targets: Sequence[BackendTarget]) -> dict[BackendTarget, bool]:
    """`ADDRESS:PORT up|down` lines; a target the node did not answer for (budget spent) is down."""
    up: set[str] = set()
    for line in output.splitlines():
        words = line.split()
        if len(words) == 2 and words[1] == "up":  # noqa: PLR2004
            up.add(words[0])
    if not output.strip() and targets:
        raise NodeError("probe-backends reported nothing")
    return {target: str(target) in up for target in targets}


NodeProbes = Mapping[str, Mapping[BackendTarget, bool]]
"""Per node name, what the node reported this pass; a node missing from it (unreachable, probe failed)
keeps what it reported last."""


def backend_statuses(
    servers: Sequence[BackendTarget],
    probes: NodeProbes,
    nodes: Sequence[str],
    previous: Sequence[BackendStatus],
    at: str,
) -> list[BackendStatus]:
    """Each server's reachability from each node, with when it last changed (kept while it holds)."""
    before = {(b.address, b.port, n.name): n for b in previous for n in b.nodes}
    statuses = []
    for server in servers:
        per_node = []
        for node in nodes:
            last = before.get((server.address, server.port, node))
            answered = probes.get(node, {}).get(server)
            if answered is None:
                if last is not None:
                    per_node.append(last)
                continue
            changed = last is None or last.reachable != answered
            since = at if changed or last is None else last.last_transition_time
            per_node.append(BackendNodeStatus(name=node, reachable=answered, last_transition_time=since))
        statuses.append(BackendStatus(address=server.address, port=server.port, nodes=per_node))
    return statuses


class BackendChange(NamedTuple):
    server: BackendTarget
    node: str
    reachable: bool


def backend_changes(
    previous: Sequence[BackendStatus], current: Sequence[BackendStatus]
) -> list[BackendChange]:
    """A server going down, or coming back, from a node's point of view; a server first seen down too."""
    before = {(b.address, b.port, n.name): n.reachable for b in previous for n in b.nodes}
    changes = []
    for backend in current:
        for node in backend.nodes:
            was = before.get((backend.address, backend.port, node.name))
            if was != node.reachable and (was is not None or not node.reachable):
                changes.append(
                    BackendChange(BackendTarget(backend.address, backend.port), node.name, node.reachable)
                )
    return changes
