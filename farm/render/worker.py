"""`ModelWorker`: one model replica's work, shared by every executor.

It holds the model once, caches prompt encodings, groups window-steps of the same shape
into forwards of at most `max_batch` (per-sample t, so steps of different videos at
different times share a forward), and decodes latent chunks. The in-process executor
wraps one; the Ray executor runs one per actor; the Serve Renderer holds one per replica.
"""

from __future__ import annotations

import resource
import threading
import time
from collections import OrderedDict, defaultdict
from typing import Any

import numpy as np
import torch
from torch import Tensor

import model
from farm.campaign.cost import device_label
from farm.render.dispatch import as_tensor, unpack_steps
from farm.render.engine import WindowStep, advance_windows
from farm.render.halo import HaloLayout, run_round, window_advancer
from farm.settings import setting_default
from model.diffusers import PREFIX as DIFFUSERS_PREFIX
from model.text import TextCond

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_options(ref: str, load: dict[str, Any]) -> dict[str, Any]:
    """`model.load` keywords for `ref` from `Settings.model_load`'s plain values: the dtype
    by name, and the text encoder, attention and cache options for diffusers checkpoints
    only (the bundled models take none of them)."""
    options = {k: v for k, v in load.items() if v is not None}
    dtype = options.pop("dtype", "auto")
    if dtype not in ("auto", *_DTYPES):
        raise ValueError(f"model_dtype must be auto or one of {sorted(_DTYPES)}, got {dtype!r}")
    if not ref.startswith(DIFFUSERS_PREFIX):
        options = {}
    if dtype in _DTYPES:
        options["dtype"] = _DTYPES[dtype]
    return options


