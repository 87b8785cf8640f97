"""Open diffusers checkpoints (Wan 2.1/2.2, LTX-Video, CogVideoX) behind the model contract.

Text-to-video for every family; image-to-video (`m.encode_image`, `model.conditioning`)
for Wan 2.2 TI2V and LTX-Video (t = 0 on known tokens) and `WanImageToVideoPipeline`
folders, Wan 2.1 I2V and Wan 2.2 I2V (image channels).

    m = model.load("diffusers:/models/Wan2.1-T2V-1.3B-Diffusers")   # or s3://..., memory://...
    m = model.load("diffusers:...", device="cuda", text_device="cpu")  # UMT5-XXL on the CPU
    model.geometry_of("diffusers:...")                               # JSON only, no torch

Modules: `configs` (torch-free: family and geometry from the JSON files), `cache` (a
checked local copy of a remote folder), `load` (offline component loading), `base` (the
shared adapter), and one module per family: `wan`, `ltx`, `cogvideox`.

Importing this package needs neither torch nor diffusers; `diffusers` and `transformers`
are the optional extra ``.[diffusers]`` and load only with a checkpoint.
"""

from __future__ import annotations

from typing import Any

from model.diffusers.configs import FAMILIES, PREFIX, DiffusersCheckpointError

__all__ = ["FAMILIES", "PREFIX", "DiffusersCheckpointError", "load"]


def load(ref: str, **options: Any) -> Any:
    """`model.load` for a ``diffusers:<dir or URL>`` reference (see `model.diffusers.load`)."""
    from model.diffusers.load import load as load_checkpoint

    return load_checkpoint(ref, **options)
