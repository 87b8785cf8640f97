"""PriorityGate: one model thread, interactive work first, campaigns by priority."""

import asyncio
import threading

import pytest

from farm.serve.gate import PriorityGate, work_key


def test_waiting_work_runs_interactive_first_then_by_priority_fifo_within():
    async def main() -> list[str]:
        gate = PriorityGate()
        release = threading.Event()
        order: list[str] = []

        def work(name: str) -> None:
            order.append(name)

        running = asyncio.create_task(gate.run(work_key(False), release.wait))
        await asyncio.sleep(0.05)  # the thread is now busy
        waiting = [
            ("bulk-low-1", work_key(False, 0)),
            ("bulk-high", work_key(False, 5)),
            ("bulk-low-2", work_key(False, 0)),
            ("interactive", work_key(True)),
        ]
        tasks = [asyncio.create_task(gate.run(key, work, name)) for name, key in waiting]
        await asyncio.sleep(0.05)
        assert gate.waiting == 4 and order == []
        release.set()
        await asyncio.gather(running, *tasks)
        return order

    assert asyncio.run(main()) == ["interactive", "bulk-high", "bulk-low-1", "bulk-low-2"]


def test_a_cancelled_waiter_does_not_hold_the_thread():
    async def main() -> str:
        gate = PriorityGate()
        release = threading.Event()
        running = asyncio.create_task(gate.run(work_key(False), release.wait))
        await asyncio.sleep(0.05)
        doomed = asyncio.create_task(gate.run(work_key(True), lambda: "never"))
        later = asyncio.create_task(gate.run(work_key(False), lambda: "ran"))
        await asyncio.sleep(0.05)
        doomed.cancel()
        release.set()
        await running
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return await asyncio.wait_for(later, 5)

    assert asyncio.run(main()) == "ran"


def test_errors_reach_the_caller_and_free_the_thread():
    async def main() -> int:
        gate = PriorityGate()

        def boom() -> None:
            raise ValueError("model failed")

        with pytest.raises(ValueError, match="model failed"):
            await gate.run(work_key(True), boom)
        return await gate.run(work_key(True), lambda: 7)

    assert asyncio.run(main()) == 7


def test_a_kept_slot_lets_interactive_work_run_beside_a_long_campaign_call():
    async def main() -> tuple[list[str], int]:
        gate = PriorityGate(slots=2, bulk_slots=1)
        release = threading.Event()
        order: list[str] = []
        long_call = asyncio.create_task(gate.run(work_key(False), release.wait))
        await asyncio.sleep(0.05)
        second_bulk = asyncio.create_task(gate.run(work_key(False), order.append, "bulk"))
        user = asyncio.create_task(gate.run(work_key(True), order.append, "user"))
        await asyncio.wait_for(user, 5)  # ran at once, beside the long campaign call
        await asyncio.sleep(0.05)
        waiting = gate.waiting  # the second campaign call waits for the campaign slot
        release.set()
        await asyncio.gather(long_call, second_bulk)
        return order, waiting

    assert asyncio.run(main()) == (["user", "bulk"], 1)


def test_bad_slot_counts_are_refused():
    with pytest.raises(ValueError, match="slots"):
        PriorityGate(slots=0)
