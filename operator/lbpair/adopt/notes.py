"""What an import could not carry over, directive by directive, for the user to read before applying."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Note:
    """A directive (or one of its values) the manifests do not express, or express differently."""

    source: str
    """Where it was written: `NODE:FILE:LINE`, or the object path the model refused."""
    what: str
    """The directive as written (shortened), or the field."""
    reason: str
    """Why, and what the operator does instead."""

    def __str__(self) -> str:
        return f"{self.source}: {self.what}: {self.reason}"


def shorten(words: tuple[str, ...] | list[str], limit: int = 80) -> str:
    """A directive for a message: its words on one line, cut at `limit` characters, control characters
    replaced (the text comes from a node and goes to a terminal)."""
    text = " ".join(words)
    text = "".join(character if character.isprintable() else "?" for character in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
