"""The operator's tunables: every one read here, from `LBPAIR_*` environment variables, and validated.

A bad value stops the operator at start with an error naming the variable, rather than surfacing later
as odd timing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "LBPAIR_"
MAX_PORT = 65535
MAX_PASS_THREADS = 1024
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS label, as Kubernetes names one


class ConfigError(ValueError):
    """An environment variable holds a value the operator cannot use; the message names it."""


@dataclass(frozen=True)
class OperatorConfig:
    probe_interval_seconds: float = 2.0
    """A pass runs at least this often, which is how failovers, drift and recovered nodes are noticed."""
    coalesce_seconds: float = 0.3
    """A change after a quiet spell starts a pass at once; changes during a pass a change started, or this
    soon after it, wait until no other change has come for this long: the rest of a burst makes one push."""
    coalesce_max_seconds: float = 3.0
    """... but no longer than this after the first change, so a steady stream of edits still goes live."""
    retry_seconds: float = 60.0
    """A config a node refused is retried after this long, then twice as long each time, ..."""
    max_retry_seconds: float = 900.0
    """... up to this."""
    status_refresh_seconds: float = 30.0
    """lastProbeTime alone does not justify a status write more often than this (etcd churn, GitOps noise)."""
    verify_timeout_seconds: float = 10.0
    """How long a reloaded nginx may take to serve the new config before the node is rolled back."""
    secret_namespaces: tuple[str, ...] = ()
    """The namespaces whose opt-in Secrets are watched (comma-separated); empty: all namespaces. Matches
    the chart's `secretNamespaces`, which grants Secret read in just these."""
    metrics_port: int = 9090
    """The TCP port serving Prometheus metrics at /metrics (lbpair.metrics); 0: no metrics endpoint. Not
    kopf's liveness port (the chart's healthPort, 8080)."""
    pass_threads: int = 32
    """Threads for the blocking work of pairs (their passes, a deleted pair's node cleanup), shared by all
    pairs: this many pairs run at once, so set it to at least the number of pairs (each pair runs one pass
    at a time); pairs beyond it take turns. Bounded, unlike one thread per pair, and far above asyncio's
    default pool (CPUs + 4), where a few pairs with hung nodes would hold up every other pair."""
    leader_lease: str = ""
    """`namespace/name` of the coordination.k8s.io Lease that elects the one operator that acts (the chart
    sets its own); empty: no election, for a single operator process."""
    certificate_warning_days: float = 14.0
    """A TLS VirtualHost's CertificateExpiring condition turns True, with a Warning event, this many days
    before its certificate's notAfter (checked on every pass, so without any edit)."""
    leader_lease_seconds: float = 15.0
    """How long a Lease not renewed stays held: a standby takes over this long after the holder's last
    renewal; the holder renews every third of it and exits when it cannot renew within two thirds."""

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] | None = None) -> OperatorConfig:
        """Each field from `LBPAIR_<FIELD>` (e.g. LBPAIR_PROBE_INTERVAL_SECONDS) where set."""
        environment = os.environ if environment is None else environment
        values: dict[str, Any] = {}
        for config_field in dataclasses.fields(cls):
            variable = PREFIX + config_field.name.upper()
            if variable in environment:
                parse = _PARSERS.get(config_field.name, _positive_seconds)
                values[config_field.name] = parse(variable, environment[variable])
        config = cls(**values)
        for longest, shortest in _UPPER_BOUNDS:
            if getattr(config, longest) < getattr(config, shortest):
                raise ConfigError(
                    f"{PREFIX}{longest.upper()} ({getattr(config, longest):g}) must not be below "
                    f"{PREFIX}{shortest.upper()} ({getattr(config, shortest):g})"
                )
        return config


_UPPER_BOUNDS = (("max_retry_seconds", "retry_seconds"), ("coalesce_max_seconds", "coalesce_seconds"))
"""(a bound, what it bounds): a bound below its value would silently win."""


def _positive(unit: str) -> Callable[[str, str], float]:
    def parse(variable: str, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{variable}={text!r} is not a number of {unit}") from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{variable}={text!r} must be a positive number of {unit}")
        return value

    return parse


_positive_seconds = _positive("seconds")


def _port(variable: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{variable}={text!r} is not a port number") from None
    if not 0 <= value <= MAX_PORT:
        raise ConfigError(f"{variable}={text!r} must be a port from 1 to {MAX_PORT}, or 0 for none")
    return value


def _thread_count(variable: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{variable}={text!r} is not a number of threads") from None
    if not 1 <= value <= MAX_PASS_THREADS:
        raise ConfigError(f"{variable}={text!r} must be from 1 to {MAX_PASS_THREADS} threads")
    return value


def _namespace_list(variable: str, text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if not NAMESPACE_NAME.fullmatch(name):
            raise ConfigError(f"{variable}={text!r}: {name!r} is not a namespace name")
    return names


def _lease(variable: str, text: str) -> str:
    namespace, _, name = text.partition("/")
    if text and not (NAMESPACE_NAME.fullmatch(namespace) and NAMESPACE_NAME.fullmatch(name)):
        raise ConfigError(f"{variable}={text!r} must be NAMESPACE/NAME of a Lease, or empty for none")
    return text


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "secret_namespaces": _namespace_list,
    "metrics_port": _port,
    "pass_threads": _thread_count,
    "leader_lease": _lease,
    "certificate_warning_days": _positive("days"),
}
"""Each field's parser; the others are seconds (_positive_seconds)."""
