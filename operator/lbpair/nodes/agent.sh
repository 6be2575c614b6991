# lbpair node agent (with owner.sh and journal.sh ahead of it). The operator runs it over SSH as `sh -s -- COMMAND [ARGS]` with this script on
# stdin, so nothing has to be installed on a node beyond sshd, nginx, keepalived and the base system
# (sh, bash for /dev/tcp, coreutils, util-linux). Every path it is given comes from the operator's
# validated model. Output is plain text the operator parses. The operator's SSH layer runs each command
# in its own session and process group under `timeout`, so a command that runs over is killed with
# everything it started; this script is written so that such a kill, at any instruction, loses nothing.
#
# State on the node ($LBPAIR_STATE; the operator always passes it, and LBPAIR_LOCK_WAIT, seconds):
#   lock             every command but served-hash holds it (flock), so commands never overlap
#   manifest         "MODE SHA256 PATH" for every file the operator manages (the applied config)
#   live             the config hash the services were last verified to run (mark-live, roll-out, activate)
#   owner            "UID NAMESPACE/NAME" of the pair that has the node (owner.sh): other pairs are refused
#   stage/           the bundle being rolled out: manifest (the complete new set) and files/, mirroring
#                    absolute paths, with only the files that differ from what the node has (every other
#                    path of the manifest must be live already with the content the manifest names)
#   backup/          the last-known-good state of what the latest swap changed, to restore on failure:
#                    files/ (copies of the files it replaced or removed), absent (paths it created),
#                    manifest (the complete manifest it replaced)
#   original/        the node's own files the operator replaced (kept from the first swap that took each
#                    path over), put back by `uninstall`; same layout as backup/
#   txn.new/, txn/   the journal of a change to live files (below)
#   vrrp/            root-only (0700) copy of keepalived's JSON dump, read by probe
#
# The journal. swap, restore and uninstall each replace a set of live files in two phases:
#   prepare  write txn.new/ (install: paths to replace, remove: paths to delete, manifest: the manifest
#            afterwards, and for swap backup/: the new last-known-good copy of what it changes),
#            copy each new file next to its target as PATH.lbpair-new, sync all of it to disk;
#   commit   rename txn.new to txn (one atomic rename);
#   finish   rename each PATH.lbpair-new over PATH, delete the remove paths, rename the manifest and the
#            backup into place (the old backup goes only now), then drop txn. Every step is a rename or
#            a removal that is skipped once done, so finishing again after a crash converges.
# Every command first recovers: a committed txn/ is finished, an uncommitted txn.new/ is undone (its
# .lbpair-new files removed), so the live files are always the old set or the new set, never a mix.
# Only prepare writes data; a full disk fails it before the commit, leaving the live files untouched.
# A swap touches only the staged paths and the ones the new manifest drops, so its cost follows the size
# of the change, not of the config; so does validate (an overlay, below).
set -eu
umask 022
state=$LBPAIR_STATE
stage=$state/stage
backup=$state/backup
original=$state/original
txn=$state/txn
txn_new=$state/txn.new
command=$1
shift

# -- commands (the helpers, the lock and the journal are in journal.sh, sent ahead of this file) --

# probe NGINX_UNIT KEEPALIVED_UNIT: everything the operator reports about a node, in one round trip.
probe() {
    section hostname
    hostname
    section services
    printf 'nginx %s\n' "$(systemctl is-active "$1" 2>/dev/null 9>&- </dev/null || true)"
    printf 'keepalived %s\n' "$(systemctl is-active "$2" 2>/dev/null 9>&- </dev/null || true)"
    section addresses
    ip -o -4 addr show
    section files
    # RECORDED ACTUAL PATH: what the operator last applied, and what the file holds now (drift if unequal).
    # One sha256sum over every managed file (a file it cannot read is missing).
    if [ -s "$state/manifest" ]; then
        awk '{print $3}' "$state/manifest" | xargs -r sha256sum 2>/dev/null |
            awk 'FILENAME == "-" { actual[$2] = $1; next }
                 { print $2, ($3 in actual ? actual[$3] : "missing"), $3 }' - "$state/manifest"
    fi
    section live
    cat "$state/live" 2>/dev/null || true
    section owner
    cat "$state/owner" 2>/dev/null || true
    section vrrp
    vrrp_dump
    section nginx-watch
    nginx_watch_report
}

