"""Shared fixtures: models are built once per session (building is the slow part)."""

import uuid

import fsspec
import pytest
import torch

import model


@pytest.fixture(scope="session")
def tiny() -> model.VideoModel:
    """The `tiny` preset with a random (non-zero) init: every output depends on its input."""
    torch.set_num_threads(2)
    return model.load("tiny")


@pytest.fixture(scope="session")
def shipped() -> model.VideoModel:
    """The shipped `small` checkpoint in eval mode, loaded once (tests only read it)."""
    torch.set_num_threads(2)
    return model.load("small").eval()


@pytest.fixture(params=["local", "memory"])
def storage_url(request, tmp_path):
    """A fresh directory URL on local disk, then on fsspec's memory filesystem."""
    if request.param == "local":
        yield str(tmp_path / "store")
        return
    url = f"memory://{request.node.originalname}-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)
