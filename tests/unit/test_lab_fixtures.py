"""The e2e layer fails, never skips, where CI would run it: a skipped lab test hides an untested feature."""

from __future__ import annotations

import re

import pytest

from tests.e2e import lab_fixtures
from tests.unit.samples import REPO

SKIPS = re.compile(r"pytest\.skip\(|mark\.skip|importorskip|mark\.xfail|pytest\.xfail\(")


def test_the_lab_fixture_fails_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)

    with pytest.raises(pytest.fail.Exception, match="needs root"):
        lab_fixtures.require_root()


def test_no_e2e_test_or_fixture_skips() -> None:
    sources = [*sorted((REPO / "tests" / "e2e").glob("*.py")), REPO / "tests" / "conftest.py"]

    skipping = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if SKIPS.search(line)
    ]

    assert skipping == []
