"""Where the two services' configuration lives on a node, and which service a file belongs to."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

FIREWALL_SERVICE_PREFIX = "firewall:"
"""A reload argument `firewall:PATH`: the agent loads the ruleset at PATH with `nft -f`, or deletes the
firewall's table when PATH is gone."""


@dataclass(frozen=True)
class NodeLayout:
    nginx_service: str
    keepalived_service: str
    nginx_config_path: str
    keepalived_config_path: str
    status_port: int
    nginx_pid_path: str  # reloads HUP the master named here
    directories: tuple[str, ...] = ()  # created before validation: nginx makes only the last level
    firewall_path: str | None = None
    """The nftables ruleset (under keepalived's root, which keepalived does not read): when it changes,
    the agent loads it, or deletes the firewall's table when it was removed."""

    @property
    def units(self) -> tuple[str, str]:
        return (self.nginx_service, self.keepalived_service)

    @property
    def config_paths(self) -> tuple[str, str]:
        return (self.nginx_config_path, self.keepalived_config_path)

    @property
    def nginx_root(self) -> str:
        return posixpath.dirname(self.nginx_config_path)

    @property
    def keepalived_root(self) -> str:
        return posixpath.dirname(self.keepalived_config_path)

    @property
    def roots(self) -> tuple[str, str]:
        return (self.nginx_root, self.keepalived_root)

    def services_for(self, paths: Iterable[str]) -> list[str]:
        """The services that must reload for these files: each reads only files under its own root."""
        services = []
        changed = list(paths)
        if any(_under(path, self.nginx_root) for path in changed):
            services.append(self.nginx_service)
        if any(_under(path, self.keepalived_root) and path != self.firewall_path for path in changed):
            services.append(self.keepalived_service)
        if self.firewall_path in changed:
            services.append(f"{FIREWALL_SERVICE_PREFIX}{self.firewall_path}")
        return services


def _under(path: str, root: str) -> bool:
    return posixpath.commonpath([path, root]) == root
