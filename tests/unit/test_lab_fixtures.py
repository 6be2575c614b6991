"""Tests fail, never skip, where CI would run them: a skipped test hides an untested feature."""

from __future__ import annotations

import re

import pytest

from tests.e2e import lab_fixtures
from tests.unit.samples import REPO

THIS_FILE = REPO / "tests" / "unit" / "test_lab_fixtures.py"
SKIPS = re.compile(r"pytest\.skip\(|mark\.skip|importorskip|mark\.xfail|pytest\.xfail\(")


def test_the_lab_fixture_fails_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)

    with pytest.raises(pytest.fail.Exception, match="needs root"):
        lab_fixtures.require_root()


def test_no_test_or_fixture_skips() -> None:
    sources = [path for path in sorted((REPO / "tests").rglob("*.py")) if path != THIS_FILE]

    skipping = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if SKIPS.search(line)
    ]

    assert skipping == []
