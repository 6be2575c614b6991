# lbpair node agent. The operator runs it over SSH as `sh -s -- COMMAND [ARGS]` with this script on
# stdin, so nothing has to be installed on a node beyond sshd, nginx, keepalived and the base system
# (sh, bash for /dev/tcp, coreutils, util-linux). Every path it is given comes from the operator's
# validated model. Output is plain text the operator parses.
#
# State on the node ($LBPAIR_STATE; the operator always passes it):
#   manifest         "MODE SHA256 PATH" for every file the operator manages (the applied config)
#   live             the config hash the services were last verified to run (written by mark-live)
#   stage/           the bundle being rolled out: files/ mirrors absolute paths, manifest beside it
#   backup/          the last-known-good files replaced by the latest swap, to restore on failure
#   original/        the node's own files the operator replaced (kept from the first swap that took each
#                    path over), put back by `uninstall`
set -eu
state=$LBPAIR_STATE
stage=$state/stage
backup=$state/backup
command=$1
shift

section() { printf '== %s\n' "$1"; }

manifest_paths() { [ -f "$1" ] && awk '{print $3}' "$1" || true; }

compare_manifests() {
    manifest_paths "$state/manifest" | sort -u >"$stage/.old"
    manifest_paths "$stage/manifest" | sort -u >"$stage/.new"
}

# Paths the applied manifest manages that the staged one no longer does.
stale_paths() { compare_manifests && comm -23 "$stage/.old" "$stage/.new"; }

# Paths the staged manifest manages for the first time: what is there now is the node's own.
added_paths() { compare_manifests && comm -13 "$stage/.old" "$stage/.new"; }

install_file() { # SOURCE TARGET: a rename in the target's directory, so readers see old or new, never half
    mkdir -p "$(dirname "$2")"
    cp -p "$1" "$2.lbpair-new"
    mv -f "$2.lbpair-new" "$2"
}

