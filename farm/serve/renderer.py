"""The Renderer deployment: the model pool, where window-steps of many videos share forwards.

Each replica holds one `ModelWorker`. A video's engine sends one request per step (all its
windows over one shared latent); `@serve.batch` gathers the requests of different videos
that arrive within `batch_wait_s` and runs their window-steps in one `run_steps` call, which
stacks same-shape windows into forwards (per-sample t, so videos at different steps mix).
Model work runs on model threads (`farm.serve.gate`), so the event loop keeps accepting
requests.

Fairness: interactive requests (a user waiting on /v1/videos) and campaign requests form
separate batches. Campaign work runs on one model thread, one forward (`bulk_forward_rows`
rows) at a time, at most `bulk_batch_videos` videos per batch; `interactive_threads` more
threads are kept for interactive work, so a user's step runs beside a long campaign call
(a decode) instead of behind it. Waiting work starts interactive first, then campaigns by
priority.

Health: a replica whose model work (window-step batches, decodes) has failed
`max_consecutive_failures` times in a row fails Serve's `check_health`, so Serve replaces it
(a wedged GPU, a corrupted CUDA context); any success resets the count. The failed calls
raise to their callers, whose variants are retried and land on a healthy replica.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ray import serve

from farm import metrics
from farm.render.dispatch import forward_rows, unpack_steps
from farm.render.engine import WindowStep
from farm.render.worker import ModelWorker
from farm.serve.gate import PriorityGate, work_key
from farm.settings import setting_default

# (latent [C, T, H, W], starts, stops, ts, prompts, negatives, guidances): one video's step
StepsRequest = tuple[np.ndarray, list, list, list, list, list, list]


def _forwards(steps: list[WindowStep], rows: int) -> list[list[WindowStep]]:
    """Consecutive runs of window-steps that fill at most `rows` rows of a forward each."""
    parts: list[list[WindowStep]] = [[]]
    used = 0
    for s in steps:
        need = forward_rows(s.guidance)
        if parts[-1] and used + need > rows:
            parts.append([])
            used = 0
        parts[-1].append(s)
        used += need
    return parts


@serve.deployment(
    name="Renderer",
    max_ongoing_requests=setting_default("renderer_max_ongoing_requests"),
    ray_actor_options={"num_cpus": setting_default("renderer_num_cpus")},
    health_check_period_s=5,
)
class Renderer:
    """A model replica behind Serve: batched velocities, chunk decodes, model info, stats."""

    def __init__(
        self,
        model_ref: str = setting_default("model"),
        *,
        max_batch: int = setting_default("renderer_max_batch"),
        batch_videos: int = setting_default("renderer_batch_videos"),
        batch_wait_s: float = setting_default("renderer_batch_wait_s"),
        device: str = "cpu",
        threads: int | None = setting_default("renderer_threads"),
        max_consecutive_failures: int = 3,
        bulk_batch_videos: int | None = None,
        bulk_forward_rows: int | None = None,
        interactive_threads: int = setting_default("renderer_interactive_threads"),
        load: dict | None = None,
    ):
        self.worker = ModelWorker(
            model_ref, max_batch=max_batch, device=device, threads=threads, load=load
        )
        # Interactive work first, then campaigns by priority; `interactive_threads` model
        # threads are kept for interactive work, beside the one campaign work may use.
        self._gate = PriorityGate(slots=1 + interactive_threads, bulk_slots=1)
        self._batch.set_max_batch_size(batch_videos)
        self._batch.set_batch_wait_timeout_s(batch_wait_s)
        # Campaign batches stay short, so an interactive step never waits long behind one.
        self._bulk_batch.set_max_batch_size(bulk_batch_videos or batch_videos)
        self.bulk_forward_rows = bulk_forward_rows or max_batch
        self._bulk_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.videos_per_batch: list[int] = []  # requests (videos) merged per batch
        self._in_flight = {True: 0, False: 0}  # velocity requests here, by lane (interactive)
        self.alone_requests = 0  # requests run at once: none other of their lane in flight
        self.preset = model_ref  # the metrics' preset tag
        self._info: dict[str, str] | None = None
        self.max_consecutive_failures = max_consecutive_failures
        self.consecutive_failures = 0
        self._last_failure = ""

    async def _on_model(self, fn, *args, key: tuple = work_key(True)) -> Any:
        return await self._gate.run(key, fn, *args)

    async def _model_work(self, fn, *args, key: tuple = work_key(True)) -> Any:
        """Model work on the model thread (by priority), counted for the health check."""
        try:
            result = await self._on_model(fn, *args, key=key)
        except Exception as error:
            self.consecutive_failures += 1
            self._last_failure = f"{type(error).__name__}: {error}"[:500]
            raise
        self.consecutive_failures = 0
        return result

    def check_health(self) -> None:
        """Serve's periodic probe: unhealthy after K model failures in a row (then replaced)."""
        if self.consecutive_failures >= self.max_consecutive_failures:
            raise RuntimeError(
                f"Renderer: {self.consecutive_failures} model calls failed in a row "
                f"(limit {self.max_consecutive_failures}); last: {self._last_failure}"
            )

    async def velocities(
        self,
        latent: np.ndarray,
        starts: list[int],
        stops: list[int],
        ts: list[float],
        prompts: list[str],
        negatives: list[str],
        guidances: list[float],
        interactive: bool = True,
        priority: int = 0,
    ) -> list[np.ndarray]:
        """Guided velocity [C, T_w, H, W] of each window latent[:, start:stop] of one video.

        Interactive requests (a user waiting on /v1/videos) and campaign requests batch
        separately; on the model thread interactive batches go first, then campaigns by
        `priority` (see farm.serve.gate). A request with no other of its lane in flight
        here runs at once: waiting `batch_wait_s` for company that is not coming is pure
        latency. With others in flight it joins the batcher and shares their forwards.
        """
        request = (latent, starts, stops, ts, prompts, negatives, guidances)
        alone = self._in_flight[interactive] == 0
        self._in_flight[interactive] += 1
        try:
            if alone:
                self.alone_requests += 1
                return (await self._run_batch([request], work_key(interactive, priority)))[0]
            if interactive:
                return await self._batch(request)
            return await self._bulk_batch((request, priority))
        finally:
            self._in_flight[interactive] -= 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _batch(self, requests: list[StepsRequest]) -> list[list[np.ndarray]]:
        """Interactive videos' window-steps, run through the worker together."""
        return await self._run_batch(requests, work_key(True))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _bulk_batch(self, requests: list[tuple[StepsRequest, int]]) -> list:
        """Campaign videos' window-steps; the batch runs at its best campaign's priority."""
        key = work_key(False, max(priority for _, priority in requests))
        return await self._run_batch([r for r, _ in requests], key)

    async def _run_batch(self, requests: list[StepsRequest], key: tuple) -> list:
        """Window-steps of many videos' requests, run through the worker together."""
        per_request = [unpack_steps(*r) for r in requests]
        flat = [s for steps in per_request for s in steps]
        self.videos_per_batch.append(len(requests))
        metrics.record_batch(self.preset, len(requests), len(flat))  # metrics
        if key == work_key(True):
            vs = await self._model_work(self.worker.run_steps, flat, key=key)
        else:  # one forward's worth at a time, so interactive work can go in between
            vs = []
            for part in _forwards(flat, self.bulk_forward_rows):
                vs += await self._model_work(self.worker.run_steps, part, key=key)
        out, k = [], 0
        for steps in per_request:
            out.append([v.numpy() for v in vs[k : k + len(steps)]])
            k += len(steps)
        return out

    async def decode_chunk(
        self, z: np.ndarray, start: int, stop: int, interactive: bool = True, priority: int = 0
    ) -> np.ndarray:
        """uint8 frames [F, H, W, 3] of latent frames [start, stop) of z [1, C, T, H, W]."""
        key = work_key(interactive, priority)
        frames = await self._model_work(self.worker.decode_chunk, z, start, stop, key=key)
        return frames.numpy()

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent for a video of this size."""
        return tuple(self.worker.latent_shape(frames, height, width))

    def timesteps(self, steps: int, frames: int, height: int, width: int) -> list[float]:
        """The model's sampling schedule for a video of this size (flow times, 1 → 0)."""
        return self.worker.timesteps(steps, frames, height, width)

    async def model_info(self) -> dict[str, str]:
        """{"model": preset, "weights_sha256": ...} of this replica's model (hashed once)."""
        if self._info is None:
            self._info = await self._on_model(self.worker.model_info)
        return self._info

    def stats(self) -> dict[str, Any]:
        """ModelWorker counters plus forward batch sizes and videos merged per batch."""
        return {
            **self.worker.stats(),
            "pid": os.getpid(),
            "consecutive_failures": self.consecutive_failures,
            "alone_requests": self.alone_requests,
            "batch_sizes": list(self.worker.batch_sizes[-1000:]),
            "videos_per_batch": list(self.videos_per_batch[-1000:]),
            "served": [[*key, enq, start] for key, enq, start in self._gate.served],
        }
