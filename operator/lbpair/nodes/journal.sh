# lbpair node agent, part one: helpers, the node lock, the journal and file sets. Function definitions
# only: the operator sends this file and agent.sh (which sets the variables these use and dispatches the
# command) as one script, this one first (lbpair.nodes.operations.AGENT_SCRIPT). agent.sh's header
# describes the state and the journal.
# shellcheck shell=sh
# shellcheck disable=SC2154 # state, stage, backup, original, txn, txn_new: set by agent.sh
section() { printf '== %s\n' "$1"; }

fail() {
    printf 'lbpair agent: %s\n' "$*" >&2
    exit 1
}

# flush PATH...: data and directory entries on disk before anything depends on them (coreutils sync
# with arguments fsyncs only those).
flush() { if [ "$#" -gt 0 ]; then sync -- "$@"; fi; }

# parents: the existing directories holding the paths listed on stdin.
parents() {
    sed -e 's|/[^/]*$||' -e 's|^$|/|' | sort -u | while read -r dir; do
        if [ -d "$dir" ]; then printf '%s\n' "$dir"; fi
    done
}

# directory DIR: make DIR and its parents (no process when it is there already).
directory() { [ -d "$1" ] || mkdir -p "$1"; }

manifest_paths() { if [ -f "$1" ]; then awk '{print $3}' "$1"; fi; }

# lock: wait (LBPAIR_LOCK_WAIT seconds) for the node's lock, held on fd 9 until the command exits.
lock() {
    wait_seconds=${LBPAIR_LOCK_WAIT:-10}
    while :; do
        directory "$state"
        chmod 0700 "$state"
        exec 9>>"$state/lock"
        if ! flock -w "$wait_seconds" 9; then
            printf 'lbpair agent: node busy: another agent command held %s for %s s\n' \
                "$state/lock" "$wait_seconds" >&2
            exit 75
        fi
        # uninstall removes the state directory with the lock file: a lock on a removed file guards nothing.
        [ "$(stat -c %d:%i "$state/lock" 2>/dev/null)" = "$(stat -L -c %d:%i /dev/fd/9)" ] && return 0
        exec 9>&-
    done
}

# -- the journal --

# begin: start preparing a change; until commit, any failure (a full disk, say) undoes it and says so.
begin() {
    trap abort EXIT
    rm -rf "$txn_new"
    mkdir "$txn_new"
}

abort() {
    status=$?
    set +e
    roll_back
    printf 'lbpair agent: %s failed before any live file changed; the config that was live is still live\n' \
        "$command" >&2
    exit "$status"
}

# prepare_files SOURCE: copy SOURCE/files/PATH next to PATH for every PATH in txn.new/install.
prepare_files() {
    while read -r path; do
        directory "${path%/*}"
        cp -p "$1/files$path" "$path.lbpair-new"
    done <"$txn_new/install"
}

commit() {
    # shellcheck disable=SC2046 # paths are validated identifiers without spaces
    flush $(find "$txn_new") $(sed 's/$/.lbpair-new/' "$txn_new/install") $(parents <"$txn_new/install")
    mv "$txn_new" "$txn"
    trap - EXIT
    flush "$state"
    finish
}

# finish: complete a committed change; each step is skipped once done, so it can run again after a crash.
finish() {
    rm -f "$state/live"
    while read -r path; do
        if [ -e "$path.lbpair-new" ]; then mv -f "$path.lbpair-new" "$path"; fi
    done <"$txn/install"
    while read -r path; do rm -f "$path"; done <"$txn/remove"
    # shellcheck disable=SC2046 # (no data written here: a full disk cannot stop a committed change)
    flush $(cat "$txn/install" "$txn/remove" | parents)
    if [ -f "$txn/manifest" ]; then mv -f "$txn/manifest" "$state/manifest"; fi
    if [ -d "$txn/backup" ]; then
        if [ -d "$backup" ]; then
            rm -rf "$backup.old"
            mv "$backup" "$backup.old"
        fi
        mv "$txn/backup" "$backup"
    fi
    flush "$state"
    rm -rf "$state/txn.done"
    mv "$txn" "$state/txn.done"
    rm -rf "$state/txn.done" "$backup.old"
}

