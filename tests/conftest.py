"""Shared fixtures: models and the local Ray cluster are built once per session, when first used."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import fsspec
import pytest
import torch

import model

if TYPE_CHECKING:
    from farm.testing.ray_head import RayHead


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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[RayHead]:
    """The session's local Ray head, this process connected to it as a driver.

    Yields the head: `dashboard_url` (the Jobs API), `gcs_address`, `temp_dir` and
    `metrics_port` (Ray's Prometheus endpoint). At session end, processes left behind
    that name a test's temp dir (a job's driver, say) go down with the head.
    """
    from tests.helpers.cluster import local_cluster  # Ray is imported only where used

    with local_cluster(markers=(str(tmp_path_factory.getbasetemp()),)) as head:
        yield head


@pytest.fixture(scope="session")
def serve_http(ray_cluster: RayHead) -> Iterator[str]:
    """Serve on the session's cluster: yields its HTTP proxy's base URL (free loopback port)."""
    from tests.helpers.cluster import serve_started

    with serve_started(ray_cluster) as url:
        yield url


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory) -> str:
    """A tiny random Wan 2.1 diffusers checkpoint, saved once: its `diffusers:` reference."""
    pytest.importorskip("diffusers")
    from model.diffusers import testing as tiny_pipelines

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("tiny-wan")
    tiny_pipelines.wan21().save_pretrained(folder)
    return f"diffusers:{folder}"