# The nginx watcher's runtime state (lbpair.build.keepalived.WATCH_STATE_DIRECTORY): its status file holds
# "PID HASH up|down SINCE", written by the watcher whenever what it tells keepalived changes.
NGINX_WATCH_STATE=/run/lbpair/nginx-watch

# nginx_watch_report: "running|stopped HASH up|down" for the watcher that last wrote its status (running
# while that pid is still the watcher); nothing on a node that never ran one.
nginx_watch_report() {
    [ -f "$NGINX_WATCH_STATE/status" ] || return 0
    read -r watcher_pid watcher_hash watcher_verdict _ <"$NGINX_WATCH_STATE/status" || return 0
    case $watcher_pid in "" | *[!0-9]*) return 0 ;; esac
    watcher_state=stopped
    if grep -qsF lbpair-nginx-watch "/proc/$watcher_pid/cmdline"; then watcher_state=running; fi
    printf '%s %s %s\n' "$watcher_state" "$watcher_hash" "$watcher_verdict"
}

# trusted FILE: a regular file (not a symbolic link) with one name, owned by root. In a sticky /tmp
# nobody else can replace or change such a file once it is there.
trusted() { [ ! -L "$1" ] && [ -f "$1" ] && [ "$(stat -c '%u %h' "$1" 2>/dev/null)" = "0 1" ]; }

