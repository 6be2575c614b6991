#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian 12 machine of this kind, idempotently:
#   1. Debian packages for the lab nodes (nginx, keepalived, sshd, ...) and tooling;
#   2. a Python virtualenv with the locked dependencies, kept in the cache outside the repo and keyed
#      by the lock file's hash (so a clean clone reuses it);
#   3. the Go-built control plane, the node binaries and helm (hack/build-tools.sh);
#   4. for the test bed's kubelet node (testbed/kubenode.py): the CNI plugins, unpacked into the cache.
# Prints nothing but progress; the environment for make is written to $cache_root/env.mk.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache_root=${LBPAIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbpair-operator}
mkdir -p "$cache_root"
log() { printf '[install-deps] %s\n' "$*" >&2; }

debian_packages=(
  nginx keepalived openssh-server openssh-client iproute2 nftables tini socat wrk curl
  iputils-ping procps util-linux
  # The kubelet node's container runtime, and a static C toolchain for kubernetes' pause.c.
  containerd runc gcc libc6-dev
)
missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  # No daemon may start in the root namespace: the lab starts its own copies inside its nodes.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

lock="$repo/requirements-dev.lock"
venv="$cache_root/venv-$(sha256sum <"$lock" | cut -c1-16)"
if [[ ! -x $venv/bin/python || ! -e $venv/.complete ]]; then
  log "creating virtualenv $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  # The project itself is not installed: make puts operator/ on PYTHONPATH, so one venv serves
  # every checkout with the same lock.
  "$venv/bin/pip" install -q --no-deps -r "$lock"
  touch "$venv/.complete"
else
  log "virtualenv $venv present"
fi
ln -sfn "$venv" "$cache_root/venv"

tools_bin=$("$here/build-tools.sh" | tail -n 1)

# The node's CNI plugins (bridge, host-local, loopback) from Debian's package, unpacked rather than
# installed: installing it pulls in iptables.
cni_version=$(apt-cache policy containernetworking-plugins | sed -n 's/^ *Candidate: //p')
cni_dir="$cache_root/cni-plugins-$cni_version"
if [[ ! -x $cni_dir/bin/bridge ]]; then
  log "unpacking containernetworking-plugins $cni_version into $cni_dir"
  rm -rf "$cni_dir.tmp"; mkdir -p "$cni_dir.tmp"
  # (apt warns that root downloads unsandboxed into a directory _apt cannot write: shown only on failure)
  out=$(cd "$cni_dir.tmp" && apt-get download -qq "containernetworking-plugins=$cni_version" 2>&1) \
    || { printf '%s\n' "$out" >&2; exit 1; }
  dpkg -x "$cni_dir.tmp"/containernetworking-plugins_*.deb "$cni_dir.tmp/root"
  mv "$cni_dir.tmp/root/usr/lib/cni" "$cni_dir.tmp/bin"
  rm -rf "$cni_dir.tmp/root" "$cni_dir.tmp"/*.deb "$cni_dir"; mv "$cni_dir.tmp" "$cni_dir"
fi
ln -sfn "$cni_dir/bin" "$cache_root/cni-bin"
printf 'VENV := %s\nTOOLS_BIN := %s\n' "$venv" "$tools_bin" >"$cache_root/env.mk"
log "ready: venv=$venv tools=$tools_bin"
