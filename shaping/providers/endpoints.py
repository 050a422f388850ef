"""Several endpoints serving one model (`base_urls = [...]`): spread by least outstanding
requests, and an endpoint that keeps failing is taken out for a while.

After `eject_after` consecutive retryable failures (5xx, timeouts, dropped connections) an
endpoint is left out for `eject_s` seconds (doubling while it keeps failing, up to ten times);
then it is tried again, and one success puts it back for good. When every endpoint is out, the
one that has been out longest is used: requests never stall for want of an endpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Endpoint:
    base_url: str
    url: str
    outstanding: int = 0
    failures: int = 0
    out_until: float = 0.0
    ejections: int = 0


class Endpoints:
    def __init__(self, base_urls: list[str], path: str, eject_after: int = 3, eject_s: float = 30.0) -> None:
        self.all = [Endpoint(b, b + path) for b in base_urls]
        self.eject_after = eject_after
        self.eject_s = eject_s
        self._turn = 0

    def pick(self) -> Endpoint:
        """The healthy endpoint with the fewest requests in flight (turns taken among equals)."""
        if len(self.all) == 1:
            chosen = self.all[0]
        else:
            now = time.monotonic()
            healthy = [e for e in self.all if e.out_until <= now] or [min(self.all, key=lambda e: e.out_until)]
            self._turn += 1
            n = len(healthy)
            chosen = min((healthy[(self._turn + i) % n] for i in range(n)), key=lambda e: e.outstanding)
        chosen.outstanding += 1
        return chosen

    def done(self, endpoint: Endpoint, failed: bool) -> None:
        endpoint.outstanding -= 1
        if not failed:
            endpoint.failures = endpoint.ejections = 0
            endpoint.out_until = 0.0
            return
        endpoint.failures += 1
        if len(self.all) > 1 and endpoint.failures >= self.eject_after:
            endpoint.out_until = time.monotonic() + self.eject_s * 2 ** min(endpoint.ejections, 10)
            endpoint.ejections += 1
            endpoint.failures = 0
