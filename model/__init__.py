"""A latent video diffusion model in plain PyTorch (never imports farm or ray).

import model
m = model.load("tiny")                       # preset, local dir or fsspec URL
cond = m.encode_text(["a red bottle", ""])   # any script; "" is unconditional
v = m.velocity(x, t, cond)                   # x [B, C, T, H, W], t [B] in [0, 1]
video = m.decode(z)                          # uint8 [B, F, H*8, W*8, 3]
noise = model.noise(shape, seed)             # same on every device and layout
m.geometry                                   # frame rule, strides, pixel multiple (no torch:
                                             #   model.geometry.geometry_of("small"))

Conditioning on known frames (image-to-video, extension, per-window anchors):

m.image_conditioning                         # "timestep", "channels" or None
image = m.encode_image(frames)               # uint8 [B, F, H, W, 3], F = 1: an image
image = model.ImageCond.from_latents(z)      # or a video's last latent frames [B, C, K, h, w]
v = m.velocity(x, t, cond, image=image)      # the first K latent frames of x are known
z = image.apply(euler(...))                  # the result holds them exactly

- Known latent frames enter with t = 0 on their tokens ("timestep": Wan 2.2 TI2V, LTX-Video)
  or as concatenated channels ("channels": Wan 2.1 I2V, with its CLIP image tokens, and
  Wan 2.2 I2V). They are the leading frames of the clip: an anchor is prepended to a
  window, and its output dropped, by the caller.
- "timestep": x is never read on known frames and their velocity is exactly 0, so any
  sampler leaves them as they start; `image.apply` puts them in place (before or after).
- "channels": the model denoises every frame, the image's own included (that is how the
  checkpoint was trained and how its pipeline runs), from one image encoded within a clip
  of up to `latent_frames` (the longest clip by default; a shorter clip uses the head).
  Such a checkpoint refuses `image=None`; only `image.apply` makes frame 0 exact.
- None: `encode_image` and `velocity(image=...)` raise `ConditioningNotSupported` (a
  NotImplementedError naming the model). The bundled model is one until its retraining;
  without `image` its outputs are unchanged, byte for byte.
- Rows of a batch may know different counts of frames (`ImageCond.cat`, `known` [B]; 0 is
  an unconditioned row); `velocity_packed` takes one `ImageCond | None` per clip.

Importing `model`, `model.config` or `model.geometry` does not import torch: the names
below that need it load on first use, so spec validation and wire schemas stay light.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.config import PRESETS, ModelConfig, get_preset
from model.geometry import Geometry, geometry_of

if TYPE_CHECKING:
    import torch

    from model.checkpoint import CheckpointError
    from model.conditioning import ConditioningNotSupported, ImageCond
    from model.diffusers.base import DiffusersVideoModel
    from model.generate import generate, generate_latents, noise
    from model.text import TextCond
    from model.video import VideoModel

# Torch-bound names and the module that defines each (loaded on first access).
_LAZY = {
    "CheckpointError": "model.checkpoint",
    "ConditioningNotSupported": "model.conditioning",
    "ImageCond": "model.conditioning",
    "generate": "model.generate",
    "generate_latents": "model.generate",
    "noise": "model.generate",
    "TextCond": "model.text",
    "VideoModel": "model.video",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConditioningNotSupported",
    "Geometry",
    "ImageCond",
    "ModelConfig",
    "TextCond",
    "VideoModel",
    "build",
    "generate",
    "generate_latents",
    "geometry_of",
    "load",
    "noise",
    "save",
    "shipped_weights",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def build(
    config: ModelConfig | str,
    *,
    zero_init: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> VideoModel:
    """A freshly initialised model (deterministic from `config.seed`); `meta` allocates nothing."""
    import torch

    from model.video import VideoModel

    if isinstance(config, str):
        config = get_preset(config)
    if torch.device(device).type == "meta":
        with torch.device("meta"):
            return VideoModel(config, zero_init=zero_init)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        m = VideoModel(config, zero_init=zero_init)
    return m.to(device=device, dtype=dtype or torch.float32).eval()


def save(m: VideoModel, url: str, meta: dict | None = None) -> str:
    """Save weights + config to a directory or fsspec URL; returns the weights sha256."""
    from model.checkpoint import save_checkpoint

    return save_checkpoint(m, url, meta)


def shipped_weights(name: str) -> Path | None:
    """The directory of the trained checkpoint shipped for preset `name`, if there is one."""
    path = WEIGHTS_DIR / name
    return path if (path / "config.json").exists() else None


def load(
    name_or_url: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    **options: Any,
) -> VideoModel | DiffusersVideoModel:
    """Load a model by preset name or checkpoint URL (local dir, memory://, s3://, ...).

    `dtype` defaults to float32. ``diffusers:<dir or URL>`` loads an open checkpoint (Wan,
    LTX-Video, CogVideoX) offline behind the same contract (`model.diffusers`); `options`
    are its knobs (text encoder device, attention backend, cache directory, ...).

    A preset loads its shipped trained weights when the package has them; otherwise it is
    a random init (not adaLN-Zero, so every output depends on its inputs), which is what
    plumbing tests and benchmarks need.
    """
    import torch

    from model.checkpoint import check_state, read_header, read_state
    from model.video import VideoModel

    if name_or_url.startswith("diffusers:"):
        from model.diffusers.load import load as load_diffusers

        return load_diffusers(name_or_url, device=device, dtype=dtype, **options)
    if options:
        raise TypeError(f"unexpected options for a native checkpoint: {', '.join(options)}")
    if name_or_url in PRESETS:
        shipped = shipped_weights(name_or_url)
        if shipped is None:
            return build(name_or_url, zero_init=False, device=device, dtype=dtype)
        name_or_url = str(shipped)
    header = read_header(name_or_url)
    with torch.device("meta"):
        m = VideoModel(header["config"])
    state = read_state(name_or_url, header)
    check_state(m, state, name_or_url)
    m.load_state_dict(state, assign=True)
    m.weights_sha256 = header["weights_sha256"]
    return m.to(device=device, dtype=dtype or torch.float32).eval()
