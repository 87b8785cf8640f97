"""What a diffusers checkpoint is, read from its JSON files alone (no torch, no diffusers).

A diffusers pipeline folder names its pipeline class in `model_index.json` and keeps each
component (`vae/`, `transformer/`, ...) in a folder with its own `config.json`. Those
files are enough to know the family and its frame and size rules, so spec validation and
the HTTP API can ask `geometry_of("diffusers:<dir>")` without loading a single weight.

Facts that are not in any config live here, once: the longest clip a family renders in one
piece is its pipeline's default `num_frames` (CogVideoX states it: `sample_frames`).
"""

from __future__ import annotations

import json
from typing import Any

from model.geometry import Geometry

PREFIX = "diffusers:"

# Pipeline class in model_index.json -> family module in model.diffusers.
FAMILIES = {
    "WanPipeline": "wan",
    "WanImageToVideoPipeline": "wan",
    "LTXPipeline": "ltx",
    "LTXImageToVideoPipeline": "ltx",
    "CogVideoXPipeline": "cogvideox",
}

# Longest clip (pixel frames) rendered in one forward: the pipelines' default num_frames.
WAN_MAX_FRAMES = 81
LTX_MAX_FRAMES = 161


class DiffusersCheckpointError(ValueError):
    """A diffusers folder that cannot be used: missing, unreadable, or an unsupported pipeline."""


def strip_prefix(ref: str) -> str:
    """The directory or URL of a `diffusers:<dir or URL>` reference."""
    if not ref.startswith(PREFIX) or len(ref) == len(PREFIX):
        raise DiffusersCheckpointError(
            f"a diffusers checkpoint reference looks like 'diffusers:<dir or URL>', got {ref!r}"
        )
    return ref[len(PREFIX) :]


def read_json(url: str, name: str) -> dict[str, Any]:
    """The JSON object in file `name` under the folder `url` (local path or fsspec URL)."""
    import fsspec

    path = url.rstrip("/") + "/" + name
    try:
        with fsspec.open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        raise DiffusersCheckpointError(f"{name} is missing in {url!r}") from None
    except (OSError, ValueError) as e:
        raise DiffusersCheckpointError(f"{name} in {url!r} is not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise DiffusersCheckpointError(f"{name} in {url!r} is not a JSON object")
    return data


def pipeline_family(index: dict[str, Any], url: str) -> str:
    """The family ('wan', 'ltx', 'cogvideox') of a parsed model_index.json, or a clear error."""
    name = index.get("_class_name")
    if name not in FAMILIES:
        raise DiffusersCheckpointError(
            f"{url!r} holds a {name!r} pipeline; supported pipelines are "
            f"{', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[name]


def components(index: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Component name -> (library, class) for every component the pipeline has (not null)."""
    out = {}
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if value[0] is not None and value[1] is not None:
            out[key] = (value[0], value[1])
    return out


def _component_config(url: str, index: dict[str, Any], *names: str) -> dict[str, Any]:
    """config.json of the first of `names` that the pipeline has."""
    present = components(index)
    for name in names:
        if name in present:
            return read_json(url, f"{name}/config.json")
    raise DiffusersCheckpointError(f"{url!r} has no {' or '.join(names)} component")


def _wan(url: str, index: dict[str, Any], name: str) -> Geometry:
    vae = _component_config(url, index, "vae")
    transformer = _component_config(url, index, "transformer", "transformer_2")
    temporal = vae.get("scale_factor_temporal") or 2 ** sum(vae["temperal_downsample"])
    spatial = vae.get("scale_factor_spatial") or 2 ** (len(vae["dim_mult"]) - 1) * (
        vae.get("patch_size") or 1
    )
    pt, ph, pw = transformer["patch_size"]
    if pt != 1:
        raise DiffusersCheckpointError(f"{url!r}: a temporal patch of {pt} is not supported")
    return Geometry(
        model=name,
        temporal_stride=temporal,
        spatial_stride=spatial,
        pixel_multiple=spatial * max(ph, pw),
        max_frames=WAN_MAX_FRAMES,
    )


def _ltx(url: str, index: dict[str, Any], name: str) -> Geometry:
    vae = _component_config(url, index, "vae")
    transformer = _component_config(url, index, "transformer")
    scaling = sum(vae.get("spatio_temporal_scaling", (True, True, True, False)))
    spatial = vae.get("spatial_compression_ratio") or vae.get("patch_size", 4) * 2**scaling
    temporal = vae.get("temporal_compression_ratio") or vae.get("patch_size_t", 1) * 2**scaling
    if transformer.get("patch_size_t", 1) != 1:
        raise DiffusersCheckpointError(f"{url!r}: a temporal patch above 1 is not supported")
    return Geometry(
        model=name,
        temporal_stride=int(temporal),
        spatial_stride=int(spatial),
        pixel_multiple=int(spatial) * transformer.get("patch_size", 1),
        max_frames=LTX_MAX_FRAMES,
    )


def _cogvideox(url: str, index: dict[str, Any], name: str) -> Geometry:
    vae = _component_config(url, index, "vae")
    transformer = _component_config(url, index, "transformer")
    if transformer.get("patch_size_t") is not None:
        raise DiffusersCheckpointError(
            f"{url!r}: CogVideoX 1.5 (patch_size_t={transformer['patch_size_t']}) is not supported"
        )
    spatial = 2 ** (len(vae.get("block_out_channels", (128, 256, 256, 512))) - 1)
    return Geometry(
        model=name,
        temporal_stride=int(vae.get("temporal_compression_ratio", 4)),
        spatial_stride=spatial,
        pixel_multiple=spatial * transformer.get("patch_size", 2),
        max_frames=transformer.get("sample_frames", 49),
        latent_step=2,  # the VAE decodes odd latent counts only (even ones give 4T frames)
    )


_GEOMETRY = {"wan": _wan, "ltx": _ltx, "cogvideox": _cogvideox}


def checkpoint_geometry(url: str, name: str | None = None) -> Geometry:
    """The Geometry of the diffusers folder at `url`, from its JSON configs only."""
    index = read_json(url, "model_index.json")
    family = pipeline_family(index, url)
    try:
        return _GEOMETRY[family](url, index, name or f"{PREFIX}{url}")
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, DiffusersCheckpointError):
            raise
        raise DiffusersCheckpointError(f"{url!r}: unreadable {family} config: {e!r}") from None


def geometry_of_ref(ref: str) -> Geometry:
    """`geometry_of` for a `diffusers:<dir or URL>` reference (torch-free)."""
    return checkpoint_geometry(strip_prefix(ref), ref)
