"""Window-steps packed into calls, lost calls resent: what the Ray and Serve executors share."""

import pytest
import torch
from ray.exceptions import ActorDiedError

from farm.render.dispatch import (
    Resender,
    forward_rows,
    pack_steps,
    unpack_steps,
    unpack_velocities,
)
from farm.render.engine import WindowStep
from farm.render.protocols import AdvancesWindows, Closeable, Resends, RunsRounds
from farm.testing.velocity_fields import FunctionExecutor


def steps_of_two_videos() -> list[WindowStep]:
    a, b = torch.randn(2, 9, 2, 2), torch.randn(2, 5, 2, 2)
    windows_a = [(0, 4), (2, 6), (4, 9)]
    steps = [WindowStep(a, s, e, 0.5, f"a{i}", "", 3.0) for i, (s, e) in enumerate(windows_a)]
    steps.insert(1, WindowStep(b, 0, 5, 0.25, "b", "dark", 1.0))  # interleaved
    return steps


def test_each_latent_ships_once_and_results_come_back_in_step_order():
    steps = steps_of_two_videos()
    packs = pack_steps(steps, per_call=2)
    assert [p.latent.shape[1] for p in packs] == [9, 5]  # one pack per latent
    assert [b.indices for b in packs[0].batches] == [(0, 2), (3,)]  # cut into calls of <= 2
    # The replica rebuilds the same steps, as views of the latent it received.
    for pack in packs:
        for batch in pack.batches:
            rebuilt = unpack_steps(pack.latent.numpy(), *batch.fields)
            assert [(s.start, s.stop, s.t, s.prompt) for s in rebuilt] == [
                (steps[i].start, steps[i].stop, steps[i].t, steps[i].prompt) for i in batch.indices
            ]
    batches = [b for p in packs for b in p.batches]
    results = [[steps[i].x.numpy() * 2 for i in b.indices] for b in batches]
    out = unpack_velocities(len(steps), batches, results)
    assert all(torch.equal(v, s.x * 2) for v, s in zip(out, steps, strict=True))


def test_a_guided_step_takes_two_rows():
    assert (forward_rows(1.0), forward_rows(4.0)) == (1, 2)


def test_lost_calls_are_resent_until_the_budget_runs_out():
    deaths = {1: 2}  # call 1 dies twice, then succeeds

    def send(call):
        return call

    def result(call):
        if deaths.get(call):
            deaths[call] -= 1
            raise ActorDiedError()
        return call * 10

    lost = []
    resender = Resender(max_resends=2)
    assert resender.run([0, 1, 2], send, result, lost=lost.append) == [0, 10, 20]
    assert resender.resent == 2 and lost == [1, 1]

    deaths[1] = 3  # one more death than a run may resend
    with pytest.raises(RuntimeError, match="failed 3 times"):
        resender.run([1], send, result)
    assert resender.resent == 4  # counted over the executor's life


def test_capabilities_are_checked_by_isinstance():
    ex = FunctionExecutor(lambda x, t, p: x)
    assert not isinstance(ex, RunsRounds | AdvancesWindows | Closeable | Resends)

    class Rounds(FunctionExecutor):
        def run_rounds(self, x, plan, rounds, prompts, negative, guidance, on_round=None):
            return x

    class OptedOut(Rounds):
        run_rounds = None  # a subclass gives up a capability it inherits

    assert isinstance(Rounds(None), RunsRounds) and not isinstance(OptedOut(None), RunsRounds)
