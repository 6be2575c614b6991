#!/usr/bin/env bash
# ansible-core (PyPI) for the scale bench's side-by-side playbook, idempotently, in a virtualenv of its own
# outside the repo: $cache_root/ansible-core-<version> (the operator's venv and locks are not touched).
# Prints progress on stderr and the venv's bin directory as the last line of stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache_root=${LBPAIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbpair-operator}
venv="$cache_root/ansible-core-$ANSIBLE_CORE_VERSION"
log() { printf '[install-ansible] %s\n' "$*" >&2; }

if [[ ! -x $venv/bin/ansible-playbook || ! -e $venv/.complete ]]; then
  log "creating virtualenv $venv with ansible-core==$ANSIBLE_CORE_VERSION"
  rm -rf "$venv"
  mkdir -p "$cache_root"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$ANSIBLE_CORE_VERSION"
  touch "$venv/.complete"
else
  log "ansible-core $ANSIBLE_CORE_VERSION present in $venv"
fi
echo "$venv/bin"
