"""What a model accepts, in frames and pixels: the one owner of every frame and size rule.

A latent video model compresses `temporal_stride` pixel frames into one latent frame after
a first frame of its own (a causal VAE), so it takes ``stride·n + 1`` frames (4n+1 here,
8n+1 for LTX-Video), and `spatial_stride` × patch pixels into one token, so width and
height are multiples of `pixel_multiple`. `max_frames` is the longest clip it renders in
one piece: longer videos are windowed, each window at most this long.

The farm never does this arithmetic itself: spec validation, `VideoJob`, the seam metric,
the CLI and the HTTP schemas ask a `Geometry`, and its errors name the model's rule
(``width 1000 must be a multiple of 16 (model 'small')``).

Importing this module needs neither torch nor ray (a `Geometry` comes from a `ModelConfig`,
or `geometry_of` reads a checkpoint's config.json).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Geometry(BaseModel):
    """A model's frame rule, strides, pixel multiple and longest clip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="The model these facts belong to (named in every error).")
    temporal_stride: int = Field(ge=1, description="Pixel frames per latent frame.")
    spatial_stride: int = Field(ge=1, description="Pixels per latent row and column.")
    pixel_multiple: int = Field(
        ge=1,
        description="Width and height are multiples of this: spatial stride x patch, so one "
        "transformer token per pixel_multiple x pixel_multiple pixels of a latent frame.",
    )
    max_frames: int = Field(ge=1, description="Longest clip (pixel frames) in one forward.")
    latent_step: int = Field(
        1,
        ge=1,
        description="A whole clip's latent frames after the first come in multiples of this: "
        "CogVideoX's VAE decodes only odd latent counts, so its clips are 8n+1 frames at "
        "temporal stride 4. Windows inside a clip may have any length.",
    )

    # --- time --------------------------------------------------------------------------
    @property
    def frame_period(self) -> int:
        """Valid clip lengths differ by this many pixel frames (stride x latent step)."""
        return self.temporal_stride * self.latent_step

    @property
    def frame_rule(self) -> str:
        """The valid frame counts, as users read them: '4n+1'."""
        return f"{self.frame_period}n+1"

    def is_valid_frames(self, frames: int) -> bool:
        """Whether `frames` pixel frames fit the frame rule."""
        return isinstance(frames, int) and frames >= 1 and (frames - 1) % self.frame_period == 0

    def check_frames(self, frames: int) -> None:
        """Raise a ValueError naming the model's rule unless `frames` fits it."""
        if not self.is_valid_frames(frames):
            p = self.frame_period
            raise ValueError(
                f"frames must be of the form {self.frame_rule} (1, {1 + p}, {1 + 2 * p}, ...) "
                f"for model {self.model!r}, got {frames!r}"
            )

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of `frames` pixel frames (checked against the rule)."""
        self.check_frames(frames)
        return (frames - 1) // self.temporal_stride + 1

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from `latent_frames` latent frames (the rule's inverse)."""
        if latent_frames < 1:
            raise ValueError(f"latent_frames must be >= 1, got {latent_frames}")
        return (latent_frames - 1) * self.temporal_stride + 1

    def first_pixel_frame(self, latent_frame: float) -> float:
        """The first pixel frame that latent frame `latent_frame` decodes to.

        Latent frame 0 is pixel frame 0; latent b >= 1 starts the stride after the first.
        A fractional latent frame (a window's middle) maps linearly between its neighbours.
        """
        return max(0, (latent_frame - 1) * self.temporal_stride + 1)

    def frames_for(self, seconds: float, fps: float) -> int:
        """The valid frame count closest to `seconds` at `fps` (at least one stride long)."""
        if not seconds > 0 or not fps > 0:
            raise ValueError(f"seconds and fps must be positive, got {seconds} s at {fps} fps")
        n = max(1, round(seconds * fps / self.frame_period))
        return self.frame_period * n + 1

    def frame_counts(self, seconds: Any, fps: Any) -> np.ndarray:
        """`frames_for` over arrays of durations and rates (int32; for whole campaigns).

        np.round and round() both round half to even, so each count equals `frames_for`'s.
        """
        seconds, fps = np.asarray(seconds, np.float64), np.asarray(fps)
        if not (np.all(seconds > 0) and np.all(fps > 0)):
            raise ValueError("seconds and fps must be positive")
        n = np.maximum(1, np.round(seconds * fps / self.frame_period))
        return (self.frame_period * n + 1).astype(np.int32)

    @property
    def max_latent_frames(self) -> int:
        """Latent frames of the longest clip one forward takes (a window's upper bound)."""
        return (self.max_frames - 1) // self.temporal_stride + 1

    # --- space -------------------------------------------------------------------------
    def side_problem(self, value: int) -> str | None:
        """Why `value` cannot be a width or height ('1000 must be ...'), or None if it can.

        For messages that name the side themselves, e.g. ``formats[1].width: 1000 must be
        a positive multiple of 16 (model 'small')``.
        """
        m = self.pixel_multiple
        try:
            side = operator.index(value)  # numpy integers too; floats and text are not sides
        except TypeError:
            side = 0
        if side < m or side % m:
            return f"{value!r} must be a positive multiple of {m} (model {self.model!r})"
        return None

    def check_side(self, name: str, value: int) -> None:
        """Raise a ValueError naming `name` and the rule unless `value` is a valid side."""
        problem = self.side_problem(value)
        if problem:
            raise ValueError(f"{name} {problem}")

    def check_size(self, width: int, height: int) -> None:
        """Raise a ValueError naming the side that breaks the pixel-multiple rule."""
        self.check_side("width", width)
        self.check_side("height", height)

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        """(latent height, latent width) of a `width` x `height` frame (checked)."""
        self.check_size(width, height)
        return height // self.spatial_stride, width // self.spatial_stride

    def latent_shape(
        self, channels: int, frames: int, height: int, width: int
    ) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent of a `frames` x `height` x `width` clip (checked)."""
        T = self.latent_frames(frames)
        H, W = self.latent_size(width, height)
        return (channels, T, H, W)

    def latent_tokens(self, frames: Any, width: Any, height: Any) -> np.ndarray:
        """Transformer tokens of clips (arrays or numbers): latent frames x token rows x cols.

        Unchecked arithmetic for cost estimates over whole campaigns: the counts are
        assumed valid (they come from `frame_counts` and checked sizes).
        """
        latent = (np.asarray(frames, np.int64) - 1) // self.temporal_stride + 1
        m = self.pixel_multiple
        return latent * (np.asarray(height, np.int64) // m) * (np.asarray(width, np.int64) // m)

    def describe(self) -> str:
        """One line a user can act on: the model's frame and size rules."""
        return (
            f"model {self.model!r}: frames {self.frame_rule}, width and height multiples of "
            f"{self.pixel_multiple}, at most {self.max_frames} frames per window"
        )


def geometry_of(ref: str) -> Geometry:
    """The geometry of a model reference (preset name or checkpoint URL), torch-free.

    A preset answers from its config; a checkpoint directory from its config.json, and a
    ``diffusers:<dir or URL>`` folder from its JSON configs, so validating a spec never
    loads weights.
    """
    from model.config import PRESETS, ModelConfig  # here: model.config imports this module

    if ref in PRESETS:
        return PRESETS[ref].geometry
    if ref.startswith("diffusers:"):
        from model.diffusers.configs import geometry_of_ref

        return geometry_of_ref(ref)
    import json

    import fsspec

    url = ref.rstrip("/") + "/config.json"
    try:
        with fsspec.open(url, "rb") as f:
            header = json.loads(f.read())
        return ModelConfig.model_validate(header["config"]).geometry
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"model {ref!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a "
            f"checkpoint with a readable config.json: {e}"
        ) from None
