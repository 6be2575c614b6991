#!/bin/sh
# Managed by lbpair-operator for LoadBalancerPair demo/seed, node lb1; local changes are overwritten.
# keepalived's vrrp_script: exit 0 while nginx runs. Otherwise (the seed's chk_nginx.sh) try to start it
# once and check again; exit 1 lets keepalived lower this node's priority or put it in FAULT.
systemctl is-active --quiet nginx && exit 0
systemctl start nginx >/dev/null 2>&1
sleep 2
systemctl is-active --quiet nginx && exit 0
exit 1
