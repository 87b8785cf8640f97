"""Flow-matching (rectified flow) samplers, written as small pure functions.

Convention: ``x_t = (1 - t)·x0 + t·ε`` with data ``x0`` and noise ``ε ~ N(0, I)``; the model
predicts the velocity ``v = dx_t/dt = ε - x0``. Sampling integrates ``dx/dt = v(x, t)``
backwards from ``t = 1`` (pure noise) to ``t = 0`` (data).

A velocity function has the signature ``velocity_fn(x: Tensor[B, ...], t: Tensor[B]) -> Tensor``
shaped like ``x``. ``t`` is always per-sample, so a server can batch requests that sit at
different steps of their schedules. Samplers take ``timesteps`` either as ``[N + 1]`` (one
schedule for the whole batch) or ``[N + 1, B]`` (one schedule per sample).

Guidance is a wrapper around the velocity function (see :func:`cfg`), never part of a sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]
CondVelocityFn = Callable[[Tensor, Tensor, Any], Tensor]
Callback = Callable[[int, Tensor, Tensor], None]


def flow_timesteps(
    steps: int, shift: float = 1.0, device: torch.device | str | None = None
) -> Tensor:
    """Build a sampling schedule from t = 1 to t = 0 of ``steps + 1`` float32 values.

    ``shift`` applies the SD3/Wan time shift ``t' = shift·t / (1 + (shift - 1)·t)``; ``shift > 1``
    spends more steps at high noise. The result is strictly decreasing with endpoints exactly
    1 and 0.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    t = shift * t / (1.0 + (shift - 1.0) * t)
    t[0], t[-1] = 1.0, 0.0
    return t.to(device=device, dtype=torch.float32)


def _per_sample(t: Tensor | float, x: Tensor) -> Tensor:
    """Reshape a scalar or ``[B]`` time so that it broadcasts over the trailing dims of ``x``."""
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must be a scalar or have shape [{x.shape[0]}], got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def euler_step(x: Tensor, v: Tensor, t: Tensor | float, t_next: Tensor | float) -> Tensor:
    """Take one Euler step of ``dx/dt = v`` from ``t`` to ``t_next`` (scalars or ``[B]``).

    The arithmetic runs in the promoted dtype of ``x`` and the times; the result keeps
    ``x.dtype``.
    """
    dt = _per_sample(t_next, x) - _per_sample(t, x)
    if x.dtype == torch.float32:  # one fused pass: long videos make x large
        return torch.addcmul(x, dt.to(x.dtype), v.to(x.dtype))
    return (x + dt * v).to(x.dtype)


def _schedule(timesteps: Tensor, x: Tensor) -> Tensor:
    """Check ``timesteps`` and return it as ``[N + 1, B]`` on the device of ``x``."""
    batch = x.shape[0]
    timesteps = torch.as_tensor(timesteps, device=x.device)
    if timesteps.ndim == 1:
        return timesteps[:, None].expand(-1, batch)
    if timesteps.ndim == 2 and timesteps.shape[1] == batch:
        return timesteps
    raise ValueError(
        f"timesteps must have shape [N + 1] or [N + 1, {batch}], got {tuple(timesteps.shape)}"
    )


@torch.no_grad()
def euler(
    velocity_fn: VelocityFn, x: Tensor, timesteps: Tensor, callback: Callback | None = None
) -> Tensor:
    """Integrate from ``timesteps[0]`` to ``timesteps[-1]`` with first-order Euler steps.

    ``callback(i, x, t)`` is called after step ``i`` with the new ``x`` and its time ``t[B]``.
    """
    ts = _schedule(timesteps, x)
    for i in range(ts.shape[0] - 1):
        t, t_next = ts[i], ts[i + 1]
        x = euler_step(x, velocity_fn(x, t), t, t_next)
        if callback is not None:
            callback(i, x, t_next)
    return x


@torch.no_grad()
def heun(
    velocity_fn: VelocityFn, x: Tensor, timesteps: Tensor, callback: Callback | None = None
) -> Tensor:
    """Integrate from ``timesteps[0]`` to ``timesteps[-1]`` with Heun's second-order method.

    Each step averages the velocity at both ends (two evaluations). Samples whose step ends at
    t = 0 take a plain Euler step instead, as k-diffusion does; when every sample does, the
    second evaluation is skipped. ``callback(i, x, t)`` is called as in :func:`euler`.
    """
    ts = _schedule(timesteps, x)
    for i in range(ts.shape[0] - 1):
        t, t_next = ts[i], ts[i + 1]
        v = velocity_fn(x, t)
        x_euler = euler_step(x, v, t, t_next)
        final = t_next == 0
        if bool(final.all()):
            x = x_euler
        else:
            v_next = velocity_fn(x_euler, t_next)
            x_heun = euler_step(x, (v + v_next) / 2, t, t_next)
            x = torch.where(_per_sample(final, x), x_euler, x_heun)
        if callback is not None:
            callback(i, x, t_next)
    return x


def cfg(velocity_fn: CondVelocityFn, cond: Any, uncond: Any, scale: float) -> VelocityFn:
    """Wrap a conditional velocity function with classifier-free guidance.

    ``velocity_fn(x, t, cond)`` is evaluated with ``cond`` (e.g. prompt embeddings) and
    ``uncond`` (the negative or empty prompt); the wrapper returns
    ``v_u + scale·(v_c - v_u)``. With ``scale == 1`` it returns the conditional velocity
    exactly and never evaluates ``uncond``.
    """
    if scale == 1:
        return lambda x, t: velocity_fn(x, t, cond)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        v_c = velocity_fn(x, t, cond)
        v_u = velocity_fn(x, t, uncond)
        return v_u + scale * (v_c - v_u)

    return guided


def sample_training_t(
    batch: int,
    generator: torch.Generator | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``[batch]`` logit-normal training times ``sigmoid(N(mean, std²))`` in (0, 1).

    The device defaults to the generator's. Values are clamped into the open interval, since
    float32 sigmoid rounds extreme draws to exactly 0 or 1.
    """
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    if device is None and generator is not None:
        device = generator.device
    z = torch.randn(batch, generator=generator, device=device, dtype=torch.float32)
    t = torch.sigmoid(z * std + mean)
    eps = torch.finfo(t.dtype).eps
    return t.clamp(min=torch.finfo(t.dtype).tiny, max=1.0 - eps / 2)
