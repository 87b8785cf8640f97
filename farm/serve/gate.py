"""`PriorityGate`: one model thread shared by priority, so a campaign never starves a user.

A Renderer replica runs model work on one thread. Work that arrives while the thread is
busy waits here and runs best key first: interactive `/v1/videos` work before any
campaign's, then campaigns by their priority, first come first served within a key. The
running call is never interrupted, so an interactive step waits at most for one bulk
batch to finish, and the Renderer keeps bulk batches short (`bulk_batch_videos`).
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
    """Runs blocking calls on one thread, one at a time, best key first among the waiting."""

    def __init__(self, thread_name: str = "model"):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=thread_name)
        self._waiting: list[tuple[tuple, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self._busy = False
        # (key, enqueued, started) monotonic seconds, in the order calls ran (last 1000)
        self.served: list[tuple[tuple, float, float]] = []

    async def run(self, key: tuple, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the model thread once every better-keyed waiter has run."""
        loop = asyncio.get_running_loop()
        enqueued = time.monotonic()
        if self._busy:
            turn = loop.create_future()
            heapq.heappush(self._waiting, (key, next(self._seq), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._hand_over()  # we were given the thread as we were cancelled
                raise
        self._busy = True
        self.served = [*self.served[-999:], (key, enqueued, time.monotonic())]
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the thread to the best waiter still waiting, or mark it free."""
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False

    @property
    def waiting(self) -> int:
        """Calls waiting for the thread."""
        return sum(not turn.done() for _, _, turn in self._waiting)
