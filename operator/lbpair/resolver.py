"""The operator's DNS resolver for backend host names (Upstream servers, URL locations).

Builds run on every pass (every 2 s by default) and are otherwise pure, so lookups are cached for a
while, and each is bounded in time: a slow or dead DNS server delays a pass by at most the timeout per
name, instead of hanging it. Only a definite "no such name" is cached as such (retried once per TTL); a
lookup that times out or fails for a while (EAI_AGAIN, a dead server) answers with the name's last good
addresses, so a DNS blip never takes a tenant's backends out of the live config. One lookup per name is
in flight at a time, so a name that never answers holds one lookup thread, not one per pass.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimeout

TTL_SECONDS = 30.0
TIMEOUT_SECONDS = 2.0
LOOKUP_THREADS = 16


class TransientLookupError(Exception):
    """The name could not be looked up just now (no definite answer): try again later."""


def lookup_ipv4(name: str) -> tuple[str, ...]:
    """Every IPv4 address getaddrinfo gives for `name` (sorted, without duplicates); () if the name does
    not exist or has no IPv4 address; TransientLookupError if there is no definite answer."""
    try:
        answers = socket.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except UnicodeError:
        return ()
    except socket.gaierror as error:
        if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return ()
        raise TransientLookupError(str(error)) from error
    return tuple(sorted({str(answer[4][0]) for answer in answers}, key=socket.inet_aton))


class CachingResolver:
    """A `NameResolver` (lbpair.build.resources) over getaddrinfo, with a TTL cache, a bounded wait and
    the last good answer kept for when DNS fails. Safe to call from several pairs' pass threads at once."""

    def __init__(
        self,
        lookup: Callable[[str], tuple[str, ...]] = lookup_ipv4,
        ttl_seconds: float = TTL_SECONDS,
        timeout_seconds: float = TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup, self._ttl, self._timeout, self._clock = lookup, ttl_seconds, timeout_seconds, clock
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}  # name -> (expiry, definite answer)
        self._in_flight: dict[str, Future[tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        # getaddrinfo takes no timeout: it runs on these threads and a caller waits at most the timeout.
        self._pool = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="resolve")

    def __call__(self, name: str) -> tuple[str, ...]:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] > now:
                return cached[1]
            lookup = self._in_flight.get(name)
            started = lookup is None
            if lookup is None:
                lookup = self._in_flight[name] = self._pool.submit(self._lookup, name)
        if started:  # outside the lock: a lookup already done runs its callback here, at once
            lookup.add_done_callback(lambda _: self._forget_lookup(name))
        try:
            addresses = lookup.result(timeout=self._timeout)
        except (LookupTimeout, TransientLookupError):
            return cached[1] if cached is not None else ()  # no definite answer: the last good one
        with self._lock:
            # Expired answers stay: they are the last good ones when DNS fails (one entry per name a
            # build ever asked for).
            self._cache[name] = (now + self._ttl, addresses)
        return addresses

    def _forget_lookup(self, name: str) -> None:
        with self._lock:
            self._in_flight.pop(name, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
