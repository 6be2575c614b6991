"""Where things are on a pair's nodes and how their services are controlled (spec.nodeProfile)."""

from __future__ import annotations

import posixpath
from typing import Literal, Self

from pydantic import model_validator

from lbpair.model.base import ApiModel, CelRule, cel_config
from lbpair.model.common import Port
from lbpair.model.patterns import (
    KeepalivedConfigFile,
    NginxCacheDir,
    NginxConfigFile,
    NginxLogDir,
    RunFile,
    SystemdUnit,
)

MANAGED_DIR_UNDER_NGINX_ROOT = CelRule(
    rule="self.nginxManagedDir.startsWith("
    "self.nginxConfigPath.substring(0, self.nginxConfigPath.lastIndexOf('/') + 1))",
    message="nginxManagedDir must lie below the directory of nginxConfigPath (nginx is reloaded when a file "
    "there changes)",
    field_path=".nginxManagedDir",
)
CHECK_SCRIPT_UNDER_KEEPALIVED_ROOT = CelRule(
    rule="self.checkScriptPath.startsWith("
    "self.keepalivedConfigPath.substring(0, self.keepalivedConfigPath.lastIndexOf('/') + 1))",
    message="checkScriptPath must lie below the directory of keepalivedConfigPath (keepalived is reloaded "
    "when a file there changes)",
    field_path=".checkScriptPath",
)


class NodeProfile(ApiModel):
    """Where things are on the nodes and how services are controlled. The defaults fit Debian/Ubuntu with
    the distribution's nginx and keepalived packages under systemd. Paths stay in the services' own places
    (nginx files under /etc/nginx, keepalived's under /etc/keepalived, the pid file under /run, logs under
    /var/log/nginx, the cache under /var/cache/nginx): root writes or runs them."""

    model_config = cel_config(MANAGED_DIR_UNDER_NGINX_ROOT, CHECK_SCRIPT_UNDER_KEEPALIVED_ROOT)

    service_manager: Literal["Systemd"] = "Systemd"
    """How services are started, reloaded and checked (systemctl)."""
    nginx_service: SystemdUnit = "nginx"
    """nginx's service name."""
    keepalived_service: SystemdUnit = "keepalived"
    """keepalived's service name."""
    nginx_config_path: NginxConfigFile = "/etc/nginx/nginx.conf"
    """nginx's main configuration file (replaced by the operator), under /etc/nginx."""
    nginx_managed_dir: NginxConfigFile = "/etc/nginx/lbpair"
    """Directory holding every other nginx file the operator writes (upstreams, virtual hosts, TLS), below
    the directory of nginxConfigPath."""
    nginx_mime_types_path: NginxConfigFile = "/etc/nginx/mime.types"
    """The distribution's MIME type map, included by nginx.conf, under /etc/nginx."""
    nginx_pid_path: RunFile = "/run/nginx.pid"
    """nginx pid file (must match the service unit's), under /run."""
    nginx_log_dir: NginxLogDir = "/var/log/nginx"
    """Directory for nginx's error log and the per-VirtualHost logs: /var/log/nginx or below."""
    nginx_cache_dir: NginxCacheDir = "/var/cache/nginx/lbpair"
    """Directory for proxy cache zones and proxy temp files: /var/cache/nginx or below."""
    nginx_status_port: Port = 18099
    """Loopback port of the operator's status server (serves the live config hash on 127.0.0.1 only)."""
    keepalived_config_path: KeepalivedConfigFile = "/etc/keepalived/keepalived.conf"
    """keepalived's configuration file (replaced by the operator), under /etc/keepalived."""
    check_script_path: KeepalivedConfigFile = "/etc/keepalived/lbpair-check-nginx.sh"
    """Where the health-check script is written (keepalived runs it as root), below the directory of
    keepalivedConfigPath."""

    @property
    def firewall_ruleset_path(self) -> str:
        """Where the nftables ruleset (spec.firewall) is written: beside keepalived.conf, so validation sees
        it staged at its real path; a change to it reloads neither service (lbpair.nodes.layout)."""
        return posixpath.join(posixpath.dirname(self.keepalived_config_path), "lbpair-firewall.nft")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        MANAGED_DIR_UNDER_NGINX_ROOT.enforce(
            _below_directory_of(self.nginx_managed_dir, self.nginx_config_path)
        )
        CHECK_SCRIPT_UNDER_KEEPALIVED_ROOT.enforce(
            _below_directory_of(self.check_script_path, self.keepalived_config_path)
        )
        return self


def _below_directory_of(path: str, file: str) -> bool:
    return path.startswith(posixpath.dirname(file) + "/")
