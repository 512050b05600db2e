"""Several servers of the same model behind one teacher (``endpoints``): each request goes to the live endpoint
with the most room (fewest requests in flight for its concurrency); an endpoint that fails ``DEAD_AFTER``
requests in a row while another still answers is dropped for the rest of the run, and the retries of its
requests go to the others. The cache key names the first endpoint (``base_url``), so adding servers re-asks
nothing; a completion is cached once, whichever server gave it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEAD_AFTER = 3
"""Consecutive failed requests after which an endpoint is given up (while another one answers)."""


@dataclass
class Endpoint:
    url: str
    concurrency: int
    client: Any
    gate: asyncio.Semaphore = field(init=False)
    inflight: int = 0
    failures: int = 0
    """Failed requests in a row (reset by an answer)."""
    answered: int = 0
    failed: int = 0
    dead: bool = False

    def __post_init__(self) -> None:
        self.gate = asyncio.Semaphore(self.concurrency)


class Pool:
    def __init__(self, endpoints: list[tuple[str, int]], make_client: Callable[[str], Any]):
        self.endpoints = [Endpoint(url, concurrency, make_client(url)) for url, concurrency in endpoints]

    def pick(self) -> Endpoint:
        """The live endpoint with the most room; when every one is down, the one that failed least lately."""
        live = [e for e in self.endpoints if not e.dead] or sorted(self.endpoints, key=lambda e: e.failures)[:1]
        return min(live, key=lambda e: (e.inflight / e.concurrency, e.failures))

    def answered(self, endpoint: Endpoint) -> None:
        endpoint.failures = 0
        endpoint.answered += 1

    def failed(self, endpoint: Endpoint) -> bool:
        """Count a failed request; return True when it made the endpoint be given up."""
        endpoint.failures += 1
        endpoint.failed += 1
        others = any(not e.dead and e is not endpoint for e in self.endpoints)
        if not endpoint.dead and others and endpoint.failures >= DEAD_AFTER:
            endpoint.dead = True
            return True
        return False

    def summary(self) -> list[dict[str, Any]]:
        return [{"base_url": e.url, "answered": e.answered, "failed": e.failed, "dead": e.dead}
                for e in self.endpoints]

    async def close(self) -> None:
        for e in self.endpoints:
            await e.client.close()