# vrrp_dump: keepalived writes its state as JSON on a signal (~10-15 ms), the only live view of VRRP
# state, to /tmp/keepalived.json (hard-coded in keepalived 2.2). Any local user can create files in
# /tmp, so the file is removed before the signal and read only if keepalived (root) wrote it anew.
vrrp_dump() {
    dump=/tmp/keepalived.json
    pid=$(cat /run/keepalived.pid 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then return 0; fi
    directory "$state/vrrp"
    chmod 0700 "$state/vrrp"
    rm -f "$dump" "$state/vrrp/keepalived.json"
    # keepalived may exit between the check and the signal: that is a probe result, not a probe failure.
    kill -s "$(keepalived --signum=JSON 2>/dev/null </dev/null)" "$pid" 2>/dev/null || true
    tries=0
    until trusted "$dump" && [ "$(tail -c 2 "$dump" | tr -d '\n')" = "]" ]; do
        tries=$((tries + 1))
        [ "$tries" -gt 100 ] && break
        sleep 0.01
    done
    if [ -e "$dump" ] || [ -L "$dump" ]; then
        if trusted "$dump"; then
            head -c 1048576 "$dump" >"$state/vrrp/keepalived.json"
            cat "$state/vrrp/keepalived.json"
            echo
        else
            printf 'lbpair agent: ignoring %s: not a root-owned regular file with one link\n' "$dump" >&2
        fi
    fi
}

# validate NGINX_CONF KEEPALIVED_CONF ROOT...: check the staged config exactly as it will be live, without
# touching the live tree. In a private mount namespace each ROOT is an overlay: the live ROOT below, the
# staged files of that ROOT above (in a tmpfs, copied: O(change)) and a whiteout (a 0/0 character device)
# for each path the new manifest drops, so the validators read the new set at its real paths. Where
# overlayfs is missing, a copy of ROOT with the same changes is bound over it instead (O(config)). The
# validators: nginx -t, keepalived -t, and nft -c for each managed *.nft file (a firewall ruleset, under a
# ROOT). Exit 65 means a validator refused the config (its output on stdout); any other failure is the
# agent's.
validate() {
    nginx_conf=$1
    keepalived_conf=$2
    shift 2
    check_stage
    for root in "$@"; do directory "$root"; done # a mount point; swap would create it anyway
    view=$stage/view
    directory "$view"
    status=0
    unshare --mount sh -c "$VIEW_SCRIPT" lbpair-validate "$state" "$view" "$nginx_conf" "$keepalived_conf" \
        "$@" 2>&1 </dev/null || status=$?
    rmdir "$view"
    return "$status"
}

# The view validate runs the validators in (positional: STATE VIEW NGINX_CONF KEEPALIVED_CONF ROOT...).
# shellcheck disable=SC2016 # expanded by the inner sh
VIEW_SCRIPT='
set -eu
state=$1 view=$2 nginx_conf=$3 keepalived_conf=$4
shift 4
mount -t tmpfs -o mode=0700 lbpair-validate "$view"
if [ -f "$state/manifest" ]; then awk "{print \$3}" "$state/manifest" | sort -u >"$view/old"; else : >"$view/old"; fi
awk "{print \$3}" "$state/stage/manifest" | sort -u | comm -23 "$view/old" - >"$view/removed"
n=0
previous=
for root in "$@"; do
    [ "$root" != "$previous" ] || continue
    previous=$root n=$((n + 1))
    upper=$view/$n/upper work=$view/$n/work
    mkdir -p "$upper" "$work"
    if [ -d "$state/stage/files$root" ]; then cp -a "$state/stage/files$root/." "$upper/"; fi
    awk -v prefix="$root/" "index(\$0, prefix) == 1" "$view/removed" >"$view/$n/removed"
    while read -r path; do
        relative=${path#"$root"}
        mkdir -p "$upper${relative%/*}"
        mknod "$upper$relative" c 0 0
    done <"$view/$n/removed"
    if ! mount -t overlay lbpair-validate -o "lowerdir=$root,upperdir=$upper,workdir=$work" "$root" 2>/dev/null; then
        copy=$view/$n/copy
        mkdir -p "$copy"
        cp -a "$root/." "$copy/"
        if [ -d "$state/stage/files$root" ]; then cp -a "$state/stage/files$root/." "$copy/"; fi
        while read -r path; do rm -f "$copy${path#"$root"}"; done <"$view/$n/removed"
        mount --bind "$copy" "$root"
    fi
done
nginx -T -q -c "$nginx_conf" >"$view/nginx-dump" && keepalived -t -f "$keepalived_conf" || exit 65
# The log files the config opens (every path of an access_log or error_log; commented-out ones too, which
# only errs on the safe side), for check_open_files.
grep -oE "(access|error)_log[[:space:]]+/[^[:space:];]+" "$view/nginx-dump" | awk "{print \$2}" | sort -u |
    wc -l >"$state/stage/nginx-log-files"
# Every managed *.nft file is an nftables ruleset (spec.firewall): checked, not loaded.
for ruleset in $(awk "\$3 ~ /[.]nft\$/ {print \$3}" "$state/stage/manifest"); do
    nft -c -f "$ruleset" || exit 65
done
'

# swap: put the staged files live and remove the paths the staged manifest drops, keeping what they
# replace or remove (and the complete old manifest) as the last-known-good backup. Paths staged again
# unchanged are still installed (the same bytes): the operator stages only what differs.
swap() {
    check_stage
    swap_checked
}

# swap_checked: swap a stage check_stage passed (roll-out validates it, and checks it so, just before).
swap_checked() {
    begin
    cp "$stage/manifest" "$txn_new/manifest"
    manifest_paths "$state/manifest" | sort -u >"$txn_new/old"
    manifest_paths "$stage/manifest" | sort -u >"$txn_new/new"
    staged_paths >"$txn_new/install"
    comm -23 "$txn_new/old" "$txn_new/new" >"$txn_new/remove"
    # shellcheck disable=SC2046 # paths are validated identifiers without spaces
    save_files "$txn_new/backup" $(sort -u "$txn_new/install" "$txn_new/remove")
    if [ -f "$state/manifest" ]; then cp -p "$state/manifest" "$txn_new/backup/manifest"; else
        : >"$txn_new/backup/manifest"
    fi
    # Paths the staged manifest manages for the first time: what is there now is the node's own.
    comm -13 "$txn_new/old" "$txn_new/new" >"$txn_new/added"
    keep_originals <"$txn_new/added"
    prepare_files "$stage"
    commit
}

# restore: put the last-known-good files back (the backup stays, so restoring again changes nothing).
restore() {
    [ -d "$backup/files" ] || fail "no backup to restore"
    begin
    (cd "$backup/files" && find . -type f) | sed 's/^\.//' | sort >"$txn_new/install"
    if [ -f "$backup/absent" ]; then cp "$backup/absent" "$txn_new/remove"; else : >"$txn_new/remove"; fi
    cp "$backup/manifest" "$txn_new/manifest"
    prepare_files "$backup"
    commit
}

# uninstall [KEEPALIVED NGINX]: put the node's own files back where the operator replaced them, remove
# the rest and delete the firewall's table; with the units, stop keepalived (its VIPs go to nobody) and
# reload nginx on what is left; then remove the state. The change empties the manifest first, so an
# uninstall interrupted while removing the state never removes a file it has put back; the state goes
# last, in the same locked command, so nothing runs after it to leave a lock file behind, and a failed
# reload is retried by running uninstall again.
uninstall() {
    begin
    if [ -d "$original/files" ]; then
        (cd "$original/files" && find . -type f) | sed 's/^\.//' | sort >"$txn_new/install"
    else
        : >"$txn_new/install"
    fi
    {
        if [ -f "$original/absent" ]; then cat "$original/absent"; fi
        manifest_paths "$state/manifest" | while read -r path; do
            [ -e "$original/files$path" ] || printf '%s\n' "$path"
        done
    } | sort -u >"$txn_new/remove"
    : >"$txn_new/manifest"
    prepare_files "$original"
    commit
    remove_firewall
    if [ $# -eq 2 ]; then
        stop "$1"
        reload_unit "$2"
    fi
    rm -rf "$state"
}

# mark-live HASH: the services run this config (verified by the operator after the reload).
mark_live() {
    printf '%s\n' "$1" >"$state/live.new"
    flush "$state/live.new"
    mv -f "$state/live.new" "$state/live"
}

# reload SERVICE...: reload what runs (never restart: a keepalived restart flaps the VIP), start what does
# not. A SERVICE given as UNIT=PIDFILE is nginx: a running master (the nginx process in PIDFILE) gets HUP
# directly, which is all a reload is; `nginx -s reload` (what the unit's ExecReload runs) would parse the
# whole config once more just to find that pid file. Without a live master there, the unit decides.
# Daemons never inherit the lock (fd 9): a daemon holding it would block every later command.
reload() {
    for service in "$@"; do
        case $service in
        firewall:*) apply_firewall "${service#firewall:}" ;;
        *=*) reload_nginx "${service%%=*}" "${service#*=}" ;;
        *) reload_unit "$service" ;;
        esac
    done
}