# roll_back: undo a change that was never committed (the live files were not touched). Originals it kept
# stay: they are the node's own files either way; a copy cut short was never renamed into place.
roll_back() {
    if [ -f "$txn_new/install" ]; then
        while read -r path; do rm -f "$path.lbpair-new"; done <"$txn_new/install"
    fi
    rm -rf "$txn_new"
    if [ -d "$original" ]; then find "$original" -name '*.lbpair-new' -exec rm -f {} +; fi
}

recover() {
    if [ -d "$txn" ]; then finish; fi
    roll_back
    rm -rf "$state/txn.done" "$backup.old"
}

# -- file sets --

# save_files DIR PATH...: copy each existing PATH under DIR/files, list the absent ones in DIR/absent.
save_files() {
    dir=$1
    shift
    mkdir -p "$dir/files"
    : >"$dir/absent"
    for path in "$@"; do
        if [ -e "$path" ]; then
            directory "$dir/files${path%/*}"
            cp -p "$path" "$dir/files$path"
        else
            printf '%s\n' "$path" >>"$dir/absent"
        fi
    done
}

# keep_originals < PATHS (sorted): the node's own file at each PATH, unless original/ already holds (or
# lists) it. Each copy is written aside, synced and renamed, and the paths that did not exist are added to
# the absent list in one such rename, so an interrupted run leaves no half copy and no half list.
keep_originals() {
    directory "$original/files"
    [ -f "$original/absent" ] || : >"$original/absent"
    added=""
    awk -v absent="$original/absent" \
        'BEGIN { while ((getline line <absent) > 0) listed[line] = 1 } !($0 in listed)' >"$txn_new/takeover"
    while read -r path; do
        if [ -e "$original/files$path" ]; then continue; fi
        if [ -e "$path" ]; then
            directory "$original/files${path%/*}"
            cp -p "$path" "$original/files$path.lbpair-new"
            flush "$original/files$path.lbpair-new"
            mv "$original/files$path.lbpair-new" "$original/files$path"
            flush "$original/files${path%/*}"
        else
            added="$added$path
"
        fi
    done <"$txn_new/takeover"
    [ -n "$added" ] || return 0
    printf '%s' "$added" | sort -u - "$original/absent" >"$original/absent.lbpair-new"
    flush "$original/absent.lbpair-new"
    mv "$original/absent.lbpair-new" "$original/absent"
    flush "$original"
}

# staged_paths: the files the stage carries (absolute paths, sorted).
staged_paths() {
    if [ -d "$stage/files" ]; then (cd "$stage/files" && find . -type f) | sed 's/^\.//' | sort; fi
}

# check_stage: the staged manifest's set is complete: each path either staged with the content its line
# names, or not staged and live with that content already (the operator stages only what differs). One
# sha256sum reads every file once; nothing is written, so a full disk cannot fail it.
check_stage() {
    [ -f "$stage/manifest" ] || fail "nothing is staged"
    checks=$(staged_paths | awk -v root="$stage/files" '
        FILENAME == "-" { staged[$0] = 1; next }
        $3 in staged { delete staged[$3]; print $2 "  " root $3; next }
        { print $2 "  " $3 }
        END { for (path in staged) { print "lbpair agent: " path " is staged but not in the staged manifest" >"/dev/stderr"; status = 1 }
              exit status }' - "$stage/manifest") || fail "the staged files do not match the staged manifest; stage them again"
    [ -n "$checks" ] || return 0
    failed=$(printf '%s\n' "$checks" | sha256sum -c --quiet --strict - 2>/dev/null) && return 0
    case $failed in
    "$stage/files/"*) fail "the staged files do not match the staged manifest; stage them again" ;;
    *) fail "not staged, and not live with the content the staged manifest names: ${failed%%: *}; stage it" ;;
    esac
}
