"""`ServeExecutor`: the engine's executor interface on top of a Renderer DeploymentHandle.

Blocking calls (`.remote(...).result()`), so the engine loop runs in a worker thread (the
Director uses `asyncio.to_thread`). Per step, each latent is shipped once as numpy with the
ranges of its windows (`farm.render.dispatch.pack_steps`); Serve routes the call to any
replica and the Renderer batches it with other videos' steps. A call whose replica died is
sent again, a bounded number of times (`farm.render.dispatch.Resender`, as the Ray
executor does): window-steps are stateless, so a resend gives the same result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from farm.render.dispatch import Resender, as_tensor, pack_steps, unpack_velocities
from farm.render.engine import WindowStep
from farm.settings import setting_default


class ServeExecutor:
    """Runs window-steps and decodes on a Renderer deployment, resending on replica death."""

    def __init__(
        self,
        renderer: Any,
        *,
        interactive: bool = True,
        priority: int = 0,
        max_resends: int = setting_default("max_resends"),
        timeout_s: float | None = 3600,
    ):
        self.renderer = renderer  # DeploymentHandle of a Renderer
        # Interactive (a user waits) or a campaign's bulk work, and that campaign's priority.
        self.lane = {"interactive": interactive, "priority": priority}
        self.resender = Resender(max_resends, pool="Renderer replica")
        self.timeout_s = timeout_s
        self._shapes: dict[tuple, tuple[int, int, int, int]] = {}
        self._schedules: dict[tuple, list[float]] = {}
        self._info: dict[str, str] | None = None

    @property
    def resent(self) -> int:
        """Calls sent again after their replica died."""
        return self.resender.resent

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent for a video of this size (asked once per size)."""
        key = (frames, height, width)
        if key not in self._shapes:
            self._shapes[key] = tuple(self._run([("latent_shape", key)])[0])
        return self._shapes[key]

    def timesteps(self, steps: int, frames: int, height: int, width: int) -> list[float]:
        """The pool's model's schedule for this size (asked once per steps and size)."""
        key = (steps, frames, height, width)
        if key not in self._schedules:
            self._schedules[key] = list(self._run([("timesteps", key)])[0])
        return self._schedules[key]

    def model_info(self) -> dict[str, str]:
        """The pool's model (every replica loads the same reference)."""
        if self._info is None:
            self._info = self._run([("model_info", ())])[0]
        return self._info

    def velocities(self, steps: list[WindowStep]) -> list[Tensor]:
        """Guided velocities, one Renderer call per distinct latent the steps window."""
        calls, batches = [], []
        for pack in pack_steps(steps):  # one batch per latent: the Renderer cuts its forwards
            (batch,) = pack.batches
            latent = pack.latent.detach().contiguous().numpy()
            calls.append(("velocities", (latent, *batch.fields), self.lane))
            batches.append(batch)
        return unpack_velocities(len(steps), batches, self._run(calls))

    def decode_chunks(self, z: Tensor, chunks: list[tuple[int, int]]) -> list[Tensor]:
        """uint8 frames of each latent chunk, decoded in parallel over the pool."""
        array = z.detach().contiguous().numpy()
        results = self._run([("decode_chunk", (array, a, b), self.lane) for a, b in chunks])
        return [as_tensor(np.asarray(f)) for f in results]

    def _run(self, calls: list[tuple]) -> list:
        """Send every (method, args[, kwargs]) call at once, wait for all; resend on death."""

        def send(call: tuple):
            method, args, *kwargs = call
            return getattr(self.renderer, method).remote(*args, **(kwargs[0] if kwargs else {}))

        def result(response) -> Any:
            return response.result(timeout_s=self.timeout_s)

        return self.resender.run(calls, send, result)
