"""Scraping the operator's /metrics as Prometheus would, for the tests."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Series = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Scrape:
    """The samples of one scrape (text exposition format), by metric name and label set."""

    samples: dict[Series, float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[Series, float] = {}
        for line in text.splitlines():
            found = SAMPLE.fullmatch(line)
            if found and not line.startswith("#"):
                labels = frozenset(LABEL.findall(found["labels"] or ""))
                samples[found["name"], labels] = float(found["value"])
        return cls(samples)

    def value(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels; None when the scrape has no such series."""
        return self.samples.get((name, frozenset(labels.items())))

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> Scrape:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as response:
        return Scrape.parse(response.read().decode())
