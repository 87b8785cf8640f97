"""LTX-Video 0.9.x (`LTXPipeline`, `LTXImageToVideoPipeline`) behind the model contract.

Facts of the family, each handled here:

- Frames 8n+1 and sides in multiples of 32 (VAE stride (8, 32, 32), patch 1), from the
  configs (`configs._ltx`).
- The transformer takes packed tokens [B, T·H·W, C]: `velocity` packs and unpacks with
  the pipeline's own `_pack_latents` / `_unpack_latents`. Its rotary positions are scaled
  by (temporal stride / frame rate, spatial stride, spatial stride), so the frame rate is
  a property of the adapter (`frame_rate`, the pipeline's default 25 unless given).
- Text: T5 embeddings padded to 128 tokens with a real attention mask.
- Every checkpoint takes known frames as `LTXImageToVideoPipeline` does: clean latents
  with timestep 0 on their tokens ("timestep" conditioning). The image's latent is the
  VAE's mode; that pipeline draws a sample from the VAE's distribution instead.
- Time shift depends on the token count (`use_dynamic_shifting`): the pipeline's
  exponential shift with mu(tokens) is the flow shift ``exp(mu)``; `shift_for` gives it.
- Latents are normalised with the VAE's `latents_mean` / `latents_std` (and scaling
  factor), as the pipeline does. Decoding uses `decode_timestep` (0.03 in the 0.9.1+
  examples; the pipeline's default 0) without decode noise, so it is deterministic.
- The decoder is not causal: a chunk needs context on both sides. `decode_context` is the
  decoder's reach measured on itself (`measure_decoder_reach`: every conv, norm and
  upsampler acts per frame or over a bounded window, so the reach is finite). With it, a
  chunk equals the full decode up to float rounding: measured max 2.6e-6 in [-1, 1], so
  at most 1 uint8 level (tests/model/diffusers/test_ltx.py asserts < 1e-5 and <= 1 level;
  with one latent frame of context instead the seams visibly differ).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from model.conditioning import ImageCond
from model.diffusers.base import DiffusersVideoModel, call_default
from model.text import TextCond


class LTXModel(DiffusersVideoModel):
    """An LTX-Video 0.9.x text-to-video checkpoint."""

    family = "ltx"
    REQUIRED = ("vae", "text_encoder", "tokenizer", "scheduler", "transformer")

    def __init__(
        self, pipe, *, frame_rate: float | None = None, decode_timestep: float | None = None, **kw
    ):
        self.frame_rate = float(frame_rate or call_default(pipe, "frame_rate"))
        self.decode_timestep = float(
            call_default(pipe, "decode_timestep") if decode_timestep is None else decode_timestep
        )
        super().__init__(pipe, **kw)

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.latent_channels

    @property
    def image_conditioning(self) -> str:
        return "timestep"

    @property
    def token_patch(self) -> tuple[int, int]:
        p = self.pipe.transformer.config.patch_size
        return (p, p)

    # --- schedule -------------------------------------------------------------------
    def _mu(self, frames: int | None, height: int | None, width: int | None) -> float:
        """The pipeline's shift exponent for a clip (its defaults where not given)."""
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

        frames = frames or call_default(self.pipe, "num_frames")
        height = height or call_default(self.pipe, "height")
        width = width or call_default(self.pipe, "width")
        T = self.geometry.latent_frames(frames)
        H, W = height // self.geometry.spatial_stride, width // self.geometry.spatial_stride
        cfg = self.pipe.scheduler.config
        return calculate_shift(
            T * H * W,
            cfg.get("base_image_seq_len", 256),
            cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5),
            cfg.get("max_shift", 1.15),
        )

    def shift_for(self, frames: int, height: int, width: int) -> float:
        """Flow time shift the pipeline uses for a clip of this size."""
        if not self.pipe.scheduler.config.get("use_dynamic_shifting"):
            return float(self.pipe.scheduler.config.get("shift", 1.0))
        return math.exp(self._mu(frames, height, width))

    def scheduler_shift(self) -> float:
        """The shift at the pipeline's default size (LTX's shift grows with the token count)."""
        return self.shift_for(None, None, None)

    def timesteps(
        self,
        steps: int,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> Tensor:
        """The pipeline's sigmas for a clip of this size, as flow times [steps + 1]."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        scheduler.set_timesteps(sigmas=sigmas, mu=self._mu(frames, height, width))
        return scheduler.sigmas.float()

    # --- text and velocity ----------------------------------------------------------
    def _encode_prompts(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        emb, mask, _, _ = self.pipe.encode_prompt(
            prompt=prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.config.text_max_len,
            device=self.pipe.text_encoder.device,
        )
        return emb, mask

    def _velocity(
        self, x: Tensor, t: Tensor, cond: TextCond, image: ImageCond | None = None
    ) -> Tensor:
        pipe = self.pipe
        _, _, T, H, W = x.shape
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        s = self.geometry.spatial_stride
        timestep = t * 1000
        if image is not None:
            x = image.apply(x)
            known = image.mask(T).repeat_interleave((H // p) * (W // p), dim=1)  # (B, tokens)
            timestep = torch.where(known, torch.zeros_like(known, dtype=t.dtype), timestep[:, None])
        tokens = pipe._pack_latents(x.to(self.dtype), p, pt)  # (B, T·H·W, C)
        v = pipe.transformer(
            hidden_states=tokens,
            encoder_hidden_states=cond.emb,
            timestep=timestep,
            encoder_attention_mask=cond.mask,
            num_frames=T,
            height=H,
            width=W,
            rope_interpolation_scale=(self.geometry.temporal_stride / self.frame_rate, s, s),
            return_dict=False,
        )[0]
        return pipe._unpack_latents(v.float(), T, H, W, p, pt)  # (B, C, T, H, W)

    # --- pixels ---------------------------------------------------------------------
    def _decode(self, z: Tensor) -> Tensor:
        vae = self.pipe.vae
        z = self.pipe._denormalize_latents(
            z.float(), vae.latents_mean, vae.latents_std, vae.config.scaling_factor
        ).to(vae.dtype)
        temb = None
        if vae.config.timestep_conditioning:
            temb = torch.full((z.shape[0],), self.decode_timestep, device=z.device, dtype=z.dtype)
        return vae.decode(z, temb, return_dict=False)[0]

    def _encode_video(self, x: Tensor) -> Tensor:
        vae = self.pipe.vae
        z = vae.encode(x.to(vae.dtype)).latent_dist.mode()
        return self.pipe._normalize_latents(
            z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
        )


ADAPTER = LTXModel
