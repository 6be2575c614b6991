#!/bin/sh
# Managed by lbpair-operator for LoadBalancerPair demo/edge, node lb2; local changes are overwritten.
# keepalived's vrrp_script: exit 0 while nginx runs. Otherwise (the seed's chk_nginx.sh) try to start it
# once and check again; exit 1 lets keepalived lower this node's priority or put it in FAULT.
# The nginx watcher is the fast path (it tells keepalived through a track_file); this script, run every
# second, starts it whenever it does not run: after a boot, a crash, or its installation. It re-executes
# itself when the operator updates it and exits when its file is removed, so starting it is all to do.
watcher_pid=$(cat /run/lbpair/nginx-watch/pid 2>/dev/null) || watcher_pid=
if [ -f /etc/keepalived/lbpair-nginx-watch ] && ! grep -qsF /etc/keepalived/lbpair-nginx-watch "/proc/${watcher_pid:-0}/cmdline"; then
    mkdir -p /run/lbpair/nginx-watch
    setsid python3 /etc/keepalived/lbpair-nginx-watch /etc/keepalived/lbpair-nginx-watch.json </dev/null >/dev/null 2>/run/lbpair/nginx-watch/stderr &
fi
nginx_up() {
    systemctl is-active --quiet nginx || return 1
    # Running is not serving: a hung nginx must answer its loopback status port (the backstop the watcher,
    # which only sees exits and refused connections, relies on).
    timeout 0.5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET /lbpair/config-hash HTTP/1.0\r\n\r\n" >&3 &&
        read -r status <&3 && case $status in "HTTP/1."?" 200"*) ;; *) exit 1 ;; esac' _ 18099 2>/dev/null
}
nginx_up && exit 0
systemctl start nginx >/dev/null 2>&1
sleep 2
nginx_up && exit 0
exit 1
