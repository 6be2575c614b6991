"""The operator's DNS resolver for backend host names (Upstream servers, URL locations).

Builds run on every pass (every 2 s by default) and are otherwise pure, so lookups are cached for a
while, and each is bounded in time: a slow or dead DNS server delays a pass by at most the timeout per
name and TTL, instead of hanging it. A name that does not resolve is cached too, so it is retried once per
TTL, not on every pass.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimeout

TTL_SECONDS = 30.0
TIMEOUT_SECONDS = 2.0


def lookup_ipv4(name: str) -> tuple[str, ...]:
    """Every IPv4 address getaddrinfo gives for `name` (sorted, without duplicates); () if none."""
    try:
        answers = socket.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return ()
    return tuple(sorted({str(answer[4][0]) for answer in answers}, key=socket.inet_aton))


class CachingResolver:
    """A `NameResolver` (lbpair.build.resources) over getaddrinfo, with a TTL cache and a bounded wait.
    Safe to call from several pairs' pass threads at once."""

    def __init__(
        self,
        lookup: Callable[[str], tuple[str, ...]] = lookup_ipv4,
        ttl_seconds: float = TTL_SECONDS,
        timeout_seconds: float = TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup, self._ttl, self._timeout, self._clock = lookup, ttl_seconds, timeout_seconds, clock
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        # getaddrinfo takes no timeout: it runs on these threads and a caller waits at most the timeout.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")

    def __call__(self, name: str) -> tuple[str, ...]:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            addresses = self._pool.submit(self._lookup, name).result(timeout=self._timeout)
        except LookupTimeout:
            addresses = ()
        with self._lock:
            for expired in [key for key, (expiry, _) in self._cache.items() if expiry <= now]:
                del self._cache[expired]
            self._cache[name] = (now + self._ttl, addresses)
        return addresses

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