reload_nginx() {
    pid=$(head -c 32 "$2" 2>/dev/null | tr -d '[:space:]') || pid=""
    case $pid in
    "" | *[!0-9]*) ;;
    *)
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ] && kill -s HUP "$pid" 2>/dev/null; then
            return 0
        fi
        ;;
    esac
    reload_unit "$1"
}

reload_unit() {
    if systemctl is-active "$1" >/dev/null 2>&1 9>&- </dev/null; then
        systemctl reload "$1" 9>&- </dev/null
    else
        systemctl start "$1" 9>&- </dev/null
    fi
}

# The firewall's own table (lbpair.render.firewall.FIREWALL_TABLE); no other table is ever touched.
FIREWALL_TABLE="inet lbpair"

# apply_firewall PATH: load the nftables ruleset at PATH (one transaction that replaces the firewall's
# table), then make sure it admits new SSH connections from the address this command came from (the
# operator's: the session itself survives as an established connection, the next one would not); if it
# does not, fail, and activate puts the last-known-good ruleset back. Without SSH_CONNECTION (sudo resets
# the environment) there is nothing to check. PATH gone (the firewall turned off): delete the table.
apply_firewall() {
    if [ ! -f "$1" ]; then
        remove_firewall
        return 0
    fi
    nft -f "$1"
    ssh_client=${SSH_CONNECTION:-}
    ssh_client=${ssh_client%% *}
    # shellcheck disable=SC2086 # FIREWALL_TABLE is two words: family and name
    if [ -n "$ssh_client" ] && ! nft get element $FIREWALL_TABLE ssh_sources "{ $ssh_client }" >/dev/null 2>&1; then
        fail "the firewall ($1) would refuse new SSH connections from the operator's address $ssh_client:" \
            "spec.firewall.sshSourceCIDRs must include it"
    fi
}

