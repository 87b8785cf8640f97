"""Dispatch: how executors pack window-steps into replica calls, and resend what a replica lost.

One implementation for every pool (the Ray actors of `RayExecutor`, the Serve Renderer
of `ServeExecutor`):

- Packing. A video's window-steps at one step all window the same latent, so a call ships
  that latent once with the steps as lists of fields (`pack_steps`); the replica rebuilds
  them as views of the one latent (`unpack_steps`) and the results come back in step order
  (`unpack_velocities`). A guided step is two rows of a forward (`forward_rows`).
- Resending. Calls are stateless (window-steps, decodes), so a call whose replica died is
  sent again, to any replica, and gives the same result. `Resender` does that with a bound
  on resends per run and counts every resend (`resent`) over the executor's life.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from torch import Tensor

from farm.render.engine import WindowStep

log = logging.getLogger(__name__)

# What a call raises when its replica (actor) died or cannot be reached: worth a resend.
REPLICA_DEATH = (RayActorError, ActorDiedError, ActorUnavailableError)
# The fields of a WindowStep besides its latent, in the order calls carry them as lists.
STEP_FIELDS = ("start", "stop", "t", "prompt", "negative_prompt", "guidance")

Call = TypeVar("Call")
Sent = TypeVar("Sent")


def as_tensor(a: np.ndarray | Tensor) -> Tensor:
    """A tensor over `a` without a copy.

    Ray hands out read-only views of its object store; the farm only ever reads these
    tensors (every update makes a new tensor), so aliasing them is safe and saves a copy of
    each window per step.
    """
    if isinstance(a, Tensor):
        return a
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors and arrays inside (nested lists/tuples of) `obj`."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(o) for o in obj)
    return 0


def forward_rows(guidance: float) -> int:
    """Rows of a forward one window-step takes: both CFG branches when guided."""
    return 2 if guidance != 1 else 1


# --- packing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StepBatch:
    """Window-steps that travel in one call, as lists of their fields (see STEP_FIELDS)."""

    indices: tuple[int, ...]  # positions in the caller's list of steps
    fields: tuple[list, ...]  # starts, stops, ts, prompts, negatives, guidances


@dataclass(frozen=True)
class LatentPack:
    """Every window-step over one latent: the latent ships once, then batches refer to it."""

    latent: Tensor  # (C, T, H, W)
    batches: tuple[StepBatch, ...]


def pack_steps(steps: Sequence[WindowStep], per_call: int | None = None) -> list[LatentPack]:
    """Steps grouped by the latent (memory) they window, each group cut into batches of
    at most `per_call` steps (None: one batch per latent)."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(steps):
        key = (s.latent.data_ptr(), tuple(s.latent.shape), s.latent.stride())
        groups.setdefault(key, []).append(i)
    packs = []
    for idx in groups.values():
        n = per_call or len(idx)
        batches = tuple(
            StepBatch(tuple(part), tuple([getattr(steps[i], f) for i in part] for f in STEP_FIELDS))
            for part in (idx[k : k + n] for k in range(0, len(idx), n))
        )
        packs.append(LatentPack(steps[idx[0]].latent, batches))
    return packs


def unpack_steps(latent: np.ndarray | Tensor, *fields: list) -> list[WindowStep]:
    """The window-steps a call carries: views of its one latent (the replica's side)."""
    x = as_tensor(latent)
    return [WindowStep(x, a, b, t, p, n, g) for a, b, t, p, n, g in zip(*fields, strict=True)]


def unpack_velocities(
    count: int, batches: Sequence[StepBatch], results: Sequence[Sequence]
) -> list[Tensor]:
    """The velocities of `count` steps in their order, from each batch's call result."""
    out: list = [None] * count
    for batch, vs in zip(batches, results, strict=True):
        for i, v in zip(batch.indices, vs, strict=True):
            out[i] = as_tensor(v)
    return out


# --- resending ---------------------------------------------------------------------------


class Resender:
    """Runs calls on a pool whose replicas may die; a call lost with its replica is resent."""

    def __init__(self, max_resends: int, pool: str = "replica"):
        self.max_resends = max_resends  # per run: more means the pool is failing, not a blip
        self.pool = pool  # names the pool in errors and logs
        self.resent = 0  # calls sent again after their replica died, over this life

    def charge(self, error: BaseException, spent: int, *, counted: bool = True) -> int:
        """Count one resend caused by `error`; `spent` of this run's budget so far.

        Returns the budget spent after it, raising once more than `max_resends` are spent.
        `counted=False` resends without spending (a task that lost only an input).
        """
        if counted:
            spent += 1
            if spent > self.max_resends:
                raise RuntimeError(f"{self.pool} calls failed {spent} times; last: {error}") from (
                    error
                )
        self.resent += 1
        return spent

    def run(
        self,
        calls: Sequence[Call],
        send: Callable[[Call], Sent],
        result: Callable[[Sent], Any],
        *,
        first_ready: Callable[[list[Sent]], int] | None = None,
        lost: Callable[[Sent], None] | None = None,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list:
        """Send every call at once and collect them; resend those whose replica died.

        `send(call)` submits a call and returns what `result` waits on; `first_ready` picks
        the position of a finished one (default: the oldest); `lost(sent)` is told of a
        death (to replace the replica). Results come back in call order, or go to
        `on_result(i, result)` as they arrive (the list then holds None), so the caller
        works while the pool computes.
        """
        pending = [(i, send(call)) for i, call in enumerate(calls)]
        results: list = [None] * len(calls)
        spent = 0
        while pending:
            k = first_ready([sent for _, sent in pending]) if first_ready else 0
            i, sent = pending.pop(k)
            try:
                value = result(sent)
            except REPLICA_DEATH as error:
                spent = self.charge(error, spent)
                if lost is not None:
                    lost(sent)
                log.warning("%s died; resending call %d of %d", self.pool, i, len(calls))
                pending.append((i, send(calls[i])))
                continue
            if on_result is None:
                results[i] = value
            else:
                on_result(i, value)
        return results
