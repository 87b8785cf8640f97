"""`VideoModel`: the VAE, text encoder and transformer behind one checked interface.

This is the object the farm holds: `latent_shape`, `encode_text`, `velocity`
(batched or packed), `decode` and `encode`. Every input from outside is checked here and
gets a ValueError naming the rule, never a stack trace from deep inside torch.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn
from torch import Tensor

from model.checkpoint import state_bytes
from model.checks import check_cond, check_latent, check_t, describe
from model.conditioning import ConditioningNotSupported, ImageCond
from model.config import ModelConfig
from model.dit import DiT
from model.geometry import Geometry
from model.sampling import flow_timesteps
from model.text import TextCond, TextEncoder
from model.vae import CausalVideoVAE


class VideoModel(nn.Module):
    """A latent video diffusion model: text → velocity in latent space → pixels."""

    # How known frames would enter (`model.conditioning`): not yet, the DiT takes one t
    # per sample; the `small` preset learns first-frame conditioning in a later retraining.
    image_conditioning: str | None = None

    def __init__(self, config: ModelConfig, zero_init: bool = True):
        super().__init__()
        self.config = config
        self.vae = CausalVideoVAE(config)
        self.text = TextEncoder(config)
        self.dit = DiT(config)
        self.dit.init_weights(zero_init=zero_init)
        self.weights_sha256: str | None = None  # set by model.load from the checkpoint

    def weights_digest(self) -> str:
        """sha256 of the weights (from the checkpoint, or computed once for a fresh init)."""
        if self.weights_sha256 is None:
            self.weights_sha256 = hashlib.sha256(state_bytes(self)).hexdigest()
        return self.weights_sha256

    # --- shapes ----------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def vae_stride(self) -> tuple[int, int, int]:
        return self.config.vae_stride

    @property
    def geometry(self) -> Geometry:
        """Frame rule, strides, pixel multiple and longest clip (`model.geometry`)."""
        return self.config.geometry

    @property
    def device(self) -> torch.device:
        return self.dit.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.dit.head.weight.dtype

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent for a video of `frames` x `height` x `width` pixels."""
        return self.geometry.latent_shape(self.latent_channels, frames, height, width)

    def timesteps(
        self,
        steps: int,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> Tensor:
        """This model's sampling schedule: flow times [steps + 1] from 1 to 0 (its shift).

        The size is unused here (some models' schedules depend on it, e.g. LTX-Video's).
        """
        return flow_timesteps(steps, self.config.shift)

    # --- text ------------------------------------------------------------------------
    def encode_text(self, prompts: list[str]) -> TextCond:
        """Encode prompts in any script; "" is the unconditional prompt."""
        with torch.no_grad():
            cond = self.text.encode(list(prompts) if not isinstance(prompts, str) else prompts)
        return cond.to(dtype=self.dtype)

    # --- velocity --------------------------------------------------------------------
    def _check_latent(self, x: Tensor, name: str, batched: bool = True) -> None:
        patch = tuple(self.config.patch_size[1:])
        check_latent(
            x, name, channels=self.latent_channels, patch=patch, device=self.device, batched=batched
        )

    def _check_t(self, t: Tensor | float, batch: int) -> Tensor:
        return check_t(t, batch, self.device)

    def _check_cond(self, cond: TextCond, batch: int) -> TextCond:
        return check_cond(cond, batch, self.device, self.dtype)

    def _no_image(self) -> ConditioningNotSupported:
        return ConditioningNotSupported(
            f"model {self.config.name!r} (the bundled network) does not support image "
            "conditioning yet: its DiT takes one timestep per sample, and first-frame "
            "conditioning comes with its retraining; use a diffusers checkpoint whose "
            "image_conditioning is set (Wan 2.2 TI2V, Wan I2V, LTX-Video)"
        )

    def encode_image(self, frames: Tensor, *, latent_frames: int | None = None) -> ImageCond:
        """Known frames for image-to-video: not supported by this model yet (raises)."""
        raise self._no_image()

    @torch.no_grad()
    def velocity(
        self, x: Tensor, t: Tensor | float, cond: TextCond, image: ImageCond | None = None
    ) -> Tensor:
        """Flow-matching velocity of latents x [B, C, T, H, W] at per-sample times t [B]."""
        if image is not None:
            raise self._no_image()
        self._check_latent(x, "x")
        B = x.shape[0]
        return self.dit(x.to(self.dtype), self._check_t(t, B), self._check_cond(cond, B))

    @torch.no_grad()
    def velocity_packed(
        self,
        xs: list[Tensor],
        t: Tensor,
        cond: TextCond,
        images: list[ImageCond | None] | None = None,
    ) -> list[Tensor]:
        """Velocity of clips of different shapes [C, T_i, H_i, W_i] in one packed forward."""
        if images is not None and any(image is not None for image in images):
            raise self._no_image()
        if not xs:
            raise ValueError("xs must hold at least one latent clip")
        for i, x in enumerate(xs):
            self._check_latent(x, f"xs[{i}]", batched=False)
        N = len(xs)
        return self.dit.forward_packed(
            [x.to(self.dtype) for x in xs], self._check_t(t, N), self._check_cond(cond, N)
        )

    # --- pixels ----------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Latents z [B, C, T, H, W] → uint8 video [B, F, 8H, 8W, 3], F = 4(T-1)+1."""
        self._check_latent(z, "z")
        return to_uint8(self.vae.decode(z.to(self.dtype)))

    @torch.no_grad()
    def decode_chunk(self, z: Tensor, start: int, stop: int) -> Tensor:
        """The uint8 frames of latent frames [start, stop), decoded with just enough context."""
        self._check_latent(z, "z")
        return to_uint8(self.vae.decode_chunk(z.to(self.dtype), start, stop))

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """uint8 video [B, F, H, W, 3] (F = 4n+1) → latents [B, C, T, H/8, W/8]."""
        if not isinstance(video, Tensor) or video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"video must be uint8 [B, F, H, W, 3], got {describe(video)}")
        if video.dtype != torch.uint8:
            raise ValueError(f"video must be uint8, got {video.dtype}")
        x = video.to(self.device).permute(0, 4, 1, 2, 3)  # (B, 3, F, H, W)
        x = x.to(self.dtype) / 127.5 - 1.0
        return self.vae.encode(x)


def to_uint8(x: Tensor) -> Tensor:
    """VAE output [B, 3, F, H, W] in [-1, 1] → uint8 [B, F, H, W, 3]."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).contiguous()  # (B, F, H, W, 3)