# remove_firewall: delete the firewall's table if there is one (a node that never had it is only read);
# nothing to do on a node without nft.
remove_firewall() {
    command -v nft >/dev/null 2>&1 || return 0
    # shellcheck disable=SC2086 # FIREWALL_TABLE is two words: family and name
    if nft list table $FIREWALL_TABLE >/dev/null 2>&1; then nft delete table $FIREWALL_TABLE; fi
}

# stop SERVICE...: stop what runs (a stopped keepalived releases its VIPs to the peer at once).
stop() {
    for service in "$@"; do
        if systemctl is-active "$service" >/dev/null 2>&1 9>&- </dev/null; then
            systemctl stop "$service" 9>&- </dev/null
        fi
    done
}

# served-hash PORT: what the node's nginx says its live config hash is (bash for /dev/tcp; no curl needed).
# Connection errors are not printed: verify polls it every 20 ms, and its failure says what was served.
served_hash() {
    bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET /lbpair/config-hash HTTP/1.0\r\n\r\n" >&3 && cat <&3' \
        _ "$1" </dev/null 2>/dev/null | head -c 65536 | tail -n 1
}

# read-files PATH...: "PATH BASE64" with the content (its first MiB) of each PATH the manifest names with a
# world-readable mode; "PATH -" for any other: not managed, missing, or a secret (a TLS key, 0600), whose
# content never leaves the node. What the preview of a paused pair diffs against (lbpair.preview).
read_files() {
    for path in "$@"; do
        mode=$(awk -v p="$path" '$3 == p { print $1; exit }' "$state/manifest" 2>/dev/null) || mode=""
        case $mode in
        *[4567])
            if [ -f "$path" ]; then
                printf '%s %s\n' "$path" "$(head -c 1048576 "$path" | base64 -w 0)"
                continue
            fi
            ;;
        esac
        printf '%s -\n' "$path"
    done
}

# -- a node's whole rollout in one round trip (lbpair.nodes.operations.roll_out) --

# roll-out NGINX_CONF KEEPALIVED_CONF ROOTS ACTIVATE_ARGS...: validate the stage once (ROOTS: the config
# roots, space-separated), swap it in, then activate (below). A refusal exits 65 with the validators'
# output, a failure before the swap changed nothing; from the swap on, activate answers for the node.
roll_out() {
    nginx_conf=$1 keepalived_conf=$2 roots=$3
    shift 3
    # shellcheck disable=SC2086 # roots are validated paths without spaces
    validate "$nginx_conf" "$keepalived_conf" $roots
    check_open_files "$@"
    lap validate
    swap_checked
    lap swap
    activate "$@"
}

