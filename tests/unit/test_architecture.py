"""Each outside dependency with side effects or a large surface is imported in exactly one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "lbpair"

# The one module (or package) of ours that may import each of these.
SOLE_IMPORTERS = {
    "kopf": "lbpair/handlers",
    "kubernetes": "lbpair/kube.py",
    "paramiko": "lbpair/nodes/ssh.py",
    "jinja2": "lbpair/render",
    "prometheus_client": "lbpair/metrics.py",
    "crossplane": "lbpair/adopt/nginx_conf.py",
}


def imported_top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("dependency", "owner"), sorted(SOLE_IMPORTERS.items()))
def test_dependency_is_imported_only_by_its_owner(dependency: str, owner: str) -> None:
    importers = {
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if dependency in imported_top_level_names(path)
    }

    assert {importer for importer in importers if not importer.startswith(owner)} == set()
