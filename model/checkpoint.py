"""Checkpoints: safetensors weights + config JSON at any fsspec URL, sha256-checked.

A checkpoint is a directory (local path, `memory://...`, `s3://...`) holding:
- `model.safetensors`: the state dict;
- `config.json`: `{"format": 1, "config": {...ModelConfig...}, "weights_sha256": "...",
  "weights_bytes": N, "meta": {...}}`.

The weights are written first and `config.json` last, each through a temporary name and
a rename, so a directory with a config always has the weights it describes. Loading reads
the bytes once, checks size and sha256 before parsing, then checks keys and shapes, and
raises `CheckpointError` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import fsspec
import pydantic
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from model.config import ModelConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or not matching its model."""


def _join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name


def _write_atomic(fs, path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def state_bytes(model: torch.nn.Module) -> bytes:
    """The model's state dict serialised as safetensors (what `save_checkpoint` writes)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return st_save(state)


def save_checkpoint(model: torch.nn.Module, url: str, meta: dict[str, Any] | None = None) -> str:
    """Write `model` (a VideoModel) to the directory `url`; returns the weights sha256."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    data = state_bytes(model)
    digest = hashlib.sha256(data).hexdigest()
    _write_atomic(fs, _join(root, WEIGHTS_FILE), data)
    header = {
        "format": FORMAT,
        "config": model.config.model_dump(mode="json"),
        "weights_sha256": digest,
        "weights_bytes": len(data),
        "meta": meta or {},
    }
    _write_atomic(fs, _join(root, CONFIG_FILE), json.dumps(header, indent=2).encode())
    return digest


def read_header(url: str) -> dict[str, Any]:
    """The parsed and validated `config.json` of the checkpoint at `url`."""
    fs, root = fsspec.core.url_to_fs(url)
    path = _join(root, CONFIG_FILE)
    if not fs.exists(path):
        raise CheckpointError(f"no checkpoint at {url!r}: {CONFIG_FILE} is missing")
    try:
        header = json.loads(fs.cat_file(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{CONFIG_FILE} at {url!r} is not valid JSON: {e}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{CONFIG_FILE} at {url!r}: unsupported format (want {FORMAT})")
    for key in ("config", "weights_sha256", "weights_bytes"):
        if key not in header:
            raise CheckpointError(f"{CONFIG_FILE} at {url!r}: field {key!r} is missing")
    try:
        header["config"] = ModelConfig.model_validate(header["config"])
    except pydantic.ValidationError as e:
        raise CheckpointError(f"{CONFIG_FILE} at {url!r}: invalid config: {e}") from None
    return header


def read_state(url: str, header: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict at `url`, after checking its size and sha256 against the header."""
    fs, root = fsspec.core.url_to_fs(url)
    path = _join(root, WEIGHTS_FILE)
    if not fs.exists(path):
        raise CheckpointError(f"no weights at {url!r}: {WEIGHTS_FILE} is missing")
    data = fs.cat_file(path)
    if len(data) != header["weights_bytes"]:
        raise CheckpointError(
            f"{WEIGHTS_FILE} at {url!r} is {len(data)} bytes, expected "
            f"{header['weights_bytes']} (truncated or replaced file)"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != header["weights_sha256"]:
        raise CheckpointError(
            f"{WEIGHTS_FILE} at {url!r}: sha256 {digest[:16]}… does not match the recorded "
            f"{header['weights_sha256'][:16]}… (corrupt file)"
        )
    try:
        return st_load(data)
    except Exception as e:  # safetensors raises its own error types on malformed headers
        raise CheckpointError(f"{WEIGHTS_FILE} at {url!r} is not valid safetensors: {e}") from None


def check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], url: str) -> None:
    """Raise CheckpointError when `state` lacks keys, has extra ones, or wrong shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:5])}")
    if shapes:
        problems.append(f"wrong shapes ({len(shapes)}): {'; '.join(shapes[:5])}")
    if problems:
        raise CheckpointError(
            f"checkpoint at {url!r} does not match its model: " + " | ".join(problems)
        )
