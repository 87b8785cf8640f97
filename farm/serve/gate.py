"""`PriorityGate`: model threads shared by priority, so a campaign never starves a user.

A Renderer replica runs model work on a few threads: `bulk_slots` of them may run
campaign work; the others are kept for interactive work, so a user's step never waits
behind a long campaign call (a decode, a big forward) while a slot is free for it. Work
that cannot start waits here and starts best key first: interactive `/v1/videos` work
before any campaign's, then campaigns by their priority, first come first served within a
key. Running calls are never interrupted.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

INTERACTIVE = 0  # lane of interactive work: sorts before every campaign
BULK = 1


def work_key(interactive: bool, priority: int = 0) -> tuple[int, int]:
    """Sort key of a piece of work (smaller runs first)."""
    return (INTERACTIVE if interactive else BULK, -priority)


class PriorityGate:
    """Runs blocking calls on `slots` threads; at most `bulk_slots` of them campaign work."""

    def __init__(self, slots: int = 1, bulk_slots: int | None = None, name: str = "model"):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self.bulk_slots = min(slots, bulk_slots or slots)
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix=name)
        self._waiting: list[tuple[tuple, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self._running = 0
        self._running_bulk = 0
        # (key, enqueued, started) monotonic seconds, in the order calls started (last 1000)
        self.served: list[tuple[tuple, float, float]] = []

    async def run(self, key: tuple, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on a model thread, once a slot is free and no better waiter remains."""
        enqueued = time.monotonic()
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (key, next(self._seq), turn))
        self._dispatch()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # started as we were cancelled
                self._release(key)
            raise
        self.served = [*self.served[-999:], (key, enqueued, time.monotonic())]
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._release(key)

    def _fits(self, key: tuple) -> bool:
        if self._running >= self.slots:
            return False
        return key[0] == INTERACTIVE or self._running_bulk < self.bulk_slots

    def _dispatch(self) -> None:
        """Start waiters best first while they fit (a bulk one that does not fit stops it:
        everything behind it is bulk too)."""
        while self._waiting:
            key, _, turn = self._waiting[0]
            if turn.done():  # cancelled while waiting
                heapq.heappop(self._waiting)
                continue
            if not self._fits(key):
                return
            heapq.heappop(self._waiting)
            self._running += 1
            self._running_bulk += key[0] != INTERACTIVE
            turn.set_result(None)

    def _release(self, key: tuple) -> None:
        self._running -= 1
        self._running_bulk -= key[0] != INTERACTIVE
        self._dispatch()

    @property
    def waiting(self) -> int:
        """Calls waiting for a thread."""
        return sum(not turn.done() for _, _, turn in self._waiting)