# probe NGINX_UNIT KEEPALIVED_UNIT: everything the operator reports about a node, in one round trip.
probe() {
    section hostname
    hostname
    section services
    printf 'nginx %s\n' "$(systemctl is-active "$1" 2>/dev/null || true)"
    printf 'keepalived %s\n' "$(systemctl is-active "$2" 2>/dev/null || true)"
    section addresses
    ip -o -4 addr show
    section files
    # RECORDED ACTUAL PATH: what the operator last applied, and what the file holds now (drift if unequal).
    if [ -f "$state/manifest" ]; then
        while read -r _mode recorded path; do
            if [ -f "$path" ]; then actual=$(sha256sum "$path" | cut -d' ' -f1); else actual=missing; fi
            printf '%s %s %s\n' "$recorded" "$actual" "$path"
        done <"$state/manifest"
    fi
    section live
    cat "$state/live" 2>/dev/null || true
    section vrrp
    # keepalived writes its state as JSON on a signal; ~10-15 ms, and the only live view of VRRP state.
    pid=$(cat /run/keepalived.pid 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        rm -f /tmp/keepalived.json
        # keepalived may exit between the check and the signal: that is a probe result, not a probe failure.
        kill -s "$(keepalived --signum=JSON)" "$pid" 2>/dev/null || true
        tries=0
        until [ -s /tmp/keepalived.json ] && [ "$(tail -c 2 /tmp/keepalived.json | tr -d '\n')" = "]" ]; do
            tries=$((tries + 1))
            [ "$tries" -gt 100 ] && break
            sleep 0.01
        done
        cat /tmp/keepalived.json 2>/dev/null || true
        echo
    fi
}

# validate NGINX_CONF KEEPALIVED_CONF ROOT...: check the staged config exactly as it will be live, without
# touching the live tree. A private mount namespace shows a copy of each ROOT with the staged files laid
# over it at its real path.
validate() {
    nginx_conf=$1
    keepalived_conf=$2
    shift 2
    view=$stage/view
    rm -rf "$view"
    binds=""
    for root in "$@"; do
        mkdir -p "$view$root"
        [ -d "$root" ] && cp -a "$root/." "$view$root/"
        binds="$binds mount --bind '$view$root' '$root' &&"
    done
    stale_paths | while read -r path; do rm -f "$view$path"; done
    cp -a "$stage/files/." "$view/"
    unshare --mount sh -c "$binds nginx -t -q -c '$nginx_conf' && keepalived -t -f '$keepalived_conf'" 2>&1
}

# save_files DIR PATH...: copy each existing PATH under DIR, list the absent ones in DIR/absent; a PATH
# DIR already holds (or lists) is kept as it was.
save_files() {
    dir=$1
    shift
    mkdir -p "$dir/files"
    touch "$dir/absent"
    for path in "$@"; do
        if [ -e "$dir/files$path" ] || grep -qxF "$path" "$dir/absent"; then continue; fi
        if [ -e "$path" ]; then
            mkdir -p "$dir/files$(dirname "$path")"
            cp -p "$path" "$dir/files$path"
        else
            echo "$path" >>"$dir/absent"
        fi
    done
}

# put_back DIR: the inverse of save_files.
put_back() {
    (cd "$1/files" && find . -type f) | while read -r relative; do
        install_file "$1/files${relative#.}" "${relative#.}"
    done
    while read -r path; do rm -f "$path"; done <"$1/absent"
}

# swap: two phases, so a failure half-way never leaves old and new files mixed under one manifest:
# first every new file is copied next to its target, then all are renamed into place.
swap() {
    # shellcheck disable=SC2046 # paths are validated identifiers without spaces
    set -- $({ manifest_paths "$state/manifest"; manifest_paths "$stage/manifest"; } | sort -u)
    # shellcheck disable=SC2046
    save_files "$state/original" $(added_paths)
    rm -rf "$backup"
    save_files "$backup" "$@"
    if [ -f "$state/manifest" ]; then cp -p "$state/manifest" "$backup/manifest"; else : >"$backup/manifest"; fi
    rm -f "$state/live"
    manifest_paths "$stage/manifest" | while read -r path; do
        mkdir -p "$(dirname "$path")"
        cp -p "$stage/files$path" "$path.lbpair-new"
    done
    manifest_paths "$stage/manifest" | while read -r path; do mv -f "$path.lbpair-new" "$path"; done
    stale_paths | while read -r path; do rm -f "$path"; done
    cp "$stage/manifest" "$state/manifest"
}

# mark-live HASH: the services run this config (verified by the operator after the reload).
mark_live() {
    printf '%s\n' "$1" >"$state/live.new"
    mv -f "$state/live.new" "$state/live"
}

restore() {
    [ -d "$backup" ] || { echo "no backup to restore" >&2; exit 1; }
    rm -f "$state/live"
    put_back "$backup"
    cp "$backup/manifest" "$state/manifest"
}

# uninstall: put the node's own files back where the operator replaced them, remove the rest.
uninstall() {
    [ -d "$state/original" ] && put_back "$state/original"
    manifest_paths "$state/manifest" | while read -r path; do
        [ -e "$state/original/files$path" ] || rm -f "$path"
    done
    rm -rf "$state"
}

# reload SERVICE...: reload what runs (never restart: a keepalived restart flaps the VIP), start what does not.
reload() {
    for service in "$@"; do
        if systemctl is-active "$service" >/dev/null 2>&1; then
            systemctl reload "$service"
        else
            systemctl start "$service"
        fi
    done
}

# stop SERVICE...: stop what runs (a stopped keepalived releases its VIPs to the peer at once).
stop() {
    for service in "$@"; do
        if systemctl is-active "$service" >/dev/null 2>&1; then systemctl stop "$service"; fi
    done
}

# served-hash PORT: what the node's nginx says its live config hash is (bash for /dev/tcp; no curl needed).
served_hash() {
    bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET /lbpair/config-hash HTTP/1.0\r\n\r\n" >&3 && cat <&3' \
        _ "$1" | tail -n 1
}

case $command in
probe) probe "$@" ;;
validate) validate "$@" ;;
swap) swap ;;
restore) restore ;;
uninstall) uninstall ;;
mark-live) mark_live "$1" ;;
reload) reload "$@" ;;
stop) stop "$@" ;;
served-hash) served_hash "$@" ;;
*)
    echo "unknown command: $command" >&2
    exit 2
    ;;
esac
