"""Load a diffusers pipeline folder offline and wrap it in its family's adapter.

Every component is read from local files only: diffusers models are built with their
parameters on the meta device and filled from the folder's safetensors (strict keys and
shapes), transformers components use ``local_files_only=True``, and no code path can
reach the hub. A folder on fsspec storage is first copied into the cache (`cache.fetch`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.checkpoint import CheckpointError
from model.diffusers.cache import fetch, forget, is_local, local_path
from model.diffusers.configs import (
    DiffusersCheckpointError,
    components,
    pipeline_family,
    read_json,
    strip_prefix,
)

ATTENTION_BACKENDS = {"sdpa": "native", "flash": "flash", "xformers": "xformers"}


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with parameters on the meta device (no memory, no init) and real buffers.

    Buffers that are not saved (rotary tables) are computed as usual, so loading the
    state dict with ``assign=True`` leaves nothing on meta.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            p = module._parameters[name]
            module._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of one component folder (sharded or not)."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        import json

        weight_map = json.loads(indexes[0].read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    plain = [p for p in files if p.name == "diffusion_pytorch_model.safetensors"]
    files = plain or files  # not also the .fp16 variant beside it
    if not files:
        other = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" (found {', '.join(other)}: only safetensors are loaded)" if other else ""
        raise DiffusersCheckpointError(f"{folder}: no safetensors weights{hint}")
    return files


def _load_diffusers_model(cls: type, folder: Path, device: torch.device, dtype: torch.dtype):
    """A diffusers ModelMixin from `folder`: config, then strict safetensors, then dtype."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = cls.load_config(folder, local_files_only=True)
    with _parameters_on_meta():
        module = cls.from_config(config)
    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        if not path.is_file():
            raise DiffusersCheckpointError(f"{folder}: weight shard {path.name} is missing")
        try:
            state.update(load_file(path, device=str(device)))
        except (SafetensorError, OSError) as e:
            raise DiffusersCheckpointError(
                f"{path}: not a readable safetensors file: {e}"
            ) from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise DiffusersCheckpointError(
            f"{folder}: weights do not match {cls.__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}"
        )
    module.load_state_dict(state, strict=True, assign=True)
    module = module.to(device=device)
    # What diffusers keeps in float32 whatever the dtype (Wan's norms and time embedding).
    keep = getattr(cls, "_keep_in_fp32_modules", None) or []
    tensors = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in tensors:
        if tensor.is_floating_point():
            kept = any(k in name.split(".") for k in keep)
            tensor.data = tensor.data.to(torch.float32 if kept else dtype)
    return module.eval().requires_grad_(False)


def load_component(
    folder: Path, name: str, library: str, cls_name: str, device: torch.device, dtype: torch.dtype
) -> Any:
    """One pipeline component from `folder/name`, loaded offline."""
    path = folder / name
    if not path.is_dir():
        raise DiffusersCheckpointError(f"{folder}: component {name!r} ({cls_name}) is missing")
    if library not in ("diffusers", "transformers"):
        raise DiffusersCheckpointError(f"{folder}: component {name!r} is from {library!r}")
    cls = getattr(importlib.import_module(library), cls_name, None)
    if cls is None:
        raise DiffusersCheckpointError(f"{folder}: {library} has no class {cls_name!r} ({name})")
    if library == "diffusers":
        from diffusers import ModelMixin, SchedulerMixin

        if issubclass(cls, SchedulerMixin):
            return cls.from_config(cls.load_config(path, local_files_only=True))
        if issubclass(cls, ModelMixin):
            return _load_diffusers_model(cls, path, device, dtype)
        raise DiffusersCheckpointError(f"{folder}: unexpected diffusers component {cls_name}")
    from transformers import PreTrainedModel

    if not issubclass(cls, PreTrainedModel):  # a tokenizer
        return cls.from_pretrained(path, local_files_only=True)
    module = cls.from_pretrained(path, local_files_only=True, dtype=dtype)
    return module.to(device).eval().requires_grad_(False)


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load(
    ref: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    text_device: torch.device | str | None = None,
    text_dtype: torch.dtype | None = None,
    attention: str = "sdpa",
    cache_dir: str | os.PathLike | None = None,
    **family_options: Any,
):
    """The adapter (`DiffusersVideoModel`) of a `diffusers:<dir or URL>` checkpoint.

    `dtype` defaults to bfloat16 on CUDA and float32 elsewhere. `text_device` (default:
    `device`) may be "cpu" while the transformer is on CUDA, for text encoders as big as
    UMT5-XXL; `text_dtype` defaults to `dtype`. `attention` is "sdpa" (default), "flash"
    or "xformers" (CUDA only). `cache_dir` is where a remote folder is copied (default
    `$FARM_MODEL_CACHE`). `family_options` go to the family adapter (e.g. LTX's
    `frame_rate`).
    """
    from model.diffusers.base import DiffusersVideoModel

    device = torch.device(device)
    dtype = dtype or _default_dtype(device)
    text_device = torch.device(text_device) if text_device is not None else device
    text_dtype = text_dtype or dtype
    if attention not in ATTENTION_BACKENDS:
        raise ValueError(
            f"attention must be one of {', '.join(ATTENTION_BACKENDS)}, got {attention!r}"
        )
    if attention == "xformers" and device.type != "cuda":
        raise ValueError("attention 'xformers' needs a CUDA device (it has no CPU kernels)")
    url = strip_prefix(ref)
    fetched = None
    try:
        if is_local(url):
            folder = local_path(url)
            index = read_json(str(folder), "model_index.json")
            family = pipeline_family(index, url)
        else:
            fetched = folder = fetch(url, cache_dir)
            index = read_json(str(folder), "model_index.json")
            family = pipeline_family(index, url)
        adapter_cls: type[DiffusersVideoModel] = importlib.import_module(
            f"model.diffusers.{family}"
        ).ADAPTER
        parts = {}
        for name, (library, cls_name) in components(index).items():
            on_text = name in ("text_encoder", "tokenizer")
            parts[name] = load_component(
                folder,
                name,
                library,
                cls_name,
                text_device if on_text else device,
                text_dtype if on_text else dtype,
            )
        missing = [n for n in adapter_cls.REQUIRED if n not in parts]
        if missing:
            raise DiffusersCheckpointError(
                f"{url!r}: component(s) {missing} missing in model_index.json"
            )
        pipeline_cls = getattr(importlib.import_module("diffusers"), index["_class_name"])
        extra = {k: v for k, v in index.items() if not k.startswith("_") and k not in parts}
        extra = {k: v for k, v in extra.items() if not isinstance(v, list)}
        pipe = pipeline_cls(**parts, **extra)
    except DiffusersCheckpointError as e:
        if fetched is not None:
            forget(fetched, cache_dir)
        raise CheckpointError(str(e)) from None
    except Exception:
        if fetched is not None:
            forget(fetched, cache_dir)
        raise
    if attention != "sdpa":
        for name in ("transformer", "transformer_2"):
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).set_attention_backend(ATTENTION_BACKENDS[attention])
    return adapter_cls(pipe, ref=ref, folder=folder, device=device, dtype=dtype, **family_options)
