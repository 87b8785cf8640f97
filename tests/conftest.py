"""Shared fixtures: models are built once per session (building is the slow part)."""

import pytest
import torch

import model


@pytest.fixture(scope="session")
def tiny() -> model.VideoModel:
    """The `tiny` preset with a random (non-zero) init: every output depends on its input."""
    torch.set_num_threads(2)
    return model.load("tiny")
