"""A file the operator manages on a node, and the hashes every layer agrees on.

The renderer produces these, the node layer ships them, and the node agent records each one as a
`MODE SHA256 PATH` manifest line: one type and one line format, so the hashes compared on the node and
the config hash in status cannot disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

CONFIG_FILE_MODE = 0o644


@dataclass(frozen=True)
class ManagedFile:
    path: str
    """Absolute path on the node, built from allow-listed identifiers only."""
    content: str
    mode: int = CONFIG_FILE_MODE

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()

    @property
    def manifest_line(self) -> str:
        """`MODE SHA256 PATH`, the line the node agent keeps for each managed file."""
        return f"{self.mode:04o} {self.sha256} {self.path}\n"


def manifest_hash(files: Iterable[ManagedFile]) -> str:
    """One hash over paths, modes and contents, independent of the order the files are given in."""
    return hashlib.sha256("".join(sorted(f.manifest_line for f in files)).encode()).hexdigest()
