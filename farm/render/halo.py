"""Halo exchange: windows that live on their replicas for the whole video.

The plain engine loop fuses on the driver: every step it ships the whole latent out and
blends every window that comes back, so the driver's memory bandwidth caps how many
replicas one video can use. Here the latent is sharded instead. Consecutive windows form
*groups* (one replica call each, so a forward still batches several windows); a group's
task runs one *round* (the Euler steps between two fusions) and then hands each
neighbouring group only the frames they share:

    round r of group G:  x_j = Σ_{i covers j, in window order} w_i·y_i   for j in G
                         y_j = x_j advanced by the round's steps           for j in G
                         → to each peer group H: y_i on window i ∩ span(H), i in G

After the last round each group fuses once more and returns the frames it owns (the
groups' owned ranges partition the video). The driver never touches a latent between
the first noise and the final frames: it only wires the object references of one round
into the next, so it can submit rounds ahead and stays off the critical path.

The arithmetic is the plain engine's (x + dt·Σwᵢvᵢ = Σwᵢ(xᵢ + dt·vᵢ)), and every group
sums a frame's contributions in the same window order, so every replica holding a shared
frame holds the same bits, whatever the number of replicas. Tasks are pure functions of
their inputs: a task whose replica died is sent again with the same inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from farm.render.engine import StepRunner, advance_windows, stacked_ranges
from farm.render.windows import WindowPlan

Window = tuple[int, int]
# Advances windows (each [C, T_w, H, W]) along ts under their prompts; returns them advanced.
AdvanceFn = Callable[[list[np.ndarray], list[float], list[str]], list[np.ndarray]]
# What a group sends a peer: {window i: (first frame, y_i on window i ∩ span(peer))}.
Contribution = dict[int, tuple[int, np.ndarray]]


def _overlap(a: Window, b: Window) -> Window | None:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None


@dataclass(frozen=True)
class HaloLayout:
    """How a window plan is split into groups, and which groups exchange frames."""

    windows: tuple[Window, ...]
    weights: np.ndarray  # [len(windows), T] float32, the plan's blend weights
    groups: tuple[tuple[int, ...], ...]  # window indices of each group, consecutive
    peers: tuple[tuple[int, ...], ...]  # groups sharing a frame with each group (incl. itself)

    @classmethod
    def make(cls, plan: WindowPlan, per_group: int) -> HaloLayout:
        """Groups of up to `per_group` consecutive windows of `plan`."""
        if per_group < 1:
            raise ValueError(f"per_group must be >= 1, got {per_group}")
        n = len(plan.windows)
        groups = tuple(tuple(range(k, min(k + per_group, n))) for k in range(0, n, per_group))
        spans = [(plan.windows[g[0]][0], plan.windows[g[-1]][1]) for g in groups]
        peers = tuple(
            tuple(h for h, other in enumerate(spans) if _overlap(span, other)) for span in spans
        )
        weights = plan.weights.numpy().astype(np.float32, copy=False)
        return cls(tuple(plan.windows), weights, groups, peers)

    def span(self, g: int) -> Window:
        """Latent frames [start, stop) covered by group g's windows."""
        return self.windows[self.groups[g][0]][0], self.windows[self.groups[g][-1]][1]

    def owned(self, g: int) -> Window:
        """Frames group g returns at the end: the groups' owned ranges partition the video."""
        start = 0 if g == 0 else self.span(g - 1)[1]
        return start, self.span(g)[1]

    def exchanged_frames(self, g: int, h: int) -> int:
        """Latent frames group g sends group h per round (its weighted windows ∩ span(h))."""
        return sum(
            hi - lo
            for i in self.groups[g]
            if (cut := _overlap(self.windows[i], self.span(h))) is not None
            for lo, hi in [cut]
        )


def _first(item: tuple) -> int:
    return item[0]