class ModelWorker:
    """A model replica: velocities for window-steps, text encodings, chunk decodes."""

    def __init__(
        self,
        model_ref: str | model.VideoModel,
        *,
        max_batch: int = setting_default("renderer_max_batch"),
        device: str = "cpu",
        threads: int | None = None,
        cache_size: int = 512,
        load: dict[str, Any] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if threads:
            torch.set_num_threads(threads)
        self.model = (
            model_ref
            if not isinstance(model_ref, str)
            else model.load(model_ref, device=device, **load_options(model_ref, load or {}))
        )
        self.max_batch = max_batch
        self.cache_size = cache_size
        # Where the forwards run, as calibrations name it (farm.campaign.cost).
        self.device = device_label(_parameter_device(self.model) or device)
        self._conds: OrderedDict[tuple[str, str], TextCond] = OrderedDict()
        self.encoded = 0  # prompts encoded (cache misses), for tests and metrics
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []  # one entry per forward, for tests and metrics
        self.busy_seconds = 0.0

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent for a video of this size."""
        return self.model.latent_shape(frames, height, width)

    def timesteps(self, steps: int, frames: int, height: int, width: int) -> list[float]:
        """The model's sampling schedule for a video of this size (flow times, 1 → 0)."""
        return self.model.timesteps(steps, frames, height, width).float().tolist()

    def model_info(self) -> dict[str, str]:
        """Which model this replica holds: preset name and weights sha256 (for provenance),
        and the device it runs on (for render-time calibration)."""
        return {
            "model": self.model.config.name,
            "weights_sha256": self.model.weights_digest(),
            "device": self.device,
        }

    def encode(self, prompts: list[str]) -> TextCond:
        """Encodings of `prompts`, batched into one TextCond, from an LRU cache keyed by
        the weights' digest and the prompt: a prompt is encoded once per replica, not once
        per window-step (`encoded` counts the encodings).

        Thread-safe: a Renderer replica may run an interactive call beside a campaign one.
        """
        with self._lock:
            digest = self.model.weights_digest()  # computed once per model
            keys = [(digest, p) for p in prompts]
            for key in dict.fromkeys(k for k in keys if k not in self._conds):
                # Alone, not batched with others: an encoding must not depend on its
                # neighbours' padding, or the same prompt and seed would not give the same file.
                self._conds[key] = self.model.encode_text([key[1]])
                self.encoded += 1
            for key in keys:
                self._conds.move_to_end(key)
            conds = [self._conds[k] for k in keys]
            while len(self._conds) > self.cache_size:
                self._conds.popitem(last=False)
        return TextCond.cat(conds)

    def velocities(self, xs: list[Tensor], ts: list[float], prompts: list[str]) -> list[Tensor]:
        """Velocity of each latent xs[i] [C, T, H, W] at ts[i] under prompts[i]."""
        start = time.perf_counter()
        out: list[Tensor | None] = [None] * len(xs)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, x in enumerate(xs):
            groups[tuple(x.shape)].append(i)
        device, dtype = self.model.device, self.model.dtype
        for idx in groups.values():
            for k in range(0, len(idx), self.max_batch):
                chunk = idx[k : k + self.max_batch]
                x = torch.stack([xs[i] for i in chunk]).to(device=device, dtype=dtype)
                t = torch.tensor([ts[i] for i in chunk], dtype=torch.float32, device=device)
                v = self.model.velocity(x, t, self.encode([prompts[i] for i in chunk]))
                v = v.float().cpu()
                self.batch_sizes.append(len(chunk))
                for j, i in enumerate(chunk):
                    out[i] = v[j]
        self.busy_seconds += time.perf_counter() - start
        return out  # type: ignore[return-value]

    def run_steps(self, steps: list[WindowStep]) -> list[Tensor]:
        """Guided velocities of window-steps: both CFG branches of a step share one batch."""
        xs, ts, prompts, guided = [], [], [], []
        for s in steps:
            xs.append(s.x)
            ts.append(s.t)
            prompts.append(s.prompt)
            if s.guidance != 1:
                guided.append(s)
        for s in guided:  # unconditional branches go after, in the same forwards
            xs.append(s.x)
            ts.append(s.t)
            prompts.append(s.negative_prompt)
        vs = self.velocities(xs, ts, prompts)
        out, k = [], len(steps)
        for i, s in enumerate(steps):
            v = vs[i]
            if s.guidance != 1:
                v_u = vs[k]
                k += 1
                v = v_u + s.guidance * (v - v_u)
            out.append(v)
        return out

    def run_arrays(self, latent, starts, stops, ts, prompts, negatives, guidances) -> list:
        """run_steps on windows of one shared latent array (what Ray actors receive)."""
        steps = unpack_steps(latent, starts, stops, ts, prompts, negatives, guidances)
        return [v.numpy() for v in self.run_steps(steps)]

    def advance(self, x, windows, ts, prompts, negative, guidance) -> list[Tensor]:
        """Run each window of x [1, C, T, H, W] through the steps `ts` here, with no fusion."""
        return advance_windows(self.run_steps, x, windows, ts, prompts, negative, guidance)

    def advance_arrays(self, latent, windows, ts, prompts, negative, guidance) -> list:
        """advance on a latent array [C, T, H, W] (for Ray actors)."""
        x = as_tensor(latent)[None]
        return [w[0].numpy() for w in self.advance(x, windows, ts, prompts, negative, guidance)]

    def window_round(
        self,
        layout: HaloLayout,
        g: int,
        ts: list[float],
        prompts: list[str],
        negative: str,
        guidance: float,
        *received,
    ) -> list:
        """One halo-exchange task (see farm.render.halo.run_round), then a token that it ran here.

        The token is small, so whoever waits on a round can check it without fetching
        the latents.
        """
        advance = window_advancer(self.run_steps, negative, guidance)
        return [*run_round(layout, g, ts, prompts, received, advance), g]

    def decode_chunk(self, z: Tensor | np.ndarray, start: int, stop: int) -> Tensor:
        """uint8 frames [F, H, W, 3] of latent frames [start, stop) of z [1, C, T, H, W]."""
        t0 = time.perf_counter()
        z = as_tensor(z)
        frames = self.model.decode_chunk(z.to(self.model.device), start, stop)[0].cpu()
        self.busy_seconds += time.perf_counter() - t0
        return frames

    def stats(self) -> dict:
        """Counters: forwards, batch sizes, busy seconds, peak RSS of this process (MiB)."""
        return {
            "forwards": len(self.batch_sizes),
            "window_steps": sum(self.batch_sizes),
            "max_batch_seen": max(self.batch_sizes, default=0),
            "busy_seconds": self.busy_seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def _parameter_device(m: object) -> torch.device | None:
    """The device of a model's first parameter, None when it has none to ask."""
    parameters = getattr(m, "parameters", None)
    try:
        return next(iter(parameters())).device if callable(parameters) else None
    except StopIteration:
        return None
