"""`DiffusersVideoModel`: the model contract (`model.VideoModel`'s) over a diffusers pipeline.

The adapter holds the pipeline itself and calls its own methods (prompt encoding, latent
packing, rotary tables), so the numbers are the pipeline's. A family module subclasses it
with what really differs: text length and mask, how the transformer is called, and how
latents are normalised for the VAE. Everything here is shared: input checks, uint8
conversion, chunked decode with measured context, the weights digest.

Latents seen by the farm are the pipeline's own diffusion latents (normalised, [B, C, T,
H, W]); `velocity` returns ε − x0 at flow time t in [0, 1] (diffusers' timestep = 1000·t).
Known frames (`image=`, `model.conditioning`) enter as the family's image-to-video
pipeline takes them; on "timestep" families this class sets their velocity to 0.
"""

from __future__ import annotations

import abc
import inspect
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from model.checks import check_cond, check_latent, check_t, describe
from model.conditioning import ConditioningNotSupported, ImageCond, check_image
from model.diffusers.cache import folder_digest
from model.diffusers.configs import checkpoint_geometry
from model.geometry import Geometry
from model.text import TextCond
from model.video import to_uint8


class DiffusersConfig(BaseModel):
    """What the farm may ask of a diffusers checkpoint, beside its geometry."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The reference it was loaded from (provenance).")
    family: str = Field(description="'wan', 'ltx' or 'cogvideox'.")
    pipeline: str = Field(description="The diffusers pipeline class in model_index.json.")
    shift: float = Field(description="Flow time shift of the checkpoint's scheduler.")
    steps: int = Field(description="The pipeline's default number of steps.")
    guidance: float = Field(description="The pipeline's default guidance scale.")
    text_max_len: int = Field(description="Tokens every prompt is padded (and cut) to.")


def call_default(pipe: Any, name: str) -> Any:
    """The default of argument `name` of the pipeline's __call__ (diffusers owns it)."""
    return inspect.signature(type(pipe).__call__).parameters[name].default


