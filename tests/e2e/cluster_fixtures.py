"""pytest fixtures for the local control plane (etcd + kube-apiserver), torn down even on failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.cluster import ControlPlane, throwaway_run_dir, tools_bin_dir


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    """A fresh control plane for this test session, in its own run directory."""
    bin_dir = tools_bin_dir()
    if not (bin_dir / "kube-apiserver").exists():
        pytest.fail(f"{bin_dir}/kube-apiserver missing: `make test` builds it (hack/build-tools.sh)")
    plane = ControlPlane(run_dir=throwaway_run_dir(), bin_dir=bin_dir)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
