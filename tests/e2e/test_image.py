"""The operator image as `make image` builds it (hack/image.sh: buildah, chroot isolation, a Debian 12 base
made by debootstrap): run in a container of it, it imports the operator's handlers with the locked
dependencies, runs kopf, and does so as the non-root user the chart's securityContext expects.

Cached by the build's inputs: a warm run finds the image in seconds; a cold one builds it (minutes)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.cluster import REPO_ROOT
from testbed.images import IMAGE_SCRIPT, build_operator_image

pytestmark = pytest.mark.e2e

DOCKERFILE = REPO_ROOT / "Dockerfile"
NON_ROOT_UID = "65532"  # the Dockerfile's USER; the chart's pod runs with runAsNonRoot
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m; print('\\n'.join(f'{d.name}=={d.version}' for d in m.distributions()))"
)
PINNED = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)", re.MULTILINE)


def buildah(*args: str, timeout: float = 120) -> str:
    """buildah on the project's image storage (hack/image.sh keeps it in the cache, outside the repo)."""
    result = subprocess.run(
        [str(IMAGE_SCRIPT), "buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def image() -> str:
    return build_operator_image()


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    name = buildah("from", "--quiet", "--pull-never", image).strip()
    try:
        yield name
    finally:
        buildah("rm", name)


def run_in(container: str, *command: str) -> str:
    """`command` in the container, as the image's user, with the image's environment."""
    return buildah("run", "--isolation", "chroot", container, "--", *command)


def image_config(image: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
    return config


def test_the_image_runs_the_operator_code_as_non_root(container: str) -> None:
    assert run_in(container, "id", "-u").strip() == NON_ROOT_UID
    where = run_in(container, "python", "-c", "import lbpair.handlers as h; print(h.__file__)")
    assert where.strip() == "/opt/lbpair/lbpair/handlers/__init__.py"
    assert "Usage: kopf run" in run_in(container, "kopf", "run", "--help")


def test_the_image_holds_exactly_the_locked_dependencies(container: str) -> None:
    listing = run_in(
        container,
        "python",
        "-c",
        LIST_DISTRIBUTIONS,
    )
    installed = {name.lower().replace("_", "-"): version for name, version in PINNED.findall(listing)}
    locked = dict(PINNED.findall((REPO_ROOT / "requirements.lock").read_text()))

    assert {name: installed.get(name) for name in locked} == locked
    assert set(installed) - set(locked) <= {"pip", "setuptools"}  # the venv's own installer


def test_the_image_starts_kopf_on_the_handlers_with_its_labels(image: str) -> None:
    config = image_config(image)

    (entrypoint,) = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT ")]
    assert config["Entrypoint"] == json.loads(entrypoint.removeprefix("ENTRYPOINT "))
    assert config["Entrypoint"][:2] == ["kopf", "run"]
    assert config["Entrypoint"][-2:] == ["-m", "lbpair.handlers"]  # the chart appends --liveness to it
    assert config["User"] == f"{NON_ROOT_UID}:{NON_ROOT_UID}"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "lbpair-operator"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"])
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/lbpair-debian:12-")
