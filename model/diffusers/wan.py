"""Wan 2.1 / 2.2 (`WanPipeline`) behind the model contract.

Facts of the family, each handled here:

- Text: UMT5 embeddings are cut to each prompt's length and zero-padded to the pipeline's
  `max_sequence_length` (512). The transformer's cross-attention has no mask, so every
  prompt is always padded to that length and never trimmed; the mask is all True.
- Time: the transformer takes timestep = 1000·t and returns ε − x0 (flow matching).
- Wan 2.2 A14B has two experts: `transformer` for timesteps >= boundary_ratio·1000 (high
  noise) and `transformer_2` below it; a batch with mixed t is split by expert.
- Wan 2.2 TI2V-5B (`expand_timesteps`) takes one timestep per token, as its pipeline does.
- Latents are the VAE's, normalised per channel by `latents_mean` / `latents_std`.
- The VAE is causal in time, so a chunk needs context before it only, and with the
  measured reach a chunk is exact (0 levels in the tests). That reach is long: every
  causal conv at the latent rate adds two frames, so the tiny test VAE reaches 25 latent
  frames forward (context 27); the 1.3B/14B VAE, with more blocks, reaches further, so a
  chunk of an 81-frame clip decodes from its start.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.diffusers.base import DiffusersVideoModel
from model.text import TextCond


class WanModel(DiffusersVideoModel):
    """A Wan 2.1 or 2.2 text-to-video checkpoint."""

    family = "wan"

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.z_dim

    @property
    def boundary_timestep(self) -> float | None:
        """Timestep where Wan 2.2 switches from `transformer` to `transformer_2` (None: one)."""
        ratio = self.pipe.config.get("boundary_ratio")
        if ratio is None:
            return None
        return ratio * self.pipe.scheduler.config.num_train_timesteps

    def timesteps(
        self,
        steps: int,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> Tensor:
        """Flow-matching Euler sigmas with the checkpoint's shift, as flow times [steps + 1]."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = self.pipe.scheduler
        if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
        else:  # e.g. UniPC with flow sigmas: the same shift, first-order steps
            scheduler = FlowMatchEulerDiscreteScheduler(shift=self.default_shift)
        scheduler.set_timesteps(steps)
        return scheduler.sigmas.float()

    def _encode_prompts(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        emb, _ = self.pipe.encode_prompt(
            prompt=prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.config.text_max_len,
            device=self.pipe.text_encoder.device,
        )  # (B, 512, D): real tokens, then zeros
        return emb, torch.ones(emb.shape[:2], dtype=torch.bool)

    def _experts(self, t: Tensor) -> list[tuple[torch.nn.Module, Tensor]]:
        """(transformer, batch indices) pairs that together cover the batch."""
        pipe, boundary = self.pipe, self.boundary_timestep
        index = torch.arange(len(t), device=t.device)
        if boundary is None:
            return [
                (pipe.transformer if pipe.transformer is not None else pipe.transformer_2, index)
            ]
        high = t * 1000 >= boundary
        pairs = [(pipe.transformer, index[high]), (pipe.transformer_2, index[~high])]
        return [(expert, idx) for expert, idx in pairs if len(idx)]

    def _velocity(self, x: Tensor, t: Tensor, cond: TextCond) -> Tensor:
        out = torch.empty_like(x, dtype=torch.float32)
        _, _, T, H, W = x.shape
        ph, pw = self.token_patch
        for expert, idx in self._experts(t):
            timestep = t[idx] * 1000
            if self.pipe.config.get("expand_timesteps"):
                timestep = timestep[:, None].expand(-1, T * (H // ph) * (W // pw))  # (b, tokens)
            v = expert(
                hidden_states=x[idx].to(self.dtype),
                timestep=timestep,
                encoder_hidden_states=cond.emb[idx],
                return_dict=False,
            )[0]
            out[idx] = v.float()
        return out

    def _latent_stats(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Per-channel (mean, 1/std) of the VAE latents, shaped to broadcast over z."""
        cfg = self.pipe.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(
            z.device, z.dtype
        )
        return mean, inv_std

    def _decode(self, z: Tensor) -> Tensor:
        vae = self.pipe.vae
        z = z.to(vae.dtype)
        mean, inv_std = self._latent_stats(z)
        return vae.decode(z / inv_std + mean, return_dict=False)[0]  # as WanPipeline does

    def _encode_video(self, x: Tensor) -> Tensor:
        vae = self.pipe.vae
        z = vae.encode(x.to(vae.dtype)).latent_dist.mode()
        mean, inv_std = self._latent_stats(z)
        return (z - mean) * inv_std


ADAPTER = WanModel
