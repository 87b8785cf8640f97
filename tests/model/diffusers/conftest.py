"""Tiny random diffusers checkpoints of every family, built and saved once per session.

Loading runs with HF_HUB_OFFLINE=1 and without a network: a test that reached the hub
would fail, and `test_offline` checks that nothing tried.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from model.diffusers import testing as tiny


@pytest.fixture(scope="session", autouse=True)
def hub_offline() -> Iterator[None]:
    """Every load in these tests runs as on a machine with no hub access."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Callable[[str], tuple[object, Path]]:
    """checkpoint(family) -> (the in-memory diffusers pipeline, the folder it was saved to)."""
    torch.set_num_threads(2)
    built: dict[str, tuple[object, Path]] = {}

    def get(name: str) -> tuple[object, Path]:
        if name not in built:
            pipe = tiny.BUILDERS[name]()
            pipe.set_progress_bar_config(disable=True)
            folder = tmp_path_factory.mktemp(name)
            pipe.save_pretrained(folder)
            built[name] = (pipe, folder)
        return built[name]

    return get


@pytest.fixture(scope="session")
def loaded(checkpoint) -> Callable[[str], object]:
    """loaded(family) -> the checkpoint loaded through `model.load("diffusers:...")`."""
    import model

    models: dict[str, object] = {}

    def get(name: str) -> object:
        if name not in models:
            models[name] = model.load(f"diffusers:{checkpoint(name)[1]}")
        return models[name]

    return get
