"""Analytic stand-ins for the model, so engine properties can be checked exactly.

`FunctionExecutor` runs a plain velocity function `fn(x [C, T, H, W], t, prompt)` as a
`StepExecutor` (it samples latents; it has no decoder); the functions below are exact
flow-matching velocities. Tests and benchmarks use them.
"""

from __future__ import annotations

import zlib

import torch
from torch import Tensor

from farm.render.engine import WindowStep
from model.config import ModelConfig
from model.geometry import Geometry, geometry_of
from model.sampling import flow_timesteps


class FunctionExecutor:
    """A StepExecutor over a velocity function; records how many window-steps it saw."""

    def __init__(self, fn, channels: int = 2, geometry: Geometry | str = "tiny"):
        self.fn = fn
        self.channels = channels
        # The latent layout of a model of this geometry (the bundled presets': tiny's).
        self.geometry = geometry_of(geometry) if isinstance(geometry, str) else geometry
        self.calls = 0
        self.shift = ModelConfig.model_fields["shift"].default  # the bundled models' schedule

    def latent_shape(self, frames: int, height: int, width: int):
        return self.geometry.latent_shape(self.channels, frames, height, width)

    def timesteps(self, steps: int, frames: int, height: int, width: int) -> list[float]:
        return flow_timesteps(steps, self.shift).tolist()

    def velocities(self, steps: list[WindowStep]) -> list[Tensor]:
        self.calls += len(steps)
        return [self._guided(s) for s in steps]

    def _guided(self, s: WindowStep) -> Tensor:
        v = self.fn(s.x, s.t, s.prompt)
        if s.guidance == 1:
            return v
        v_u = self.fn(s.x, s.t, s.negative_prompt)
        return v_u + s.guidance * (v - v_u)


def prompt_mean(prompt: str) -> float:
    """A stable number per prompt: the mean the data 'of that prompt' is centred on."""
    return (zlib.crc32(prompt.encode()) % 1000) / 250.0 - 2.0


def framewise(x: Tensor, t: float, prompt: str) -> Tensor:
    """Exact velocity for data ~ N(μ(prompt), 0.5²) i.i.d. per frame: mixes nothing in time."""
    mu, var = prompt_mean(prompt), 0.25
    a, b = 1 - t, t
    return (b - a * var) / (a * a * var + b * b) * (x - a * mu) - mu


def ar1_covariance(n: int, rho: float) -> Tensor:
    idx = torch.arange(n)
    return rho ** (idx[:, None] - idx[None, :]).abs().double()


def temporal_gaussian(rho: float = 0.95):
    """Exact velocity for data ~ N(0, Σ) with Σ an AR(1) correlation along time.

    v = (b·I - a·Σ)(a²Σ + b²I)⁻¹ x, applied along the time axis of each window. Samples are
    smooth in time, so independent chunks show a seam that fused windows must not.
    """

    def fn(x: Tensor, t: float, prompt: str) -> Tensor:
        n = x.shape[1]
        S, eye = ar1_covariance(n, rho), torch.eye(n, dtype=torch.float64)
        a, b = 1 - t, t
        M = (b * eye - a * S) @ torch.linalg.inv(a * a * S + b * b * eye)  # (T, T)
        return torch.einsum("st,ctHW->csHW", M, x.double()).float()

    return fn