def gather(layout: HaloLayout, g: int, received: Sequence[Contribution]) -> list[np.ndarray]:
    """The fused latent [C, T_w, H, W] of each window of group g from its peers' parts.

    Like the engine's Blender: parts are taken in window order; the first to reach a frame
    sets it to w·y, later ones add theirs. Two groups that share a frame therefore compute
    it with the same operations in the same order: the same bits.
    """
    parts = sorted(itertools.chain.from_iterable(c.items() for c in received), key=_first)
    out = []
    for j in layout.groups[g]:
        a, b = layout.windows[j]
        first = parts[0][1][1]
        x = np.empty((first.shape[0], b - a, *first.shape[2:]), dtype=first.dtype)
        covered = a
        for i, (start, part) in parts:
            cut = _overlap((a, b), (start, start + part.shape[1]))
            if cut is None:
                continue
            lo, hi = cut
            w = layout.weights[i, lo:hi][None, :, None, None]
            y = part[:, lo - start : hi - start]
            mid = min(max(covered, lo), hi)  # frames before `mid` already hold a partial sum
            if mid > lo:
                x[:, lo - a : mid - a] += y[:, : mid - lo] * w[:, : mid - lo]
            if hi > mid:
                if (w[:, mid - lo :] == 1).all():  # a frame only this window covers: y itself
                    x[:, mid - a : hi - a] = y[:, mid - lo :]
                else:
                    np.multiply(y[:, mid - lo :], w[:, mid - lo :], out=x[:, mid - a : hi - a])
            covered = max(covered, hi)
        out.append(x)
    return out


def scatter(layout: HaloLayout, g: int, ys: Sequence[np.ndarray]) -> list[Contribution]:
    """What group g sends each of its peers after a round: its windows on the shared frames.

    Its own group gets the windows whole; the receiver applies the weights (in gather).
    """
    out = []
    for h in layout.peers[g]:
        span = layout.span(h)
        sent: Contribution = {}
        for j, y in zip(layout.groups[g], ys, strict=True):
            a, b = layout.windows[j]
            cut = _overlap((a, b), span)
            if cut is not None:
                lo, hi = cut
                sent[j] = (a, y) if (lo, hi) == (a, b) else (lo, y[:, lo - a : hi - a].copy())
        out.append(sent)
    return out


def assemble(layout: HaloLayout, g: int, xs: Sequence[np.ndarray]) -> np.ndarray:
    """Group g's owned frames [C, owned, H, W] from its fused windows."""
    start, stop = layout.owned(g)
    first = xs[0]
    out = np.empty((first.shape[0], stop - start, *first.shape[2:]), dtype=first.dtype)
    for j, x in zip(layout.groups[g], xs, strict=True):
        a, b = layout.windows[j]
        lo, hi = max(a, start), b
        if lo < hi:
            out[:, lo - start : hi - start] = x[:, lo - a : hi - a]
    return out


def window_advancer(run: StepRunner, negative: str, guidance: float) -> AdvanceFn:
    """An AdvanceFn that takes the Euler steps of each window through `run` (window-steps)."""

    def advance(xs: list[np.ndarray], ts: list[float], prompts: list[str]) -> list[np.ndarray]:
        x = torch.cat([torch.from_numpy(a) for a in xs], dim=1)[None]  # (1, C, ΣT_w, H, W)
        ranges = stacked_ranges([a.shape[1] for a in xs])
        out = advance_windows(run, x, ranges, ts, prompts, negative, guidance)
        return [w[0].numpy() for w in out]

    return advance


def run_round(
    layout: HaloLayout,
    g: int,
    ts: list[float],
    prompts: list[str],
    received: Sequence,
    advance: AdvanceFn,
) -> list:
    """One task: group g's round along `ts` (empty: the final fusion).

    `received` is the whole noise latent [C, T, H, W] in the first round, else what each
    peer group sent, in `layout.peers[g]` order. Returns what to send each peer (in the
    same order) or, for the final fusion, [owned frames].
    """
    if len(received) == 1 and isinstance(received[0], np.ndarray):
        latent = received[0]  # first round: the windows of the initial noise
        xs = [np.array(latent[:, a:b]) for a, b in (layout.windows[j] for j in layout.groups[g])]
    else:
        xs = gather(layout, g, received)
    if not ts:
        return [assemble(layout, g, xs)]
    return scatter(layout, g, advance(xs, ts, prompts))


def run_rounds_here(
    layout: HaloLayout,
    latent: np.ndarray,
    rounds: Sequence[list[float]],
    prompts: Sequence[str],
    advance: AdvanceFn,
) -> np.ndarray:
    """Every round of every group in this process, in order: the reference for the replicas."""
    n = len(layout.groups)
    sent: list[list] = [[latent] for _ in range(n)]
    for ts in [*rounds, []]:
        out = [
            run_round(layout, g, list(ts), [prompts[j] for j in layout.groups[g]], sent[g], advance)
            for g in range(n)
        ]
        if not ts:
            return np.concatenate([o[0] for o in out], axis=1)
        sent = [[out[h][layout.peers[h].index(g)] for h in layout.peers[g]] for g in range(n)]
    raise AssertionError("unreachable")
