#!/bin/bash
# The seed tutorial's /opt/chk_nginx.sh (seed-tutorial.md, 18.11) with the lab's commands: nginx on PATH
# for /usr/local/nginx/sbin/nginx, systemctl for /etc/init.d/keepalived.
counter=$(ps -C nginx --no-heading|wc -l)
if [ "${counter}" = "0" ]; then
    nginx
    sleep 2
    counter=$(ps -C nginx --no-heading|wc -l)
    if [ "${counter}" = "0" ]; then
        systemctl stop keepalived
    fi
fi
