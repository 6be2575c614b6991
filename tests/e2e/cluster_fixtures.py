"""pytest fixtures for the local control plane (etcd + kube-apiserver), torn down even on failure."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.cluster import ControlPlane, tools_bin_dir


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    """A fresh control plane for this test session, in its own run directory."""
    bin_dir = tools_bin_dir()
    if not (bin_dir / "kube-apiserver").exists():
        pytest.fail(f"{bin_dir}/kube-apiserver missing: `make test` builds it (hack/build-tools.sh)")
    run_dir = Path(tempfile.mkdtemp(prefix="lbpair-cluster-"))
    plane = ControlPlane(run_dir=run_dir, bin_dir=bin_dir)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
