"""nginx configuration files -> one tree of statements, includes resolved (crossplane; only here).

crossplane (nginx's own maintained parser for its configuration language) parses each file on its own
(`single=True`); includes are resolved here, against the files read from the node only, so a hostile
`include /root/.ssh/id_rsa` can never make this machine read its own files. Include patterns are matched
like glob(3): a wildcard never crosses a `/`. Each file is parsed at most once per include and includes
nest at most MAX_INCLUDE_DEPTH deep, which also stops include loops.
"""

from __future__ import annotations

import fnmatch
import posixpath
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crossplane

MAX_INCLUDE_DEPTH = 8
MAX_FILE_BYTES = 1024 * 1024


class NginxConfError(ValueError):
    """nginx's configuration could not be read as a whole (a file crossplane refuses, a loop)."""


@dataclass(frozen=True)
class NginxStatement:
    """One directive with its arguments, where it was written, and its block's statements if it has one."""

    directive: str
    args: tuple[str, ...]
    file: str
    line: int
    block: tuple[NginxStatement, ...] | None = None

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"

    def children(self, directive: str) -> list[NginxStatement]:
        return [statement for statement in self.block or () if statement.directive == directive]


def include_patterns(path: str, text: str, config_dir: str) -> list[str]:
    """Absolute include patterns of one file (relative ones are relative to nginx's config directory)."""
    return [
        _absolute(statement.args[0], config_dir)
        for statement in _walk(parse_file(path, text))
        if statement.directive == "include" and statement.args
    ]


def matching_files(pattern: str, files: Iterable[str]) -> list[str]:
    """The files of `files` an include pattern names, sorted as nginx reads them."""
    depth = pattern.count("/")
    return sorted(path for path in files if path.count("/") == depth and fnmatch.fnmatchcase(path, pattern))


def parse_tree(main: str, files: Mapping[str, str]) -> tuple[NginxStatement, ...]:
    """The statements of `main` with every include replaced by the statements of the files it names."""
    config_dir = posixpath.dirname(main)
    parsed = {path: parse_file(path, text) for path, text in files.items()}
    return _expand(parsed[main], parsed, config_dir, 0)


def parse_file(path: str, text: str) -> tuple[NginxStatement, ...]:
    """One file through crossplane, without following its includes; raises NginxConfError."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise NginxConfError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB")
    with tempfile.TemporaryDirectory(prefix="lbpair-adopt-") as scratch:
        local = Path(scratch) / "nginx.conf"
        local.write_text(text)
        # check_ctx off: an included file is parsed without knowing the context it is included into.
        payload = crossplane.parse(str(local), single=True, check_ctx=False, catch_errors=True)
    errors = [f"{path}:{error.get('line')}: {error.get('error')}" for error in payload["errors"]]
    if errors:
        raise NginxConfError("; ".join(error.replace(str(local), path) for error in errors))
    return tuple(_statement(raw, path) for raw in payload["config"][0]["parsed"])


def _statement(raw: Mapping[str, Any], path: str) -> NginxStatement:
    block = raw.get("block")
    return NginxStatement(
        directive=str(raw["directive"]),
        args=tuple(str(arg) for arg in raw.get("args", [])),
        file=path,
        line=int(raw.get("line", 0)),
        block=None if block is None else tuple(_statement(child, path) for child in block),
    )


def _expand(
    statements: tuple[NginxStatement, ...],
    parsed: Mapping[str, tuple[NginxStatement, ...]],
    config_dir: str,
    depth: int,
) -> tuple[NginxStatement, ...]:
    expanded: list[NginxStatement] = []
    for statement in statements:
        if statement.directive == "include" and statement.args:
            if depth >= MAX_INCLUDE_DEPTH:
                raise NginxConfError(f"{statement.source}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
            pattern = _absolute(statement.args[0], config_dir)
            for path in matching_files(pattern, parsed):
                expanded.extend(_expand(parsed[path], parsed, config_dir, depth + 1))
            continue
        if statement.block is not None:
            block = _expand(statement.block, parsed, config_dir, depth)
            expanded.append(
                NginxStatement(statement.directive, statement.args, statement.file, statement.line, block)
            )
        else:
            expanded.append(statement)
    return tuple(expanded)


def _walk(statements: tuple[NginxStatement, ...]) -> Iterator[NginxStatement]:
    for statement in statements:
        yield statement
        yield from _walk(statement.block or ())


def _absolute(pattern: str, config_dir: str) -> str:
    return posixpath.normpath(posixpath.join(config_dir, pattern))