# check_open_files ACTIVATE_ARGS...: when nginx is to be reloaded, refuse the stage (exit 65, as a validator
# would, so nothing is swapped) if its running master cannot open the config's log files: a reload opens
# every one of them again before it closes the old ones, so the master's limit (its soft RLIMIT_NOFILE: the
# unit's LimitNOFILE) must cover what it holds now plus those; `nginx -t`, run with the agent's own limit,
# cannot tell. The errno form of the message is nginx's own for the failure it prevents, which tells the
# operator that the node's limit is at fault, not a tenant's object (lbpair.isolation.node_at_fault).
RELOAD_SPARE_FILES=16 # what a reload holds besides: the config files it is reading (includes nest), the pid file
check_open_files() {
    shift 6
    for service in "$@"; do
        case $service in *=*) ;; *) continue ;; esac
        pid=$(cat "${service#*=}" 2>/dev/null) && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ] || return 0
        limit=$(awk '/^Max open files/ {print $4}' "/proc/$pid/limits")
        case $limit in '' | *[!0-9]*) return 0 ;; esac # unlimited
        held=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
        opens=$(cat "$stage/nginx-log-files")
        needed=$((held + opens + RELOAD_SPARE_FILES))
        [ "$needed" -gt "$limit" ] || return 0
        echo "nginx's master (pid $pid) may hold $limit open files (Max open files) and holds $held;" \
            "reloading it with this config, which opens $opens log files, needs about $needed, so the" \
            "reload would have failed (24: Too many open files) and was not tried: raise the nginx unit's" \
            "LimitNOFILE (systemctl edit nginx, then restart it), or turn off per-VirtualHost access logs" \
            "(accessLog.enabled: false)"
        exit 65
    done
}

# activate CONFIG_HASH NGINX_HASH STATUS_PORT VERIFY_MS NGINX_UNIT KEEPALIVED_UNIT SERVICE...: reload the
# SERVICEs (as `reload` does: only those whose files changed), wait on the node itself until nginx serves
# NGINX_HASH (polled every 20 ms, for VERIFY_MS at least) and keepalived runs, record CONFIG_HASH as live
# and print the probe of the node as it is now. Any failure on the way restores the last-known-good files
# and reloads the same services: exit 67 when that worked, 68 when the restore failed too (stderr: why).
activate() {
    config_hash=$1 nginx_hash=$2 port=$3 verify_ms=$4 nginx_unit=$5 keepalived_unit=$6
    shift 6
    services=$*
    trap fall_back EXIT
    reload "$@" >&2
    lap reload
    polls=$((verify_ms / 20))
    until served=$(served_hash "$port") && [ "$served" = "$nginx_hash" ]; do
        [ "$polls" -gt 0 ] || fail "nginx does not serve the new config after reload (serves" \
            "'${served:-nothing}', expected $(printf %.12s "$nginx_hash"))"
        polls=$((polls - 1))
        sleep 0.02
    done
    systemctl is-active "$keepalived_unit" >/dev/null 2>&1 9>&- </dev/null ||
        fail "keepalived ($keepalived_unit) is not running after reload"
    mark_live "$config_hash"
    trap - EXIT
    lap verify
    probe "$nginx_unit" "$keepalived_unit"
    lap probe
    section timings
    printf '%s' "$timings"
}

# fall_back: activate's EXIT trap on failure (the reason is on stderr already).
fall_back() {
    trap - EXIT
    set +e
    # shellcheck disable=SC2086 # unit names and pid file paths are validated, without spaces
    (
        set -e
        restore
        reload $services
    ) >&2
    # Not `if (...)` nor `(...) ||`: either would turn off set -e inside the subshell.
    # shellcheck disable=SC2181
    if [ $? -eq 0 ]; then
        printf 'lbpair agent: restored the last-known-good config\n' >&2
        exit 67
    fi
    printf 'lbpair agent: restoring the last-known-good config failed too\n' >&2
    exit 68
}

# lap STEP: how long STEP took (ms), for the operator's debug log (`== timings`); the first lap counts
# from the agent's start (its lock and recovery included).
timings=""
lap() {
    : "${lap_started:=$agent_started}"
    lap_now=$(date +%s%N)
    timings="$timings$1 $(((lap_now - lap_started) / 1000000))
"
    lap_started=$lap_now
}

# -- failover drills (lbpair.drill): the node's own clock times the VIP's move, in microseconds --

# maintenance PATH VALUE: write the keepalived track file PATH (the rendered maintenance file: 1 drains the
# node, 0 puts it back) by rename, which keepalived notices at once (inotify); prints when, by this node's
# clock. The drill puts back the rendered value before it ends; a drill cut short leaves drift that the
# next pass reverts like any other.
maintenance() {
    printf '%s\n' "$2" >"$1.lbpair-drill"
    mv -f "$1.lbpair-drill" "$1"
    date +%s%6N
}

