#!/usr/bin/env bash
# Build the control-plane binaries (etcd, kube-apiserver, kubectl), the node binaries (kubelet,
# kube-controller-manager, kube-scheduler) and helm from the Go module proxy, caching them outside the
# repo keyed by version. Idempotent: a cached binary is reused.
#
# If KUBEBUILDER_ASSETS points at a directory holding etcd, kube-apiserver and kubectl (the envtest
# convention), those are used instead of building. Prints the directory holding all four tools.
#
# Usage: hack/build-tools.sh            -> builds what is missing, prints the bin dir on the last line
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache_root=${LBPAIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbpair-operator}
tools_bin="$cache_root/bin"        # symlinks to the versioned binaries below; what callers put on PATH
mkdir -p "$tools_bin"

log() { printf '[build-tools] %s\n' "$*" >&2; }

# Run a long build, printing a heartbeat with the number of packages compiled so far.
run_with_progress() {
  local what=$1; shift
  local logf; logf=$(mktemp)
  local start=$SECONDS
  ("$@" >"$logf" 2>&1) &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 15
    kill -0 "$pid" 2>/dev/null || break
    log "$what: $(grep -c . "$logf" || true) packages so far, $((SECONDS - start)) s elapsed"
  done
  if ! wait "$pid"; then
    log "$what FAILED; last output:"; tail -n 40 "$logf" >&2; rm -f "$logf"; return 1
  fi
  rm -f "$logf"
  log "$what done in $((SECONDS - start)) s"
}

# Run a command, showing its output only if it fails (go get lists every module it downloads).
quietly() {
  local out
  if ! out=$("$@" 2>&1); then printf '%s\n' "$out" >&2; return 1; fi
}

link_tool() { ln -sfn "$1" "$tools_bin/$(basename "$1")"; }

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

# Write a wrapper module in $1 that requires k8s.io/kubernetes $KUBERNETES_VERSION, then `go get` the
# commands named by the remaining arguments (paths under k8s.io/kubernetes/cmd/).
kubernetes_module() {
  local work=$1; shift
  local staging_version="v0.${KUBERNETES_VERSION#v1.}"
  rm -rf "$work"; mkdir -p "$work"
  log "kubernetes $KUBERNETES_VERSION: resolving modules for $* (staging at $staging_version)"
  local gomod
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  {
    echo "module lbpair.local/kubernetes-build"
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo "replace ("
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and points them at ./staging, which only
    # works inside its own repo; replace each one with its published release instead.
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    echo ")"
  } >"$work/go.mod"
  local cmd pkgs=()
  for cmd in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd@$KUBERNETES_VERSION"); done
  (cd "$work" && quietly go get "${pkgs[@]}")
}

# Build the kubernetes commands named after $2 into directory $1 (one `go build`, so shared packages
# compile once), stamping the version the way the release build does.
build_kubernetes_commands() {
  local out=$1; shift
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local work="$cache_root/src/$(basename "$out")"
  kubernetes_module "$work" "$@"
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  local cmd pkgs=""
  for cmd in "$@"; do pkgs+=" k8s.io/kubernetes/cmd/$cmd"; done
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  run_with_progress "$* $KUBERNETES_VERSION" \
    bash -c "cd '$work' && go build -v -trimpath -ldflags '$ldflags' -o '$out.tmp/' $pkgs"
  rm -rf "$out"; mv "$out.tmp" "$out"
  for cmd in "$@"; do link_tool "$out/$cmd"; done
}

# Link the commands in $1 if all are cached there; fails (so the caller builds) if one is missing.
link_cached() {
  local out=$1; shift
  local cmd
  for cmd in "$@"; do [[ -x $out/$cmd ]] || return 1; done
  for cmd in "$@"; do link_tool "$out/$cmd"; done
}

build_kubernetes() {
  local out="$cache_root/kubernetes-$KUBERNETES_VERSION"
  link_cached "$out" kube-apiserver kubectl || build_kubernetes_commands "$out" kube-apiserver kubectl
}

# The node side for the test bed's real worker node (testbed/kubenode.py); its own cache dir, so the
# control-plane dir above keeps its key. kubelet needs no cgo here (the spike's build, CGO_ENABLED=0).
build_kubernetes_node() {
  local out="$cache_root/kubernetes-node-$KUBERNETES_VERSION"
  local cmds=(kubelet kube-controller-manager kube-scheduler)
  link_cached "$out" "${cmds[@]}" || build_kubernetes_commands "$out" "${cmds[@]}"
}

build_etcd() {
  local out="$cache_root/etcd-$ETCD_VERSION"
  if [[ -x $out/etcd ]]; then link_tool "$out/etcd"; return; fi
  local work="$cache_root/src/etcd-$ETCD_VERSION"
  rm -rf "$work"; mkdir -p "$work"
  log "etcd $ETCD_VERSION: resolving modules"
  # The server module's own go.mod carries replace directives, so `go install pkg@v` refuses it;
  # a wrapper module that requires it builds fine.
  printf 'module lbpair.local/etcd-build\ngo %s\n' "$(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')" >"$work/go.mod"
  (cd "$work" && quietly go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  mkdir -p "$out.tmp"
  run_with_progress "etcd $ETCD_VERSION" \
    bash -c "cd '$work' && go build -v -trimpath -ldflags '-s -w' -o '$out.tmp/etcd' go.etcd.io/etcd/server/v3"
  rm -rf "$out"; mv "$out.tmp" "$out"
  link_tool "$out/etcd"
}

build_helm() {
  local out="$cache_root/helm-$HELM_VERSION"
  if [[ -x $out/helm ]]; then link_tool "$out/helm"; return; fi
  mkdir -p "$out.tmp"
  run_with_progress "helm $HELM_VERSION" \
    env GOBIN="$out.tmp" go install -v -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
  link_tool "$out/helm"
}

if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then
  for t in etcd kube-apiserver kubectl; do
    [[ -x $KUBEBUILDER_ASSETS/$t ]] || { log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $t"; exit 1; }
    link_tool "$KUBEBUILDER_ASSETS/$t"
  done
  log "using etcd, kube-apiserver, kubectl from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
else
  build_etcd
  build_kubernetes
fi
build_kubernetes_node
build_helm
echo "$tools_bin"
