"""keepalived's block syntax -> a tree of statements (pure, bounded).

keepalived reads its configuration line by line: the first word of a line is a keyword, the rest its
arguments; a line ending in `{` opens a block that a `}` closes. `!` and `#` start a comment, double quotes
group words (`script "/etc/keepalived/check.sh arg"`). The input comes from a node that nobody vouched for,
so the parser is bounded (size, depth, statements) and keeps every value as text: what may reach a
manifest is decided by the mapping and the model's allow-lists, not here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_INPUT_BYTES = 1024 * 1024
MAX_DEPTH = 8
MAX_STATEMENTS = 20000
_COMMENT_STARTS = ("!", "#")


class KeepalivedSyntaxError(ValueError):
    """The file is not keepalived block syntax (or passes a bound); the message names the line."""


@dataclass(frozen=True)
class KeepalivedStatement:
    """`keyword args...` on one line, with the statements of its `{ ... }` block when it opens one."""

    keyword: str
    args: tuple[str, ...]
    line: int
    block: tuple[KeepalivedStatement, ...] | None = None

    def children(self, keyword: str) -> list[KeepalivedStatement]:
        return [statement for statement in self.block or () if statement.keyword == keyword]

    def first(self, keyword: str) -> KeepalivedStatement | None:
        found = self.children(keyword)
        return found[0] if found else None


@dataclass
class _Open:
    keyword: str
    args: list[str]
    line: int
    block: list[KeepalivedStatement] = field(default_factory=list)


def parse_keepalived(text: str) -> tuple[KeepalivedStatement, ...]:
    """The top-level statements of a keepalived.conf; raises KeepalivedSyntaxError."""
    if len(text.encode()) > MAX_INPUT_BYTES:
        raise KeepalivedSyntaxError(f"larger than {MAX_INPUT_BYTES // 1024} KiB")
    root = _Open("", [], 0)
    stack = [root]
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        words: list[str] = []
        for token in _tokens(line, number):
            if token == "{":  # noqa: S105 - a brace, not a password
                if not words:
                    raise KeepalivedSyntaxError(f"line {number}: '{{' without a keyword")
                if len(stack) > MAX_DEPTH:
                    raise KeepalivedSyntaxError(f"line {number}: blocks nested deeper than {MAX_DEPTH}")
                stack.append(_Open(words[0], words[1:], number))
                words = []
            elif token == "}":  # noqa: S105 - a brace, not a password
                count += _close_words(stack[-1], words, number)
                words = []
                if len(stack) == 1:
                    raise KeepalivedSyntaxError(f"line {number}: '}}' without an open block")
                closed = stack.pop()
                stack[-1].block.append(_statement(closed, tuple(closed.block)))
                count += 1
            else:
                words.append(token)
        count += _close_words(stack[-1], words, number)
        if count > MAX_STATEMENTS:
            raise KeepalivedSyntaxError(f"more than {MAX_STATEMENTS} statements")
    if len(stack) > 1:
        raise KeepalivedSyntaxError(f"line {stack[-1].line}: block {stack[-1].keyword} is never closed")
    return tuple(root.block)


def _statement(opened: _Open, block: tuple[KeepalivedStatement, ...] | None) -> KeepalivedStatement:
    return KeepalivedStatement(opened.keyword, tuple(opened.args), opened.line, block)


def _close_words(into: _Open, words: list[str], number: int) -> int:
    if not words:
        return 0
    into.block.append(KeepalivedStatement(words[0], tuple(words[1:]), number))
    return 1


def _tokens(line: str, number: int) -> Iterator[str]:
    """Words, quoted strings (quotes removed) and braces of one line, up to a comment."""
    position = 0
    while position < len(line):
        character = line[position]
        if character.isspace():
            position += 1
        elif character in "{}":
            yield character
            position += 1
        elif character.startswith(_COMMENT_STARTS):
            return
        elif character == '"':
            end = line.find('"', position + 1)
            if end < 0:
                raise KeepalivedSyntaxError(f"line {number}: unterminated quoted string")
            yield line[position + 1 : end]
            position = end + 1
        else:
            end = position
            while end < len(line) and not line[end].isspace() and line[end] not in '{}"':
                end += 1
            yield line[position:end]
            position = end
