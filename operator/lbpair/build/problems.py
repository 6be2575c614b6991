"""Why an attached object is left out of the configuration."""

from __future__ import annotations

from dataclasses import dataclass

from lbpair.render.model import ObjectKey


@dataclass(frozen=True, order=True)
class Problem:
    """One reason an object is left out, naming the field at fault."""

    object: ObjectKey
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.object}: {self.field}: {self.message}"
