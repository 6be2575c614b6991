"""Typed API of lbpair: the three resources, their validation, and the status the operator writes.

Imports nothing else of lbpair; everything else imports this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lbpair.model.base import SpecError, parse_object
from lbpair.model.pair import LoadBalancerPair
from lbpair.model.upstream import Upstream
from lbpair.model.virtualhost import VirtualHost

GROUP = "lb.lbpair.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
SECRET_LABEL = f"{GROUP}/usable"
"""The opt-in label: the operator lists, watches and reads only Secrets labelled `<SECRET_LABEL>=true`."""
SECRET_SELECTOR = f"{SECRET_LABEL}=true"


def parse_pair(body: Mapping[str, Any]) -> LoadBalancerPair:
    """A LoadBalancerPair object from the API → the model; raises SpecError naming each bad field."""
    return parse_object(LoadBalancerPair, "LoadBalancerPair", body)


def parse_upstream(body: Mapping[str, Any]) -> Upstream:
    return parse_object(Upstream, "Upstream", body)


def parse_virtual_host(body: Mapping[str, Any]) -> VirtualHost:
    return parse_object(VirtualHost, "VirtualHost", body)


__all__ = [
    "API_VERSION",
    "GROUP",
    "SECRET_LABEL",
    "SECRET_SELECTOR",
    "VERSION",
    "LoadBalancerPair",
    "SpecError",
    "Upstream",
    "VirtualHost",
    "parse_pair",
    "parse_upstream",
    "parse_virtual_host",
]
