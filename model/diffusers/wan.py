"""Wan 2.1 / 2.2 (`WanPipeline`, `WanImageToVideoPipeline`) behind the model contract.

Facts of the family, each handled here:

- Text: UMT5 embeddings are cut to each prompt's length and zero-padded to the pipeline's
  `max_sequence_length` (512). The transformer's cross-attention has no mask, so every
  prompt is always padded to that length and never trimmed; the mask is all True.
- Time: the transformer takes timestep = 1000·t and returns ε − x0 (flow matching).
- Wan 2.2 A14B has two experts: `transformer` for timesteps >= boundary_ratio·1000 (high
  noise) and `transformer_2` below it; a batch with mixed t is split by expert.
- Wan 2.2 TI2V-5B (`expand_timesteps`) takes one timestep per token, as its pipeline does;
  known frames are clean latents with timestep 0 on their tokens ("timestep"
  conditioning, as `WanImageToVideoPipeline` runs it with `expand_timesteps`).
- Wan 2.1 I2V and Wan 2.2 I2V-A14B (a transformer with more input channels than the VAE
  has) take the image as channels: a mask (one channel per pixel frame of a latent frame,
  1 on the image) and the latent of the image followed by blank (0) frames, concatenated
  after x; Wan 2.1 I2V adds its CLIP image encoder's penultimate hidden states.
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

from model.conditioning import ImageCond
from model.diffusers.base import DiffusersVideoModel
from model.text import TextCond


class WanModel(DiffusersVideoModel):
    """A Wan 2.1 or 2.2 text-to-video checkpoint."""

    family = "wan"

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.z_dim

    def _transformer(self) -> torch.nn.Module:
        pipe = self.pipe
        return pipe.transformer if pipe.transformer is not None else pipe.transformer_2

    @property
    def image_conditioning(self) -> str | None:
        """How known frames enter: "channels" for I2V (wider input), "timestep" for TI2V."""
        transformer = self._transformer()
        if transformer.config.in_channels > self.latent_channels:
            return "channels"
        return "timestep" if self.pipe.config.get("expand_timesteps") else None

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
        from diffusers import WanPipeline

        # WanPipeline's encoding for every Wan pipeline: WanImageToVideoPipeline's own
        # cleans prompts with ftfy unguarded (diffusers 0.42.1), WanPipeline's only where
        # ftfy is installed; both then encode alike.
        emb = WanPipeline._get_t5_prompt_embeds(
            self.pipe,
            prompt=prompts,
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

    def _velocity(
        self, x: Tensor, t: Tensor, cond: TextCond, image: ImageCond | None = None
    ) -> Tensor:
        out = torch.empty_like(x, dtype=torch.float32)
        _, _, T, H, W = x.shape
        ph, pw = self.token_patch
        per_frame = (H // ph) * (W // pw)  # tokens per latent frame
        channels = embeds = known = None
        if image is not None and self.image_conditioning == "timestep":
            x = image.apply(x)
            known = image.mask(T).repeat_interleave(per_frame, dim=1)  # (B, tokens)
        elif image is not None:
            if image.channels is None or image.channels.shape[2] < T:
                have = None if image.channels is None else image.channels.shape[2]
                raise ValueError(
                    f"{self.config.name} needs image channels for {T} latent frames (has "
                    f"{have}): make the image with m.encode_image(frames, latent_frames={T})"
                )
            channels = image.channels[:, :, :T]  # the head of a longer clip's (causal VAE)
            embeds = image.embeds
        for expert, idx in self._experts(t):
            timestep = t[idx] * 1000
            if self.pipe.config.get("expand_timesteps"):
                timestep = timestep[:, None].expand(-1, T * per_frame)  # (b, tokens)
                if known is not None:
                    timestep = torch.where(known[idx], torch.zeros_like(timestep), timestep)
            hidden = x[idx].to(self.dtype)
            if channels is not None:
                hidden = torch.cat([hidden, channels[idx].to(self.dtype)], dim=1)
            v = expert(
                hidden_states=hidden,
                timestep=timestep,
                encoder_hidden_states=cond.emb[idx],
                encoder_hidden_states_image=None if embeds is None else embeds[idx],
                return_dict=False,
            )[0]
            out[idx] = v.float()
        return out

    def _encode_image_channels(self, frames: Tensor, latent_frames: int) -> ImageCond:
        """The mask and latent channels of `WanImageToVideoPipeline` for one image per row."""
        B, _, height, width, _ = frames.shape
        self.geometry.check_size(width, height)
        s = self.geometry.temporal_stride
        image = frames.to(self.device).permute(0, 4, 1, 2, 3).to(self.dtype) / 127.5 - 1.0
        blank = image.new_zeros(B, 3, s * (latent_frames - 1), height, width)  # 0: gray
        z = self._encode_video(torch.cat([image, blank], dim=2))  # (B, C, T, h, w)
        mask = torch.zeros_like(z[:, :1]).expand(-1, s, -1, -1, -1).clone()  # (B, s, T, h, w)
        mask[:, :, 0] = 1.0  # every pixel frame of latent frame 0 is the image
        embeds = None
        encoder = getattr(self.pipe, "image_encoder", None)
        if encoder is not None and self._transformer().config.image_dim is not None:
            from PIL import Image

            pictures = [Image.fromarray(f[0].cpu().numpy()) for f in frames]
            embeds = self.pipe.encode_image(pictures, self.device).to(self.dtype)
        known = torch.ones(B, dtype=torch.long, device=self.device)
        return ImageCond(z[:, :, :1], known, torch.cat([mask, z], dim=1), embeds)

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
