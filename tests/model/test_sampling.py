"""Tests for the flow-matching samplers in `model.sampling`."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from model.sampling import (
    cfg,
    euler,
    euler_step,
    flow_timesteps,
    heun,
    sample_training_t,
)


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def gaussian_velocity(mu: float, sigma: float):
    """Exact flow-matching velocity for data x0 ~ N(mu, sigma²) per dimension.

    With a = 1 - t, b = t, x = a·x0 + b·ε is jointly Gaussian with ε - x0:
      E[x] = a·mu,  Var[x] = a²σ² + b²,  E[ε - x0] = -mu,
      Cov(ε - x0, x) = Cov(ε, b·ε) - Cov(x0, a·x0) = b - a·σ².
    Gaussian conditioning gives
      v(x, t) = E[ε - x0 | x] = -mu + (b - a·σ²) / (a²σ² + b²) · (x - a·mu).
    Checks: t = 1 gives x - mu (= ε - mu); t = 0 gives -x (= -x0).
    """
    s2 = sigma**2

    def v(x: Tensor, t: Tensor) -> Tensor:
        assert t.shape == (x.shape[0],)
        b = _bcast(t, x).to(x.dtype)
        a = 1 - b
        scale = (b - a * s2) / (a * a * s2 + b * b)
        return scale * x - (scale * a * mu + mu)

    return v


@pytest.fixture(scope="module")
def noise() -> Tensor:
    # 200k samples laid out as a batch of 4: the per-sample coefficients stay tiny [4, 1] tensors.
    return torch.randn(4, 50_000, generator=torch.Generator().manual_seed(0))


CASES = [(2.5, 0.5), (-1.0, 2.0)]


@pytest.mark.parametrize(("mu", "sigma"), CASES)
@pytest.mark.parametrize(
    ("sampler", "steps", "shift"),
    [(euler, 100, 1.0), (heun, 25, 1.0), (euler, 200, 3.0), (heun, 50, 3.0)],
    ids=["euler", "heun", "euler-shift3", "heun-shift3"],
)
def test_analytic_gaussian_is_recovered(noise, sampler, steps, shift, mu, sigma):
    out = sampler(gaussian_velocity(mu, sigma), noise, flow_timesteps(steps, shift))
    assert out.shape == noise.shape and out.dtype == noise.dtype
    assert abs(out.mean().item() - mu) <= 0.02 * abs(mu)
    assert abs(out.std().item() - sigma) <= 0.02 * sigma


@pytest.mark.parametrize(("mu", "sigma"), CASES)
def test_heun_beats_euler_at_few_steps(noise, mu, sigma):
    v, ts = gaussian_velocity(mu, sigma), flow_timesteps(5)
    err_euler = abs(euler(v, noise, ts).std().item() - sigma)
    err_heun = abs(heun(v, noise, ts).std().item() - sigma)
    assert err_heun < err_euler / 2


def _toy_velocity(seen: list[Tensor] | None = None):
    """A nonlinear, per-sample velocity function that records the t it receives."""

    def v(x: Tensor, t: Tensor) -> Tensor:
        if seen is not None:
            seen.append(t.clone())
        tb = _bcast(t, x)
        return torch.sin(3 * x) * (1 + tb) - x * tb**2 + tb

    return v


@pytest.mark.parametrize("sampler", [euler, heun])
def test_per_sample_schedules_match_running_alone(sampler):
    shifts, steps = [1.0, 3.0, 0.5], 7
    x = torch.randn(4, 2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    schedules = [flow_timesteps(steps, s) for s in shifts]
    # A window that stops short of t = 0: its last step is a full Heun step while the others'
    # last steps (to t = 0) are Euler steps.
    schedules.append(torch.linspace(0.9, 0.3, steps + 1))
    seen: list[Tensor] = []
    batched = sampler(_toy_velocity(seen), x, torch.stack(schedules, dim=1))
    for b, ts in enumerate(schedules):
        alone = sampler(_toy_velocity(), x[b : b + 1], ts)
        torch.testing.assert_close(batched[b : b + 1], alone, atol=1e-6, rtol=0)
    assert seen and all(t.shape == (4,) for t in seen)
    # Mid-schedule, each element really sits at its own time.
    assert len(set(seen[1].tolist())) == 4


@pytest.mark.parametrize("sampler", [euler, heun])
def test_1d_schedule_broadcasts_over_batch_and_rank(sampler):
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    ts = flow_timesteps(6, 2.0)
    seen: list[Tensor] = []
    out = sampler(_toy_velocity(seen), x, ts)
    expanded = sampler(_toy_velocity(), x, ts[:, None].expand(-1, 4))
    torch.testing.assert_close(out, expanded, atol=0, rtol=0)
    assert all(t.shape == (4,) and bool((t == t[0]).all()) for t in seen)


@pytest.mark.parametrize(("sampler", "calls"), [(euler, 4), (heun, 7)])
def test_call_counts_and_callback(sampler, calls):
    x = torch.randn(2, 3)
    ts = flow_timesteps(4)
    seen: list[Tensor] = []
    log: list[tuple[int, Tensor, Tensor]] = []
    out = sampler(_toy_velocity(seen), x, ts, callback=lambda i, x, t: log.append((i, x, t)))
    # Heun evaluates twice per step except on the final step to t = 0.
    assert len(seen) == calls
    assert [i for i, _, _ in log] == [0, 1, 2, 3]
    assert all(t.shape == (2,) and torch.allclose(t, ts[i + 1]) for i, _, t in log)
    assert torch.equal(log[-1][1], out)


def test_heun_ends_at_nonzero_t_with_full_heun_step():
    # A window that stops before t = 0 must not fall back to Euler on its last step.
    v = lambda x, t: x * _bcast(t, x)  # dx/dt = t·x  =>  x(t) = x(1)·exp((t² - 1) / 2)
    x = torch.ones(1, 1, dtype=torch.float64)
    ts = torch.tensor([1.0, 0.5], dtype=torch.float64)
    exact = torch.exp(torch.tensor((0.25 - 1) / 2, dtype=torch.float64))
    assert abs(heun(v, x, ts).item() - exact) < abs(euler(v, x, ts).item() - exact) / 2


def test_sampler_rejects_bad_timestep_shape():
    with pytest.raises(ValueError, match=r"N \+ 1"):
        euler(_toy_velocity(), torch.zeros(3, 2), torch.zeros(5, 2))


def test_euler_step_scalar_and_per_sample():
    x, v = torch.ones(2, 3, 4), torch.full((2, 3, 4), 2.0)
    torch.testing.assert_close(euler_step(x, v, 1.0, 0.75), torch.full_like(x, 0.5))
    out = euler_step(x, v, torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(out[0], torch.zeros(3, 4))
    torch.testing.assert_close(out[1], torch.ones(3, 4))
    half = euler_step(x.bfloat16(), v.bfloat16(), 1.0, 0.75)
    assert half.dtype == torch.bfloat16


def test_flow_timesteps_endpoints_and_monotone():
    for shift in (1.0, 3.0, 0.5):
        ts = flow_timesteps(10, shift)
        assert ts.shape == (11,) and ts.dtype == torch.float32
        assert ts[0].item() == 1.0 and ts[-1].item() == 0.0
        assert bool((ts[1:] < ts[:-1]).all())
    torch.testing.assert_close(flow_timesteps(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_flow_timesteps_shift_keeps_steps_near_one():
    plain, shifted = flow_timesteps(10), flow_timesteps(10, shift=3.0)
    assert shifted[5].item() == pytest.approx(0.75)  # 3·0.5 / (1 + 2·0.5)
    assert shifted[5] > plain[5]
    assert bool((shifted[1:-1] > plain[1:-1]).all())


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"steps": 5, "shift": 0.0}, "shift must be > 0"),
        ({"steps": 5, "shift": -1.0}, "shift must be > 0"),
    ],
)
def test_flow_timesteps_rejects_bad_arguments(kwargs, rule):
    with pytest.raises(ValueError, match=rule):
        flow_timesteps(**kwargs)


@settings(max_examples=25, deadline=None)
@given(steps=st.integers(1, 50), shift=st.floats(0.5, 5.0))
def test_flow_timesteps_property(steps, shift):
    ts = flow_timesteps(steps, shift)
    assert ts.shape == (steps + 1,)
    assert ts[0].item() == 1.0 and ts[-1].item() == 0.0
    assert bool((ts[1:] < ts[:-1]).all())


def _cond_velocity(calls: list[object]):
    """A toy conditional velocity v(x, t, cond) = cond·x + t that records each cond."""

    def v(x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        calls.append(cond)
        return cond * x + _bcast(t, x)

    return v


X, T = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([0.9, 0.4])
COND, UNCOND, NEG = torch.tensor(2.0), torch.tensor(0.5), torch.tensor(-1.0)


def test_cfg_scale_one_is_conditional_and_skips_uncond():
    calls: list[object] = []
    out = cfg(_cond_velocity(calls), COND, UNCOND, 1.0)(X, T)
    assert torch.equal(out, COND * X + _bcast(T, X))
    assert len(calls) == 1 and calls[0] is COND


def test_cfg_scale_zero_is_unconditional():
    out = cfg(_cond_velocity([]), COND, UNCOND, 0.0)(X, T)
    torch.testing.assert_close(out, UNCOND * X + _bcast(T, X))


def test_cfg_extrapolates_and_negative_prompt_matters():
    v = _cond_velocity([])
    v_c, v_u = v(X, T, COND), v(X, T, UNCOND)
    for scale in (0.5, 3.0, 7.5):
        torch.testing.assert_close(cfg(v, COND, UNCOND, scale)(X, T), v_u + scale * (v_c - v_u))
        assert not torch.allclose(cfg(v, COND, NEG, scale)(X, T), cfg(v, COND, UNCOND, scale)(X, T))


def test_cfg_inside_sampler():
    calls: list[object] = []
    guided = cfg(_cond_velocity(calls), COND, UNCOND, 4.0)
    out = euler(guided, X, flow_timesteps(3))
    assert out.shape == X.shape and len(calls) == 6


def test_sample_training_t_range_and_determinism():
    t = sample_training_t(10_000, torch.Generator().manual_seed(0))
    assert t.shape == (10_000,) and t.dtype == torch.float32
    assert bool(((t > 0) & (t < 1)).all())
    assert abs(t.median().item() - 0.5) < 0.02  # logit-normal(0, 1) is symmetric about 0.5
    again = sample_training_t(10_000, torch.Generator().manual_seed(0))
    assert torch.equal(t, again)
    other = sample_training_t(10_000, torch.Generator().manual_seed(1))
    assert not torch.equal(t, other)


def test_sample_training_t_mean_shifts_and_stays_open():
    high = sample_training_t(1000, torch.Generator().manual_seed(0), mean=1.0)
    assert high.median().item() > 0.6
    extreme = sample_training_t(1000, torch.Generator().manual_seed(0), std=100.0)
    assert bool(((extreme > 0) & (extreme < 1)).all())
