"""Synthetic clips for watermark and media checks: 2 s at 24 fps + 1, 256x144 by default.

`scene_clip` is ad-like content (smooth moving gradients, moving shapes, a textured patch);
`noise_clip` is noise-like texture, the hard case for an invisible watermark; `half_size`
resizes every frame as a re-uploader might.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

FRAMES, H, W = 49, 144, 256  # 2 s at 24 fps + 1


def scene_clip(frames: int = FRAMES, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Ad-like content: moving smooth gradients, two moving shapes, a textured patch."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    y = np.arange(h, dtype=np.float32)[None, :, None]
    x = np.arange(w, dtype=np.float32)[None, None, :]
    r = 110 + 80 * np.sin((x + 2.0 * t) / w * 2 * np.pi) * np.cos(y / h * np.pi)
    g = 120 + 70 * np.cos((y - 1.5 * t) / h * 2 * np.pi)
    b = 100 + 60 * np.sin((x + y + t) / (w + h) * 3 * np.pi)
    img = np.stack(np.broadcast_arrays(r, g, b), axis=-1).astype(np.float32)
    tex = np.kron(rng.normal(0, 1, (h // 4 + 1, w // 4 + 1)), np.ones((4, 4)))[:h, :w]
    img[:, : h // 2, : w // 3] += 25 * tex[None, : h // 2, : w // 3, None]
    yy, xx = np.ogrid[:h, :w]
    for f in range(frames):
        cx, cy = 40 + 3 * f, int(50 + 20 * np.sin(f / 8))
        img[f, max(cy - 20, 0) : cy + 20, max(cx - 20, 0) : cx + 20] = (230, 40, 40)
        img[f][(yy - 90) ** 2 + (xx - (200 - 2 * f)) ** 2 < 25**2] = (20, 60, 200)
    img += rng.normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def noise_clip(
    frames: int = FRAMES,
    h: int = H,
    w: int = W,
    *,
    seed: int = 1,
    contrast: float = 0.5,
    motion: tuple[int, int] = (0, 1),
    grain: float = 8.0,
) -> np.ndarray:
    """Noise-like content: drifting random 2x2-block texture plus fresh grain every frame."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, (h // 2, w // 2, 3)), np.ones((2, 2, 1)))
    out = [
        np.roll(base, (motion[0] * f, motion[1] * f), axis=(0, 1)) * contrast
        + 128 * (1 - contrast)
        + rng.normal(0, grain, base.shape)
        for f in range(frames)
    ]
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def half_size(frames: np.ndarray) -> np.ndarray:
    """Every frame resized to 0.5x with Pillow (bilinear), as a re-uploader might."""
    size = (frames.shape[2] // 2, frames.shape[1] // 2)
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])
