"""CogVideoX (`CogVideoXPipeline`) behind the flow-matching contract.

CogVideoX is a v-prediction diffusion model: x_τ = a·x0 + s·ε with a = √ᾱ_τ, s = √(1−ᾱ_τ),
and its transformer predicts v = a·ε − s·x0. Dividing by (a + s) turns it into a
rectified flow: y = x / (a + s) = (1 − t)·x0 + t·ε with

    t = s / (a + s),    and back:  k = a + s = 1 / √(t² + (1 − t)²),  a = (1 − t)·k,  s = t·k.

The model's own estimates x̂0 = a·x − s·v̂ and ε̂ = s·x + a·v̂ give the flow velocity

    ε̂ − x̂0 = (s − a)·x + (a + s)·v̂ = k²(2t − 1)·y + k·v̂(k·y, τ(t)).

A DDIM step (η = 0) from τ to τ' is x' = a'·x̂0 + s'·ε̂; divided by (a' + s') it is
(1 − t')·x̂0 + t'·ε̂ = y + (t' − t)(ε̂ − x̂0): exactly one Euler step in y. So the farm's
latents are y (at t = 0, y = x0, the VAE latent times its scaling factor), its t is
s/(a+s), and `timesteps` gives the scheduler's steps in that time. τ(t) is read off the
scheduler's own ᾱ table by interpolation (ᾱ falls monotonically with τ).

Text: T5 embeddings padded to 226 tokens; the transformer has no text mask (all True).
The VAE decodes latent frames in pairs after the first three, upsampling time by 2 only
where a count is even, so it needs an odd latent count (clips of 8n+1 frames:
`Geometry.latent_step` = 2), and it normalises over the frames decoded together, so a
chunk is cut from a full decode (`decode_context` is None): exact, at the cost of one full
decode per chunk.
CogVideoX 1.5 (a temporal patch) is refused in `configs`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.diffusers.base import DiffusersVideoModel
from model.text import TextCond


def flow_time(alpha_cumprod: np.ndarray | float) -> np.ndarray:
    """Flow time t = s / (a + s) of a cumulative alpha ᾱ (a = √ᾱ, s = √(1 − ᾱ))."""
    ac = np.asarray(alpha_cumprod, dtype=np.float64)
    a, s = np.sqrt(ac), np.sqrt(1.0 - ac)
    return s / (a + s)


class CogVideoXModel(DiffusersVideoModel):
    """A CogVideoX 1.0 text-to-video checkpoint (2B, 5B)."""

    family = "cogvideox"
    REQUIRED = ("vae", "text_encoder", "tokenizer", "scheduler", "transformer")

    def __init__(self, pipe, **kw):
        super().__init__(pipe, **kw)
        # Flow time of every training timestep, increasing with τ (the interpolation table).
        self._t_table = flow_time(pipe.scheduler.alphas_cumprod.double().cpu().numpy())

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.latent_channels

    @property
    def token_patch(self) -> tuple[int, int]:
        p = self.pipe.transformer.config.patch_size
        return (p, p)

    @property
    def decode_context(self) -> None:
        return None

    def scheduler_shift(self) -> float:
        """1: CogVideoX has no flow shift; its schedule in flow time is `timesteps`."""
        return 1.0

    def timestep_of(self, t: Tensor) -> Tensor:
        """The scheduler timestep τ whose flow time is t (interpolated on the ᾱ table)."""
        taus = np.interp(t.double().cpu().numpy(), self._t_table, np.arange(len(self._t_table)))
        return torch.as_tensor(taus, dtype=torch.float32, device=t.device)

    def timesteps(
        self,
        steps: int,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> Tensor:
        """The scheduler's timesteps as flow times [steps + 1], ending at its final ᾱ.

        For `steps` dividing the training steps (1000) these are the DDIM steps exactly;
        otherwise DDIM lands a step at τ − 1000//steps but evaluates the next at the next
        listed τ, and this schedule evaluates where it lands.
        """
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(steps)
        taus = scheduler.timesteps.cpu().numpy()
        ts = [*flow_time(scheduler.alphas_cumprod.double().numpy()[taus]), 0.0]
        final = getattr(scheduler, "final_alpha_cumprod", None)
        if final is not None:
            ts[-1] = float(flow_time(float(final)))
        return torch.tensor(ts, dtype=torch.float32)

    def _encode_prompts(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        emb, _ = self.pipe.encode_prompt(
            prompt=prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.config.text_max_len,
            device=self.pipe.text_encoder.device,
        )
        return emb, torch.ones(emb.shape[:2], dtype=torch.bool)

    def _velocity(self, y: Tensor, t: Tensor, cond: TextCond) -> Tensor:
        pipe = self.pipe
        _, _, T, H, W = y.shape
        t64 = t.double()
        k = 1.0 / torch.sqrt(t64**2 + (1 - t64) ** 2)  # a + s
        shape = (-1, 1, 1, 1, 1)
        x = (k.view(shape) * y.double()).float()  # the diffusion latent x_τ
        rotary = None
        if pipe.transformer.config.use_rotary_positional_embeddings:
            s = self.geometry.spatial_stride
            rotary = pipe._prepare_rotary_positional_embeddings(H * s, W * s, T, y.device)
        v = pipe.transformer(
            hidden_states=x.permute(0, 2, 1, 3, 4).to(self.dtype),  # (B, T, C, H, W)
            encoder_hidden_states=cond.emb,
            timestep=self.timestep_of(t),
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
        v = v.permute(0, 2, 1, 3, 4).double()  # (B, C, T, H, W): v-prediction
        flow = (k**2 * (2 * t64 - 1)).view(shape) * y.double() + k.view(shape) * v
        return flow.float()

    def _decode(self, z: Tensor) -> Tensor:
        if z.shape[2] % 2 == 0:
            raise ValueError(
                f"CogVideoX's VAE decodes an odd number of latent frames (clips of "
                f"{self.geometry.frame_rule} frames), got {z.shape[2]}"
            )
        vae = self.pipe.vae
        return vae.decode(z.to(vae.dtype) / vae.config.scaling_factor).sample

    def _encode_video(self, x: Tensor) -> Tensor:
        vae = self.pipe.vae
        z = vae.encode(x.to(vae.dtype)).latent_dist.mode()
        return z * vae.config.scaling_factor


ADAPTER = CogVideoXModel
