"""The one place where a value needs more than a template's plain interpolation to become config syntax.

Each function is registered as a jinja2 filter of the same name and unit-tested on its own.
"""

from __future__ import annotations

MILLISECONDS_PER_SECOND = 1000


def seconds(milliseconds: int) -> str:
    """keepalived's fractional seconds (advert_int): 1000 → "1", 100 → "0.1", 1250 → "1.25"."""
    whole, remainder = divmod(milliseconds, MILLISECONDS_PER_SECOND)
    return f"{whole}.{remainder:03d}".rstrip("0").rstrip(".") if remainder else str(whole)


def on_off(flag: bool) -> str:
    """nginx's boolean directives."""
    return "on" if flag else "off"


FILTERS = {"seconds": seconds, "on_off": on_off}
