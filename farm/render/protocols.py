"""What the window engine asks of an executor: the required methods, and optional capabilities.

An executor is where window-steps run: in this process (`LocalExecutor`), on Ray actors
(`RayExecutor`), on a Serve pool (`ServeExecutor`), or an analytic stand-in in tests.
`StepExecutor` is all the sampling loop needs; `Executor` adds what rendering a video
end to end needs (decode, and the model's identity for provenance), which every farm
executor implements. Anything more is an optional capability, its own runtime-checkable
Protocol: callers test `isinstance(executor, RunsRounds)`, never probe attribute names.
A subclass opts out of a capability it inherits by setting the method to None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

    from farm.render.engine import WindowStep
    from farm.render.windows import WindowPlan


class StepExecutor(Protocol):
    """Required: the latent's shape, the model's schedule, and guided window-step velocities."""

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent for a video of this size."""
        ...

    def velocities(self, steps: list[WindowStep]) -> list[Tensor]:
        """The guided velocity [C, T_w, H, W] of every window-step, in order."""
        ...

    def timesteps(self, steps: int, frames: int, height: int, width: int) -> list[float]:
        """The model's own sampling schedule for a video of this size: steps + 1 flow times,
        1 → 0 (a model fact: its shift, or a schedule that depends on the size)."""
        ...


class Executor(StepExecutor, Protocol):
    """Required to render a video: sampling, parallel decode, and which model ran."""

    def decode_chunks(self, z: Tensor, chunks: list[tuple[int, int]]) -> list[Tensor]:
        """uint8 frames [F_i, H, W, 3] of each latent chunk [start, stop) of z [1, C, T, H, W]."""
        ...

    def model_info(self) -> dict[str, str]:
        """{"model": preset name, "weights_sha256": ...} of the replicas' model."""
        ...


@runtime_checkable
class AdvancesWindows(Protocol):
    """Euler steps run where the windows are; the executor returns the fused latent."""

    def advance(
        self,
        x: Tensor,
        plan: WindowPlan,
        ts: list[float],
        prompts: list[str],
        negative: str,
        guidance: float,
    ) -> Tensor:
        """x [1, C, T, H, W] after every window took the steps `ts` on its own, blended."""
        ...


@runtime_checkable
class RunsRounds(Protocol):
    """Every fusion round of a video with the latent sharded on replicas (farm.render.halo)."""

    def run_rounds(
        self,
        x: Tensor,
        plan: WindowPlan,
        rounds: list[list[float]],
        prompts: list[str],
        negative: str,
        guidance: float,
        on_round: Callable[[int], None] | None = None,
    ) -> Tensor:
        """The final latent [1, C, T, H, W]; `on_round(r)` after each round is confirmed."""
        ...


@runtime_checkable
class Resends(Protocol):
    """A pool that sends again the work a dead replica lost."""

    resent: int  # calls sent again after their replica died, over the executor's life


@runtime_checkable
class Closeable(Protocol):
    """An executor that holds replicas of its own, released by `close`."""

    def close(self) -> None:
        """Release the replicas (a shared pool, like a Serve deployment, has none to release)."""
        ...
