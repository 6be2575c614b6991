#!/usr/bin/env bash
# Build the operator image daemonless with buildah (chroot isolation, vfs storage, no registry needed),
# idempotently and cached outside the repo:
#   1. deps:  the Debian packages buildah and debootstrap (installed once);
#   2. base:  a Debian 12 base image made by debootstrap and imported into buildah's storage, cached by
#             its version tag (CI and dev machines reach no container registry). Users build FROM the
#             official image instead: `buildah build --build-arg BASE=docker.io/library/debian:bookworm-slim .`
#   3. build: the Dockerfile on that base, skipped when an image of the same inputs (Dockerfile, lock,
#             package sources, base image id) is already in storage.
# The host's CA bundle is mounted into the build for pip (the machine's egress may re-sign TLS).
#
# Usage: hack/image.sh [deps|base|build|all]   (default all; the last line printed is the image name)
#        hack/image.sh buildah ARGS...         buildah on the project's storage (e.g. `images`, `rmi`)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache_root=${LBPAIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbpair-operator}
image_cache="$cache_root/image"
log() { printf '[image] %s\n' "$*" >&2; }

DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${LBPAIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE="localhost/lbpair-debian:12-$DEBIAN_SUITE-v1"   # bump v1 to remake the cached base
IMAGE_REPOSITORY=localhost/lbpair-operator
HOST_CA=/etc/ssl/certs/ca-certificates.crt

export BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs
lbuildah() { buildah --root "$image_cache/storage" --runroot "$image_cache/run" --storage-driver vfs "$@"; }
have_image() { lbuildah inspect --type image "$1" >/dev/null 2>&1; }

install_deps() {
  local missing=() p
  for p in buildah debootstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then log "buildah and debootstrap present"; return; fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

make_base() {
  if have_image "$BASE_IMAGE"; then log "base $BASE_IMAGE present"; return; fi
  local rootfs="$image_cache/debootstrap-$DEBIAN_SUITE"
  local started=$SECONDS
  if [[ ! -e $rootfs/.complete ]]; then
    rm -rf "$rootfs"
    log "debootstrap $DEBIAN_SUITE (minbase) from $DEBIAN_MIRROR into $rootfs"
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$image_cache/debootstrap.log" 2>&1 \
      || { tail -n 30 "$image_cache/debootstrap.log" >&2; return 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    touch "$rootfs/.complete"
  fi
  log "importing $rootfs as $BASE_IMAGE"
  local container mount
  container=$(lbuildah from scratch)
  mount=$(lbuildah mount "$container")
  tar -C "$rootfs" --exclude=./.complete -cf - . | tar -C "$mount" -xpf -
  lbuildah umount "$container" >/dev/null
  lbuildah config --cmd /bin/bash --label "org.opencontainers.image.description=Debian 12 made by debootstrap" "$container"
  lbuildah commit -q "$container" "$BASE_IMAGE" >/dev/null
  lbuildah rm "$container" >/dev/null
  log "base ready in $((SECONDS - started)) s"
}

# The build's inputs: what .dockerignore lets into the context, the Dockerfile and the base image.
inputs_hash() {
  local base_id=$1
  (
    cd "$repo"
    printf '%s\n' "$base_id"
    sha256sum Dockerfile .dockerignore requirements.lock pyproject.toml  # pyproject: the version label
    find operator/lbpair -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
      | sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -c1-16
}

build_image() {
  local base=${LBPAIR_IMAGE_BASE:-$BASE_IMAGE}
  local base_id version key
  base_id=$(lbuildah inspect --type image --format '{{.FromImageID}}' "$base")
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")
  key=$(inputs_hash "$base_id")
  if have_image "$IMAGE_REPOSITORY:in-$key"; then
    log "image of these inputs present ($IMAGE_REPOSITORY:in-$key)"
  else
    local started=$SECONDS
    log "building $IMAGE_REPOSITORY:in-$key on $base"
    lbuildah build --isolation chroot --layers --quiet \
      --build-arg "BASE=$base" --build-arg "VERSION=$version" \
      --build-arg "REVISION=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)" \
      --volume "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt \
      --tag "$IMAGE_REPOSITORY:in-$key" "$repo" >/dev/null
    log "built in $((SECONDS - started)) s"
  fi
  lbuildah tag "$IMAGE_REPOSITORY:in-$key" "$IMAGE_REPOSITORY:$version"
  echo "$IMAGE_REPOSITORY:in-$key"
}

mkdir -p "$image_cache"
case ${1:-all} in
  deps) install_deps ;;
  base) install_deps; make_base ;;
  build) build_image ;;
  all) install_deps; make_base; build_image ;;
  buildah) shift; lbuildah "$@" ;;
  *) echo "usage: $0 [deps|base|build|all|buildah ARGS...]" >&2; exit 2 ;;
esac