# watch-vip ADDRESS SECONDS: whether this node holds ADDRESS, sampled about every 10 ms, printed as
# "MICROSECONDS 1|0" at the start and at the first change, which ends it; at most SECONDS.
watch_vip() {
    end=$(($(date +%s) + $2))
    first=
    while :; do
        now=$(date +%s%6N)
        case $(ip -o -4 addr show 2>/dev/null) in
        *" inet $1/"*) held=1 ;;
        *) held=0 ;;
        esac
        if [ -z "$first" ]; then
            first=$held
            printf '%s %s\n' "$now" "$held"
        elif [ "$held" != "$first" ]; then
            printf '%s %s\n' "$now" "$held"
            return 0
        fi
        [ "${now%??????}" -lt "$end" ] || return 0
        sleep 0.01
    done
}

# probe-backends TIMEOUT BUDGET TARGET...: "TARGET up|down" for each backend, from this node (bash
# /dev/tcp), all at once, each within TIMEOUT seconds; whatever has not answered after BUDGET seconds is
# left out (the operator counts it down). TARGET is ADDRESS:PORT (up: a TCP connect) or ADDRESS:PORT/PATH
# (up: GET /PATH answers 2xx or 3xx), IPv4 addresses, ports and allow-listed paths from the operator's
# validated build.
probe_backends() {
    connect_timeout=$1 budget=$2
    shift 2
    results=$(mktemp -d) pids='' n=0
    for target in "$@"; do
        n=$((n + 1))
        (
            # shellcheck disable=SC2016 # expanded by the inner bash
            if timeout "$connect_timeout" bash -c '
                server=${1%%/*} path=
                case $1 in */*) path=/${1#*/} ;; esac
                exec 3<>"/dev/tcp/${server%:*}/${server##*:}" || exit 1
                [ -n "$path" ] || exit 0
                printf "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: lbpair-probe\r\n\r\n" "$path" "${server%:*}" >&3
                IFS=" " read -r _ code _ <&3
                case $code in [23][0-9][0-9]) exit 0 ;; esac
                exit 1' _ "$target" </dev/null >/dev/null 2>&1 9>&-; then
                echo "$target up"
            else
                echo "$target down"
            fi >"$results/$n"
        ) 9>&- &
        pids="$pids $!"
    done
    deadline=$(($(date +%s) + budget))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        pending=
        for pid in $pids; do
            if kill -0 "$pid" 2>/dev/null; then pending=1; fi
        done
        [ -n "$pending" ] || break
        sleep 0.05
    done
    cat "$results"/* 2>/dev/null || true
    rm -rf "$results"
}

case $command in
# Reads no state and is polled while a rollout verifies: it takes no lock.
served-hash)
    served_hash "$@"
    exit
    ;;
# Reads no state (it connects out to the backends): it must not wait behind a rollout.
probe-backends)
    probe_backends "$@"
    exit
    ;;
# Runs while the drill changes the nodes: it must not wait for their lock.
watch-vip)
    watch_vip "$@"
    exit
    ;;
probe | validate | swap | restore | uninstall | mark-live | reload | recover | claim | roll-out | activate | maintenance | read-files) ;;
*)
    echo "unknown command: $command" >&2
    exit 2
    ;;
esac

case $command in roll-out | activate) agent_started=$(date +%s%N) ;; esac
lock
recover
case $command in
probe | recover | read-files) ;; # read-only: a diff (python -m lbpair diff) may read any pair's node
claim) own claim ;; # a pair whose files were live before nodes had owners
*) own check ;; # every change, and validate (it reads the stage), only for the pair that has the node
esac
case $command in
probe) probe "$@" ;;
validate) validate "$@" ;;
swap) swap ;;
restore) restore ;;
uninstall) uninstall "$@" ;;
mark-live) mark_live "$1" ;;
reload) reload "$@" ;;
roll-out) roll_out "$@" ;;
activate) activate "$@" ;;
maintenance) maintenance "$@" ;;
read-files) read_files "$@" ;;
recover) ;;
esac
