"""Model configuration and the registry of named presets.

A `ModelConfig` is one flat, frozen object of primitives. It is saved beside the weights
(`config.json`), so a checkpoint always rebuilds its own model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.geometry import Geometry


class ModelConfig(BaseModel):
    """Every hyper-parameter of the video model: VAE, text encoder and diffusion transformer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Preset name this config came from (informational).")

    # --- causal video VAE -----------------------------------------------------------
    latent_channels: int = Field(16, ge=1, description="Channels of the latent video.")
    vae_channels: tuple[int, ...] = Field(
        (32, 64, 64, 128),
        description="VAE widths: stem, after 1st (t+s), 2nd (t+s) and 3rd (s) downsample.",
    )
    vae_blocks: int = Field(1, ge=0, description="Residual blocks per VAE resolution.")

    # --- byte-level text encoder ----------------------------------------------------
    text_max_len: int = Field(128, ge=2, description="Max tokens incl. BOS; longer is cut.")
    text_dim: int = Field(256, ge=8, description="Width of the text encoder.")
    text_depth: int = Field(2, ge=1, description="Transformer layers of the text encoder.")
    text_heads: int = Field(4, ge=1, description="Attention heads of the text encoder.")
    text_conv: int = Field(
        0,
        ge=0,
        description="Width (odd, in bytes) of a convolution over the byte embeddings before "
        "the transformer, so each byte sees its word; 0 = none.",
    )

    # --- diffusion transformer ------------------------------------------------------
    patch_size: tuple[int, int, int] = Field((1, 2, 2), description="(t, h, w) latent patch.")
    dim: int = Field(256, ge=8, description="Width of the transformer.")
    depth: int = Field(4, ge=1, description="Number of transformer blocks.")
    heads: int = Field(4, ge=1, description="Attention heads per block.")
    ffn_dim: int = Field(1024, ge=8, description="Hidden width of each block's MLP.")
    freq_dim: int = Field(256, ge=8, description="Sinusoidal timestep embedding width.")
    rope_theta: float = Field(10000.0, gt=0, description="Base of the 3D rotary embedding.")
    abs_pos: int = Field(
        0,
        ge=0,
        description="Frequencies of the absolute (t, y, x) position embedding added to the "
        "tokens, in fractions of the clip; 0 = rotary (relative) positions only.",
    )
    qk_norm: bool = Field(True, description="RMS-normalise queries and keys per head.")
    eps: float = Field(1e-6, gt=0, description="Epsilon of every norm.")

    # --- what the farm may ask -------------------------------------------------------
    max_frames: int = Field(
        65,
        ge=5,
        description="Longest clip (pixel frames, 4n+1) rendered in one piece; longer videos "
        "are windowed, each window at most this long.",
    )

    # --- sampling defaults ----------------------------------------------------------
    shift: float = Field(3.0, gt=0, description="Timestep shift of the flow-matching schedule.")
    seed: int = Field(0, description="Seed of the random init when no weights are loaded.")

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.text_dim % self.text_heads:
            raise ValueError(
                f"text_dim ({self.text_dim}) must be divisible by text_heads ({self.text_heads})"
            )
        if self.text_conv % 2 == 0 and self.text_conv:
            raise ValueError(f"text_conv ({self.text_conv}) must be odd (centred) or 0 (none)")
        head_dim = self.dim // self.heads
        if head_dim % 2 or head_dim < 12:
            raise ValueError(f"head_dim ({head_dim}) must be even and >= 12 for 3D rotary")
        if len(self.vae_channels) != 4:
            raise ValueError("vae_channels must have 4 entries (stem + 3 downsamples)")
        if self.patch_size[0] != 1:
            raise ValueError("patch_size[0] must be 1: windows are cut per latent frame")
        if (self.max_frames - 1) % self.vae_stride[0]:
            raise ValueError(f"max_frames ({self.max_frames}) must be of the form 4n+1")
        return self

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.heads

    @property
    def vae_stride(self) -> tuple[int, int, int]:
        """Pixel frames/rows/cols per latent frame/row/col."""
        return (4, 8, 8)

    @property
    def pixel_multiple(self) -> int:
        """Height and width must be multiples of this (VAE stride x patch size)."""
        return self.vae_stride[1] * self.patch_size[1]

    @property
    def geometry(self) -> Geometry:
        """The frame rule, strides, pixel multiple and longest clip, for the farm to ask."""
        return Geometry(
            model=self.name,
            temporal_stride=self.vae_stride[0],
            spatial_stride=self.vae_stride[1],
            pixel_multiple=self.pixel_multiple,
            max_frames=self.max_frames,
        )


PRESETS: dict[str, ModelConfig] = {
    # Unit tests: a velocity forward on a 9-frame 64x64 clip takes a few milliseconds.
    "tiny": ModelConfig(
        name="tiny",
        latent_channels=4,
        vae_channels=(8, 16, 16, 16),
        vae_blocks=1,
        text_max_len=64,
        text_dim=32,
        text_depth=1,
        text_heads=2,
        dim=48,
        depth=2,
        heads=2,
        ffn_dim=96,
        freq_dim=32,
        abs_pos=2,
    ),
    # CPU demo default; trained by model/training/train.py.
    "small": ModelConfig(
        name="small",
        latent_channels=8,
        vae_channels=(32, 64, 64, 96),
        vae_blocks=1,
        text_max_len=512,
        text_dim=128,
        text_depth=2,
        text_heads=4,
        text_conv=5,
        dim=192,
        depth=6,
        heads=4,
        ffn_dim=512,
        freq_dim=128,
        abs_pos=4,
    ),
    # GPU scale, dims in the range of Wan-2.1-1.3B; built on `meta` for counts.
    "base": ModelConfig(
        name="base",
        latent_channels=16,
        vae_channels=(96, 192, 384, 384),
        vae_blocks=2,
        text_max_len=512,
        text_dim=768,
        text_depth=8,
        text_heads=12,
        dim=1536,
        depth=30,
        heads=12,
        ffn_dim=8960,
        freq_dim=256,
    ),
}


def get_preset(name: str) -> ModelConfig:
    """The config of a named preset, or a ValueError listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}") from None
