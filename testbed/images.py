"""Container images for the test bed's kubelet node, made without a registry (none is reachable here).

The pause image (the pod sandbox) is kubernetes' own build/pause/linux/pause.c, compiled static and
written as a one-layer docker-archive (`docker save` layout) that `ctr images import` reads. The operator
image is the one `make image` builds (hack/image.sh, buildah storage), exported as a docker-archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

from testbed.cluster import REPO_ROOT, pinned_versions

IMAGE_SCRIPT = REPO_ROOT / "hack" / "image.sh"
# kubernetes' build/pause/Makefile TAG at v1.37; the name is ours (localhost/, never pulled).
PAUSE_IMAGE = "localhost/lbpair/pause:3.10.2"
# A fixed creation time: the same inputs give the same image id.
IMAGE_CREATED = "2026-01-01T00:00:00Z"
BUILD_TIMEOUT_SECONDS = 1800


def pause_source() -> Path:
    """pause.c of the pinned kubernetes version, from the Go module cache hack/build-tools.sh filled."""
    module_cache = subprocess.run(
        ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    version = pinned_versions()["KUBERNETES_VERSION"]
    source = Path(module_cache) / f"k8s.io/kubernetes@{version}" / "build/pause/linux/pause.c"
    if not source.exists():
        raise FileNotFoundError(f"{source} missing: hack/build-tools.sh downloads k8s.io/kubernetes")
    return source


def _directory(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type = tarfile.DIRTYPE
    entry.mode = mode
    return entry


def single_file_layer(path_in_image: str, content: bytes) -> bytes:
    """An uncompressed layer tar holding one executable file (root-owned) and the directories a
    container runtime mounts over (/dev, /proc, /sys, /etc, /tmp)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("dev", "etc", "proc", "sys"):
            tar.addfile(_directory(directory))
        tar.addfile(_directory("tmp", 0o1777))
        entry = tarfile.TarInfo(path_in_image.strip("/"))
        entry.size = len(content)
        entry.mode = 0o755
        tar.addfile(entry, io.BytesIO(content))
    return layer.getvalue()


def write_docker_archive(archive: Path, reference: str, layer: bytes, entrypoint: list[str]) -> None:
    """A docker-archive (the `docker save` layout: manifest.json, a config blob, one layer) of `layer`."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": IMAGE_CREATED,
            "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [reference], "Layers": ["layer.tar"]}])
    with tarfile.open(archive, "w") as tar:
        for name, blob in ((config_name, config), ("layer.tar", layer), ("manifest.json", manifest.encode())):
            entry = tarfile.TarInfo(name)
            entry.size = len(blob)
            tar.addfile(entry, io.BytesIO(blob))


def build_pause_archive(work_dir: Path) -> Path:
    """PAUSE_IMAGE as a docker-archive in `work_dir`: pause.c compiled the way its Makefile does."""
    binary = work_dir / "pause"
    version = pinned_versions()["KUBERNETES_VERSION"]
    subprocess.run(
        ["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={version}-lbpair",
         "-o", str(binary), str(pause_source())],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    archive = work_dir / "pause.tar"
    write_docker_archive(archive, PAUSE_IMAGE, single_file_layer("/pause", binary.read_bytes()), ["/pause"])
    return archive


def build_operator_image() -> str:
    """`make image`'s build (cached by its inputs: seconds when warm); returns the image name."""
    built = subprocess.run(
        [str(IMAGE_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False
    )
    if built.returncode != 0:
        raise RuntimeError(f"hack/image.sh failed:\n{built.stderr[-4000:]}")
    return built.stdout.strip().splitlines()[-1]


def export_operator_archive(image: str, work_dir: Path) -> Path:
    """`image` from buildah's storage as a docker-archive that containerd can import."""
    archive = work_dir / "operator.tar"
    archive.unlink(missing_ok=True)
    subprocess.run(
        [str(IMAGE_SCRIPT), "buildah", "push", "--quiet", image, f"docker-archive:{archive}:{image}"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return archive
