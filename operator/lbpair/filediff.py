"""Pure: what a rendered config would change in the files a node runs, as counts and a bounded unified
diff that never shows a secret.

Shared by the preview of a paused pair (lbpair.preview) and `python -m lbpair diff` (lbpair.diff_cli), so
both print the same diff for the same files. A file that is not world-readable (a TLS private key, mode
0600) is a secret: its content is never shown nor read from a node, only that it is added, changed or
removed; keepalived's VRRP password is masked in keepalived.conf.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lbpair.model.files import ManagedFile

MAX_DIFF_LINES = 4000
MAX_DIFF_BYTES = 256 * 1024
"""A ConfigMap holds 1 MiB; the diff and the file list each get a quarter of it."""
REDACTED = "<redacted>"
_VRRP_PASSWORD = re.compile(r"^(\s*auth_pass\s+)\S+", re.MULTILINE)
_WORLD_READABLE = 0o004


@dataclass(frozen=True)
class LiveFile:
    """A file as a node has it: its mode and hash, and its content when it was read (None: not read,
    e.g. a secret)."""

    mode: int
    sha256: str
    content: str | None = None


@dataclass(frozen=True)
class BoundedText:
    text: str
    truncated: bool


@dataclass(frozen=True)
class ConfigDiff:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    diff: BoundedText
    """The unified diff, old (the node) to new (the rendered config), file by file in path order."""

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    @property
    def file_list(self) -> BoundedText:
        """One line per file, as `git status --short` marks them: A, M or D and the path."""
        lines = [f"{mark} {path}\n" for mark, paths in self._marked() for path in paths]
        return bound(lines, "file list")

    @property
    def summary(self) -> str:
        return f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed"

    def _marked(self) -> list[tuple[str, tuple[str, ...]]]:
        return [("A", self.added), ("M", self.changed), ("D", self.removed)]


def is_secret(mode: int) -> bool:
    """Files nobody but their owner may read hold secrets (TLS private keys)."""
    return not mode & _WORLD_READABLE


def redact(content: str) -> str:
    """The content with the secrets a world-readable file may hold masked (keepalived's auth_pass)."""
    return _VRRP_PASSWORD.sub(rf"\g<1>{REDACTED}", content)


def diff_config(desired: Iterable[ManagedFile], live: Mapping[str, LiveFile]) -> ConfigDiff:
    """What putting `desired` live would change on a node that has `live` (the files the operator
    manages there, by path): every path added, changed (content or mode) or removed, and the diff."""
    wanted = {managed.path: managed for managed in desired}
    added = sorted(wanted.keys() - live.keys())
    removed = sorted(live.keys() - wanted.keys())
    changed = sorted(
        path
        for path in wanted.keys() & live.keys()
        if (wanted[path].sha256, wanted[path].mode) != (live[path].sha256, live[path].mode)
    )
    lines: list[str] = []
    for path in sorted([*added, *changed, *removed]):
        new, old = wanted.get(path), live.get(path)
        lines += _file_diff(path, old, new)
    return ConfigDiff(tuple(added), tuple(changed), tuple(removed), bound(lines, "diff"))


def _file_diff(path: str, old: LiveFile | None, new: ManagedFile | None) -> list[str]:
    modes = [file.mode for file in (old, new) if file is not None]
    if any(is_secret(mode) for mode in modes):
        what = "added" if old is None else ("removed" if new is None else "changed")
        return [f"--- {path}\n", f"+++ {path}\n", f"# secret file {what}: content not shown\n"]
    old_text = _text(old.content if old is not None else "")
    new_text = _text(new.content if new is not None else "")
    header = []
    if old is not None and new is not None and old.mode != new.mode:
        header = [f"# mode {old.mode:04o} -> {new.mode:04o}\n"]
    unified = difflib.unified_diff(
        old_text,
        new_text,
        "/dev/null" if old is None else f"a{path}",
        "/dev/null" if new is None else f"b{path}",
    )
    return header + [
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in unified
    ]


def _text(content: str | None) -> list[str]:
    if content is None:  # not read from the node: say so rather than show a diff against nothing
        return ["(content not read from the node)\n"]
    return redact(content).splitlines(keepends=True)


def bound(lines: Sequence[str], what: str) -> BoundedText:
    """`lines` joined, cut at MAX_DIFF_LINES lines or MAX_DIFF_BYTES bytes with a last line saying so."""
    kept, size = 0, 0
    for line in lines[:MAX_DIFF_LINES]:
        size += len(line.encode())
        if size > MAX_DIFF_BYTES:
            break
        kept += 1
    if kept == len(lines):
        return BoundedText("".join(lines), truncated=False)
    note = f"# {what} truncated: {kept} of {len(lines)} lines shown (limits {MAX_DIFF_LINES} lines, "
    note += f"{MAX_DIFF_BYTES} bytes)\n"
    return BoundedText("".join(lines[:kept]) + note, truncated=True)
