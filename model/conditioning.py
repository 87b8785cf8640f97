"""`ImageCond`: known leading frames of a clip, an image (image-to-video) or a video's tail.

A model takes them in one of two ways, and says which in `m.image_conditioning`:

- ``"timestep"`` (Wan 2.2 TI2V, LTX-Video): the known latent frames enter as clean
  latents with t = 0 on their tokens, whatever x holds there, and their velocity is 0.
- ``"channels"`` (Wan 2.1 I2V, Wan 2.2 I2V): the image enters as channels concatenated to
  x (a mask and the latent of the image followed by blank frames), plus the image
  encoder's tokens where the checkpoint has one; the model denoises every frame, the first
  one included, so its velocity there is the model's.
- ``None`` (the bundled model for now, text-only checkpoints): `ConditioningNotSupported`.

Either way the sampled result holds the known frames exactly after `ImageCond.apply`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor


class ConditioningNotSupported(NotImplementedError):
    """A model that cannot take known frames (yet); the message names the model."""


@dataclass
class ImageCond:
    """Known leading latent frames of each clip in a batch (from `m.encode_image`)."""

    latents: Tensor  # [B, C, K, H, W] clean diffusion latents of the leading latent frames
    known: Tensor  # [B] int64: how many leading latent frames of each row are known (0..K)
    channels: Tensor | None = None  # [B, C', T_max, H, W] channel input ("channels" models)
    embeds: Tensor | None = None  # [B, L, D] image-encoder tokens (Wan 2.1 I2V's CLIP)

    @classmethod
    def from_latents(cls, z: Tensor) -> ImageCond:
        """All K latent frames of z [B, C, K, H, W] known: a video's tail, for extension.

        Enough for "timestep" models; "channels" models need `m.encode_image` (pixels).
        """
        if not isinstance(z, Tensor) or z.ndim != 5:
            raise ValueError("z must be latents of shape [B, C, K, H, W]")
        known = torch.full((z.shape[0],), z.shape[2], dtype=torch.long, device=z.device)
        return cls(z, known)

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> ImageCond:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ImageCond(
            self.latents[index],
            self.known[index],
            None if self.channels is None else self.channels[index],
            None if self.embeds is None else self.embeds[index],
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """The same frames on another device / dtype (`known` stays int64)."""

        def move(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device=device, dtype=dtype)

        return ImageCond(
            move(self.latents), self.known.to(device), move(self.channels), move(self.embeds)
        )

    def expand(self, batch: int) -> ImageCond:
        """A one-row conditioning repeated over `batch` rows (views, no copy)."""
        if len(self) == batch:
            return self
        if len(self) != 1:
            raise ValueError(f"image has {len(self)} rows for a batch of {batch}")

        def grow(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.expand(batch, *x.shape[1:])

        return ImageCond(
            grow(self.latents), grow(self.known), grow(self.channels), grow(self.embeds)
        )

    @staticmethod
    def cat(images: list[ImageCond | None]) -> ImageCond | None:
        """Stack rows of several clips (None: a clip with no known frame) into one batch.

        Latents are zero-padded to the most known frames; every row must share C, H, W.
        """
        present = [im for im in images if im is not None]
        if not present:
            return None
        ref = present[0].latents
        K = max(im.latents.shape[2] for im in present)
        for name in ("channels", "embeds"):
            has = [getattr(im, name) is not None for im in images if im is not None]
            if any(has) and (not all(has) or len(present) != len(images)):
                raise ValueError(f"cannot batch clips with and without image {name}")
        rows = []
        for im in images:
            if im is None:
                zeros = ref.new_zeros((1, ref.shape[1], K, *ref.shape[3:]))
                im = ImageCond(zeros, torch.zeros(1, dtype=torch.long, device=ref.device))
            pad = K - im.latents.shape[2]
            rows.append(replace(im, latents=F.pad(im.latents, (0, 0, 0, 0, 0, pad))))
        return ImageCond(
            torch.cat([r.latents for r in rows]),
            torch.cat([r.known for r in rows]),
            None if rows[0].channels is None else torch.cat([r.channels for r in rows]),
            None if rows[0].embeds is None else torch.cat([r.embeds for r in rows]),
        )

    def mask(self, frames: int) -> Tensor:
        """[B, frames] bool: True on each row's known latent frames."""
        index = torch.arange(frames, device=self.known.device)
        return index[None, :] < self.known[:, None]

    def apply(self, x: Tensor) -> Tensor:
        """x [B, C, T, H, W] with each row's known latent frames replaced by their latents."""
        T = x.shape[2]
        latents = self.latents[:, :, :T].to(device=x.device, dtype=x.dtype)
        latents = F.pad(latents, (0, 0, 0, 0, 0, T - latents.shape[2]))  # (B, C, T, H, W)
        known = self.mask(T).to(x.device)[:, None, :, None, None]  # (B, 1, T, 1, 1)
        return torch.where(known, latents, x)


def check_image(image: object, x: Tensor, latent_channels: int) -> ImageCond:
    """`image` checked against latents x [B, C, T, H, W] and expanded to its batch."""
    if not isinstance(image, ImageCond):
        raise ValueError(f"image must be an ImageCond from encode_image, got {type(image)}")
    B, _, T, H, W = x.shape
    if len(image) not in (1, B):
        raise ValueError(f"image has {len(image)} rows for a batch of {B}")
    z = image.latents
    if z.ndim != 5 or z.shape[1] != latent_channels or tuple(z.shape[3:]) != (H, W):
        raise ValueError(
            f"image latents must be [B, {latent_channels}, K, {H}, {W}] to condition x of "
            f"shape {tuple(x.shape)}, got {tuple(z.shape)} (encode the image at the video's size)"
        )
    known = image.known
    if known.shape != (len(image),) or bool((known < 0).any() or (known > z.shape[2]).any()):
        raise ValueError(f"image.known must be [B] counts in 0..{z.shape[2]}")
    if int(known.max()) > T:
        raise ValueError(f"image knows {int(known.max())} latent frames of a clip of {T}")
    return image.expand(B).to(x.device)