class DiffusersVideoModel(abc.ABC):
    """A diffusers text-to-video pipeline behind the model contract (see module docstring).

    Each family (`wan`, `ltx`, `cogvideox`) implements the abstract methods: its latent
    channels, its scheduler's schedule, its prompt encoding, its transformer call and its VAE.
    """

    family: ClassVar[str]
    REQUIRED: ClassVar[tuple[str, ...]] = ("vae", "text_encoder", "tokenizer", "scheduler")
    # Margin (latent frames) added to each measured decoder reach, against reaches that the
    # probe under-measures because a far influence rounds below its tolerance.
    DECODE_MARGIN: ClassVar[int] = 1

    def __init__(self, pipe: Any, *, ref: str, folder: Path, device: torch.device, dtype):
        self.pipe = pipe
        self.folder = folder
        self._device = device
        self._dtype = dtype
        self.geometry: Geometry = checkpoint_geometry(str(folder), ref)
        self.config = DiffusersConfig(
            name=ref,
            family=self.family,
            pipeline=type(pipe).__name__,
            shift=self.scheduler_shift(),
            steps=call_default(pipe, "num_inference_steps"),
            guidance=call_default(pipe, "guidance_scale"),
            text_max_len=call_default(pipe, "max_sequence_length"),
        )
        self.weights_sha256: str | None = None
        self._decode_context: tuple[int, int] | None = None

    # --- facts ----------------------------------------------------------------------
    def scheduler_shift(self) -> float:
        """Flow time shift of the scheduler config (`shift` or `flow_shift`; 1 if none)."""
        cfg = self.pipe.scheduler.config
        return float(cfg.get("flow_shift") or cfg.get("shift") or 1.0)

    @property
    def default_shift(self) -> float:
        return self.config.shift

    @property
    def default_steps(self) -> int:
        return self.config.steps

    @property
    def default_guidance(self) -> float:
        return self.config.guidance

    def weights_digest(self) -> str:
        """sha256 over the folder's files (the same for a local folder and its cached copy)."""
        if self.weights_sha256 is None:
            self.weights_sha256 = folder_digest(self.folder)
        return self.weights_sha256

    @property
    @abc.abstractmethod
    def latent_channels(self) -> int:
        """Channels of the diffusion latent (the VAE's, or the transformer's input)."""

    @property
    def image_conditioning(self) -> str | None:
        """How known frames enter: "timestep", "channels" or None (`model.conditioning`)."""
        return None

    @property
    def vae_stride(self) -> tuple[int, int, int]:
        g = self.geometry
        return (g.temporal_stride, g.spatial_stride, g.spatial_stride)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def token_patch(self) -> tuple[int, int]:
        """Latent rows and columns per transformer token."""
        m = self.geometry.pixel_multiple // self.geometry.spatial_stride
        return (m, m)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent for a video of `frames` x `height` x `width` pixels."""
        return self.geometry.latent_shape(self.latent_channels, frames, height, width)

    @abc.abstractmethod
    def timesteps(
        self,
        steps: int,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> Tensor:
        """The checkpoint scheduler's Euler schedule as flow times [steps + 1], 1 → 0."""

    # --- text -----------------------------------------------------------------------
    @abc.abstractmethod
    def _encode_prompts(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Embeddings [B, L, D] and mask [B, L] of the pipeline's own prompt encoding."""

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> TextCond:
        """Encode prompts with the pipeline's text encoder; "" is the unconditional prompt."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of strings")
        emb, mask = self._encode_prompts(list(prompts))
        return TextCond(emb, mask.bool()).to(self.device, self.dtype)

    # --- velocity -------------------------------------------------------------------
    def _check_latent(self, x: Tensor, name: str) -> None:
        check_latent(x, name, channels=self.latent_channels, patch=self.token_patch)

    def _check_t(self, t: Tensor | float, batch: int) -> Tensor:
        return check_t(t, batch, self.device)

    def _check_cond(self, cond: TextCond, batch: int) -> TextCond:
        return check_cond(cond, batch, self.device, self.dtype)

    @abc.abstractmethod
    def _velocity(
        self, x: Tensor, t: Tensor, cond: TextCond, image: ImageCond | None = None
    ) -> Tensor:
        """The family's transformer: v = ε − x0 of x [B, C, T, H, W] at checked t and cond."""

    @torch.no_grad()
    def velocity(
        self, x: Tensor, t: Tensor | float, cond: TextCond, image: ImageCond | None = None
    ) -> Tensor:
        """Flow velocity ε − x0 of latents x [B, C, T, H, W] at per-sample times t [B].

        With `image`, its known frames condition the clip (`model.conditioning`); on a
        "timestep" model their velocity is 0 and x is not read there.
        """
        self._check_latent(x, "x")
        B = x.shape[0]
        t, cond = self._check_t(t, B), self._check_cond(cond, B)
        if image is None:
            if self.image_conditioning == "channels":
                raise ValueError(
                    f"{self.config.name} is an image-to-video checkpoint "
                    f"({self.config.pipeline}): pass image=m.encode_image(frames)"
                )
            return self._velocity(x.to(self.device), t, cond).to(x.dtype)
        if self.image_conditioning is None:
            raise self._no_image()
        image = check_image(image, x, self.latent_channels)
        v = self._velocity(x.to(self.device), t, cond, image)
        if self.image_conditioning == "timestep":
            known = image.mask(x.shape[2])[:, None, :, None, None]  # (B, 1, T, 1, 1)
            v = torch.where(known, torch.zeros((), dtype=v.dtype, device=v.device), v)
        return v.to(x.dtype)

    @torch.no_grad()
    def velocity_packed(
        self,
        xs: list[Tensor],
        t: Tensor,
        cond: TextCond,
        images: list[ImageCond | None] | None = None,
    ) -> list[Tensor]:
        """Velocity of clips of different shapes [C, T_i, H_i, W_i], one forward each."""
        if not xs:
            raise ValueError("xs must hold at least one latent clip")
        t = self._check_t(t, len(xs))
        cond = self._check_cond(cond, len(xs))
        images = images if images is not None else [None] * len(xs)
        if len(images) != len(xs):
            raise ValueError(f"images has {len(images)} entries for {len(xs)} clips")
        return [
            self.velocity(x[None], t[i : i + 1], cond[i], image=images[i])[0]
            for i, x in enumerate(xs)
        ]

    # --- known frames ---------------------------------------------------------------
    def _no_image(self) -> ConditioningNotSupported:
        return ConditioningNotSupported(
            f"{self.config.name} ({self.config.pipeline}) does not support image "
            "conditioning: it is a text-to-video checkpoint without a per-token timestep "
            "or image channels"
        )

    @torch.no_grad()
    def encode_image(self, frames: Tensor, *, latent_frames: int | None = None) -> ImageCond:
        """Known leading frames from uint8 frames [B, F, H, W, 3] (F = 1: an image).

        "timestep" models take F on the frame rule (a video's head for extension) and
        know its latent frames; "channels" models take one image and encode it within a
        clip of `latent_frames` (default: the longest clip), of which any shorter clip
        uses the head (the VAE is causal). H, W are the video's size.
        """
        if self.image_conditioning is None:
            raise self._no_image()
        if not isinstance(frames, Tensor) or frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [B, F, H, W, 3], got {describe(frames)}")
        if self.image_conditioning == "channels":
            if frames.shape[1] != 1:
                raise ValueError(
                    f"{self.config.name} conditions on one image (frames [B, 1, H, W, 3]), "
                    f"got {frames.shape[1]} frames"
                )
            if frames.dtype != torch.uint8:
                raise ValueError(f"frames must be uint8, got {frames.dtype}")
            T = latent_frames or self.geometry.latent_frames(self.geometry.max_frames)
            return self._encode_image_channels(frames, T)
        return ImageCond.from_latents(self.encode(frames))

    def _encode_image_channels(self, frames: Tensor, latent_frames: int) -> ImageCond:
        """`encode_image` for a "channels" family (its pipeline's own recipe): Wan's; a family
        that declares channel conditioning must bring one."""
        raise ConditioningNotSupported(
            f"{type(self).__name__} declares channel conditioning but has no image recipe"
        )

    # --- pixels ---------------------------------------------------------------------
    @abc.abstractmethod
    def _decode(self, z: Tensor) -> Tensor:
        """Diffusion latents [B, C, T, H, W] → video [B, 3, F, H', W'] in [-1, 1]."""

    @abc.abstractmethod
    def _encode_video(self, x: Tensor) -> Tensor:
        """Video [B, 3, F, H, W] in [-1, 1] → diffusion latents (the VAE's mode)."""

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Latents z [B, C, T, H, W] → uint8 video [B, F, H·s, W·s, 3]."""
        self._check_latent(z, "z")
        return to_uint8(self._decode(z.to(self.device)))

    @property
    def decode_context(self) -> tuple[int, int] | None:
        """(before, after): latent frames of context `decode_chunk` decodes around a chunk.

        Measured once on the decoder itself (`measure_decoder_reach`) plus `DECODE_MARGIN`;
        None when the decoder has no bounded reach (chunks are cut from a full decode).
        """
        if self._decode_context is None:
            before, after = self.measure_decoder_reach()
            margin = self.DECODE_MARGIN
            self._decode_context = (before + 1 + margin, after + margin if after else 0)
        return self._decode_context

    @torch.no_grad()
    def measure_decoder_reach(self, probe: int = 8) -> tuple[int, int]:
        """(forward, backward): how many latent frames a change to one latent frame reaches.

        Decodes a small random latent (2 x 2 tokens, `2·probe + 1` frames) and the same
        latent with its middle frame changed, and finds the decoded frames that moved by
        more than one rounding step of the dtype (at least 1e-6) of the output scale.
        Time mixing in these decoders is convolutional, so the reach does not depend on
        the spatial size. The probe grows until the reach is inside it.
        """
        s = self.geometry.temporal_stride
        ph, pw = self.token_patch
        gen = torch.Generator().manual_seed(0)
        tolerance = max(1e-6, torch.finfo(self.dtype).eps)
        while True:
            n = 2 * probe + 1
            z = torch.randn(1, self.latent_channels, n, 2 * ph, 2 * pw, generator=gen)
            z = z.to(self.device, self.dtype)
            bumped = z.clone()
            bumped[:, :, probe] += 1.0
            a, b = self._decode(z).float(), self._decode(bumped).float()
            moved = (a - b).abs().amax(dim=(0, 1, 3, 4)) > tolerance * a.abs().max()
            frames = moved.nonzero().flatten().tolist()
            latents = [0 if f == 0 else (f - 1) // s + 1 for f in frames]
            forward, backward = max(latents) - probe, probe - min(latents)
            if max(forward, backward) < probe - 1 or probe >= 64:
                return forward, backward
            probe *= 2

    @torch.no_grad()
    def decode_chunk(self, z: Tensor, start: int, stop: int) -> Tensor:
        """The uint8 frames of latent frames [start, stop), decoded with `decode_context`.

        Latent 0 owns pixel frame 0 and latent i >= 1 owns frames s(i-1)+1 .. s·i (s the
        temporal stride). A decode of latents [lo, hi) gives pixel frame s·lo + k at
        output index k, so the chunk is cut from a decode of its context-padded range.
        With context at least the decoder's reach, every kept frame is the full decode's
        up to float rounding (tests/model/diffusers measure it per family).
        """
        return to_uint8(self.decode_chunk_float(z, start, stop))

    def decode_chunk_float(self, z: Tensor, start: int, stop: int) -> Tensor:
        """`decode_chunk` before uint8: video [B, 3, F, H, W] in [-1, 1] (for error bounds)."""
        self._check_latent(z, "z")
        T = z.shape[2]
        if not 0 <= start < stop <= T:
            raise ValueError(f"need 0 <= start < stop <= T (got start={start}, stop={stop}, T={T})")
        s = self.geometry.temporal_stride
        context = self.decode_context
        before, after = context if context is not None else (T, T)
        lo, hi = max(0, start - before), min(T, stop + after)
        with torch.no_grad():
            video = self._decode(z[:, :, lo:hi].to(self.device))  # (B, 3, s(hi-lo-1)+1, H, W)
        first = 0 if start == 0 else s * (start - 1) + 1
        last = s * (stop - 1) + 1
        return video[:, :, first - s * lo : last - s * lo]

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """uint8 video [B, F, H, W, 3] (F on the frame rule) → diffusion latents [B, C, T, h, w]."""
        if not isinstance(video, Tensor) or video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"video must be uint8 [B, F, H, W, 3], got {describe(video)}")
        if video.dtype != torch.uint8:
            raise ValueError(f"video must be uint8, got {video.dtype}")
        self.geometry.check_frames(video.shape[1])
        self.geometry.check_size(video.shape[3], video.shape[2])
        x = video.to(self.device).permute(0, 4, 1, 2, 3)  # (B, 3, F, H, W)
        return self._encode_video(x.to(self.dtype) / 127.5 - 1.0)
