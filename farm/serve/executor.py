"""`ServeExecutor`: the engine's executor interface on top of a Renderer DeploymentHandle.

Blocking calls (`.remote(...).result()`), so the engine loop runs in a worker thread (the
Director uses `asyncio.to_thread`). Per step, each latent is shipped once as numpy with the
ranges of its windows; Serve routes the call to any replica and the Renderer batches it
with other videos' steps. A call whose replica died is sent again, a bounded number of
times: window-steps are stateless, so a resend gives the same result.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from torch import Tensor

from farm.render.engine import WindowStep
from farm.render.worker import as_tensor

log = logging.getLogger(__name__)

_DEATH = (RayActorError, ActorDiedError, ActorUnavailableError)
_FIELDS = ("start", "stop", "t", "prompt", "negative_prompt", "guidance")


class ServeExecutor:
    """Runs window-steps and decodes on a Renderer deployment, resending on replica death."""

    def __init__(
        self,
        renderer: Any,
        *,
        interactive: bool = True,
        priority: int = 0,
        max_resends: int = 8,
        timeout_s: float | None = 3600,
    ):
        self.renderer = renderer  # DeploymentHandle of a Renderer
        # Interactive (a user waits) or a campaign's bulk work, and that campaign's priority.
        self.lane = {"interactive": interactive, "priority": priority}
        self.max_resends = max_resends
        self.timeout_s = timeout_s
        self.resent = 0  # calls sent again after their replica died
        self._shapes: dict[tuple, tuple[int, int, int, int]] = {}
        self._info: dict[str, str] | None = None

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent for a video of this size (asked once per size)."""
        key = (frames, height, width)
        if key not in self._shapes:
            self._shapes[key] = tuple(self._run([("latent_shape", key)])[0])
        return self._shapes[key]

    def model_info(self) -> dict[str, str]:
        """The pool's model (every replica loads the same reference)."""
        if self._info is None:
            self._info = self._run([("model_info", ())])[0]
        return self._info

    def velocities(self, steps: list[WindowStep]) -> list[Tensor]:
        """Guided velocities, one Renderer call per distinct latent the steps window."""
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(steps):
            key = (s.latent.data_ptr(), tuple(s.latent.shape), s.latent.stride())
            groups.setdefault(key, []).append(i)
        calls = []
        for idx in groups.values():
            latent = steps[idx[0]].latent.detach().contiguous().numpy()
            fields = tuple([getattr(steps[i], f) for i in idx] for f in _FIELDS)
            calls.append(("velocities", (latent, *fields), self.lane))
        out: list = [None] * len(steps)
        for idx, vs in zip(groups.values(), self._run(calls), strict=True):
            for i, v in zip(idx, vs, strict=True):
                out[i] = as_tensor(v)
        return out

    def decode_chunks(self, z: Tensor, chunks: list[tuple[int, int]]) -> list[Tensor]:
        """uint8 frames of each latent chunk, decoded in parallel over the pool."""
        array = z.detach().contiguous().numpy()
        results = self._run([("decode_chunk", (array, a, b), self.lane) for a, b in chunks])
        return [as_tensor(np.asarray(f)) for f in results]

    def _run(self, calls: list[tuple]) -> list:
        """Send every (method, args[, kwargs]) call at once, wait for all; resend on death."""
        responses = {i: self._send(*call) for i, call in enumerate(calls)}
        results: list = [None] * len(calls)
        resends = 0
        while responses:
            i, response = next(iter(responses.items()))
            del responses[i]
            try:
                results[i] = response.result(timeout_s=self.timeout_s)
            except _DEATH as e:
                resends += 1
                if resends > self.max_resends:
                    raise RuntimeError(f"Renderer calls failed {resends} times; last: {e}") from e
                self.resent += 1
                log.warning("renderer replica died; resending %s (call %d)", calls[i][0], i)
                responses[i] = self._send(*calls[i])
        return results

    def _send(self, method: str, args: tuple, kwargs: dict | None = None):
        return getattr(self.renderer, method).remote(*args, **(kwargs or {}))
