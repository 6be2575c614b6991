"""Which attached objects a node's validators refused, so the pair can leave them out and go on.

A pair is shared: one tenant's object that nginx refuses (a schema-valid value nginx still rejects) must
not stop everyone else's changes. When `nginx -t` (or `keepalived -t`) refuses a candidate config, its
output usually names the file at fault, and each Upstream and VirtualHost has files of its own: those
objects are blamed directly. When the output names no object's file (some checks report the end of the
`http` block, or no file at all), the objects that changed since the node's live config are bisected on the
refusing node: validating without all of them first (still refused: the pair's own settings are at fault,
and no tenant is blamed), then halves, one `nginx -t` each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence

from lbpair.render.model import ObjectKey

# An absolute path in a validator's message, with an optional ":line" (nginx: "... in /etc/x.conf:12").
_PATH = re.compile(r"(/[\w.@+-]+(?:/[\w.@+-]+)*)(?::\d+)?")
# Lines that say nothing about the cause ("nginx: configuration file /etc/nginx/nginx.conf test failed").
_VERDICT = re.compile(r"test failed|syntax is ok|test is successful", re.IGNORECASE)
_ERROR = re.compile(r"\[(emerg|alert|crit)\]")
# nginx's form of an errno: 'open() "/var/log/nginx/x.log" failed (24: Too many open files)'.
_OS_ERROR = re.compile(r"failed \(\d+: ")
# "2026/11/30 07:39:05 [emerg] 1282#1282: SSL_CTX_use_PrivateKey(...) failed"
_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: ")

Refuses = Callable[[Collection[ObjectKey]], "str | None"]
"""Validates the pair's config without the given objects on the refusing node: its output, or None."""


def blame(output: str, sources_by_path: Mapping[str, Sequence[ObjectKey]]) -> dict[ObjectKey, str]:
    """The objects whose files the validator's errors name, each with the lines that name them. Warnings
    name files too but refuse nothing, so only error lines count."""
    blamed: dict[ObjectKey, list[str]] = {}
    for line in cause_lines(output):
        if not _ERROR.search(line):
            continue
        named = {key for path in _PATH.findall(line) for key in sources_by_path.get(path, ())}
        for key in named:
            blamed.setdefault(key, []).append(line)
    return {key: "; ".join(lines) for key, lines in blamed.items()}


def told_to(key: ObjectKey, output: str, sources_by_path: Mapping[str, Sequence[ObjectKey]]) -> str:
    """What of the validators' output the object found at fault is told: the error lines that name no
    other object's file (its status and events must not show other tenants' names)."""
    return "; ".join(
        line
        for line in cause_lines(output)
        if _ERROR.search(line)
        and all(key in sources_by_path.get(path, [key]) for path in _PATH.findall(line))
    )


def node_at_fault(output: str) -> bool:
    """The node itself failed the check (an operating-system error: too many open files, a full disk, a
    permission): no object is to blame, whatever file nginx was opening."""
    return any(_OS_ERROR.search(line) for line in cause_lines(output))


def cause_lines(output: str) -> list[str]:
    """The validator's output without its verdict lines, and without the time and process ids nginx puts
    before a message it logs (so the message a status carries stays the same from one refusal to the next)."""
    return [
        _LOG_PREFIX.sub(r"\1 ", line.strip())
        for line in output.splitlines()
        if line.strip() and not _VERDICT.search(line)
    ]


def bisect(suspects: Sequence[ObjectKey], output: str, refuses: Refuses) -> tuple[ObjectKey, str] | None:
    """The one suspect whose inclusion makes the config refused, with the validators' output that showed
    it (see `told_to`); None when
    the config is refused even without every suspect (so it is the pair's own doing).

    `output` is what the validators said of the config with every suspect in. Invariant: the config with
    `fine` + `remaining` in is refused, with `fine` alone in it is accepted.
    """
    if not suspects or refuses(suspects) is not None:
        return None
    fine: list[ObjectKey] = []
    remaining = list(suspects)
    while len(remaining) > 1:
        half, rest = remaining[: len(remaining) // 2], remaining[len(remaining) // 2 :]
        left_out = [key for key in suspects if key not in fine and key not in half]
        refused = refuses(left_out)
        if refused is not None:
            remaining, output = half, refused
        else:
            fine += half
            remaining = rest
    return remaining[0], output
