"""Client traffic through a VIP from the lab's client namespace, bounded in count and time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from testbed.lab import HttpResponse, Lab


@dataclass
class RequestLoop:
    """One request every `interval` s in a background thread, until stopped or a bound is reached.

    `vip` defaults to the lab's primary VIP (from the lab's address plan)."""

    lab: Lab
    host: str
    path: str = "/"
    vip: str | None = None
    interval: float = 0.05
    max_requests: int = 200
    max_seconds: float = 15.0
    responses: list[HttpResponse] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._target = self.vip if self.vip is not None else str(self.lab.plan.vip_primary)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while (
            not self._stop.is_set()
            and len(self.responses) < self.max_requests
            and time.monotonic() < deadline
        ):
            # 3 s covers one SYN retransmission (1 s), as a real client would retry while the VIP moves.
            self.responses.append(self.lab.http_get_via(self._target, self.host, self.path, timeout=3.0))
            self._stop.wait(self.interval)

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.max_seconds + 5)

    @property
    def failed(self) -> list[HttpResponse]:
        return [response for response in self.responses if not response.succeeded]
