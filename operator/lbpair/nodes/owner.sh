# lbpair node agent, ownership: a node serves one LoadBalancerPair. Sent ahead of the agent's own script
# and ahead of the staging command (lbpair.nodes.operations), so both check it the same way, under the
# node's lock. $LBPAIR_OWNER is the calling pair, "UID NAMESPACE/NAME"; $LBPAIR_STATE/owner records the
# pair that took the node (the first to stage there) until its uninstall removes the state.
# shellcheck shell=sh

# own check|claim: return if the node is the caller's (or, with claim, free: it becomes the caller's);
# otherwise refuse the command with exit 66, naming the pair that has the node.
own() {
    : "${LBPAIR_OWNER:?the calling pair, UID NAMESPACE/NAME}"
    if [ -s "$LBPAIR_STATE/owner" ]; then
        owner=$(head -n 1 "$LBPAIR_STATE/owner")
        [ "${owner%% *}" = "${LBPAIR_OWNER%% *}" ] && return 0
        printf 'lbpair agent: this node belongs to LoadBalancerPair %s (uid %s)\n' "${owner#* }" "${owner%% *}" >&2
        exit 66
    fi
    [ "$1" = claim ] || return 0
    printf '%s\n' "$LBPAIR_OWNER" >"$LBPAIR_STATE/owner.new"
    sync -- "$LBPAIR_STATE/owner.new"
    mv -f "$LBPAIR_STATE/owner.new" "$LBPAIR_STATE/owner"
}
