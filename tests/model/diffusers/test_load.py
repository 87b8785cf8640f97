"""Loading diffusers folders: offline only, cached once from fsspec URLs, clear errors."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import pytest
import torch

import model
from model.checkpoint import CheckpointError
from model.diffusers.cache import CACHE_ENV, MANIFEST, folder_digest


@pytest.fixture
def memory_url(checkpoint):
    """The tiny Wan 2.1 folder uploaded to fsspec's memory filesystem."""
    _, folder = checkpoint("wan21")
    url = f"memory://ckpt-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.put(str(folder), url, recursive=True)
    yield url
    if fs.exists(url):
        fs.rm(url, recursive=True)


def _copy(folder: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(folder, dest)
    return dest


def test_loading_never_opens_a_socket(checkpoint, monkeypatch):
    """HF_HUB_OFFLINE is set for the session; here any connection attempt fails the load."""
    _, folder = checkpoint("wan21")

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    m = model.load(f"diffusers:{folder}")
    assert m.encode_text(["offline"]).emb.shape[1] == 512


def test_an_unsupported_pipeline_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    supported = r"CogVideoXPipeline, LTXImageToVideoPipeline, LTXPipeline"
    with pytest.raises(CheckpointError, match=rf"'FluxPipeline'.*{supported}"):
        model.load(f"diffusers:{tmp_path}")
    with pytest.raises(ValueError, match="FluxPipeline"):
        model.geometry_of(f"diffusers:{tmp_path}")


def test_a_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(CheckpointError, match=r"model_index\.json is missing"):
        model.load(f"diffusers:{tmp_path}")


def test_a_missing_component_is_named(checkpoint, tmp_path):
    folder = _copy(checkpoint("wan21")[1], tmp_path)
    shutil.rmtree(folder / "transformer")
    with pytest.raises(
        CheckpointError, match="'transformer' \\(WanTransformer3DModel\\) is missing"
    ):
        model.load(f"diffusers:{folder}")


def test_a_truncated_safetensors_file(checkpoint, tmp_path):
    folder = _copy(checkpoint("wan21")[1], tmp_path)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model\.safetensors"):
        model.load(f"diffusers:{folder}")


def test_a_url_is_copied_once_checked_and_digested_like_the_folder(
    checkpoint, memory_url, tmp_path
):
    cache = tmp_path / "cache"
    m = model.load(f"diffusers:{memory_url}", cache_dir=cache)
    entries = [p for p in cache.iterdir()]
    assert len(entries) == 1 and (entries[0] / MANIFEST).exists()
    assert m.weights_digest() == folder_digest(checkpoint("wan21")[1])
    stamp = (entries[0] / MANIFEST).stat().st_mtime_ns
    again = model.load(f"diffusers:{memory_url}", cache_dir=cache)
    assert (entries[0] / MANIFEST).stat().st_mtime_ns == stamp  # reused, not copied again
    assert again.weights_digest() == m.weights_digest()


def test_the_cache_directory_comes_from_the_environment(memory_url, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    model.load(f"diffusers:{memory_url}")
    assert len(list((tmp_path / "env-cache").iterdir())) == 1


@pytest.mark.parametrize("damage", ["missing url", "unsupported", "truncated"])
def test_a_bad_url_leaves_nothing_in_the_cache(memory_url, tmp_path, damage):
    fs = fsspec.filesystem("memory")
    url = memory_url
    if damage == "missing url":
        url = memory_url + "-nowhere"
    elif damage == "unsupported":
        fs.pipe_file(f"{url}/model_index.json", b'{"_class_name": "FluxPipeline"}')
    else:
        path = f"{url}/transformer/diffusion_pytorch_model.safetensors"
        fs.pipe_file(path, fs.cat_file(path)[:500])
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError):
        model.load(f"diffusers:{url}", cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())


def test_geometry_of_reads_json_without_torch(checkpoint):
    refs = {name: f"diffusers:{checkpoint(name)[1]}" for name in ("wan21", "ltx", "cogvideox")}
    code = (
        "import sys, json; from model.geometry import geometry_of; "
        f"refs = {refs!r}; "
        "out = {k: geometry_of(v).model_dump() for k, v in refs.items()}; "
        "assert 'torch' not in sys.modules, 'torch was imported'; print(json.dumps(out))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["wan21"]["temporal_stride"], out["wan21"]["pixel_multiple"]) == (4, 16)
    assert (out["ltx"]["temporal_stride"], out["ltx"]["pixel_multiple"]) == (8, 32)
    assert (out["cogvideox"]["temporal_stride"], out["cogvideox"]["pixel_multiple"]) == (4, 16)
    assert out["cogvideox"]["max_frames"] == 9  # its transformer's sample_frames
    assert out["cogvideox"]["latent_step"] == 2  # odd latent counts: 8n+1 frames


def test_knobs_are_checked(checkpoint):
    folder = checkpoint("wan21")[1]
    with pytest.raises(ValueError, match=r"xformers.*CUDA"):
        model.load(f"diffusers:{folder}", attention="xformers")
    with pytest.raises(ValueError, match="attention must be one of"):
        model.load(f"diffusers:{folder}", attention="magic")


def test_sharded_weights_and_file_urls_load(checkpoint, loaded, tmp_path):
    pipe, _ = checkpoint("wan21")
    pipe.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert list((tmp_path / "sharded" / "transformer").glob("*.safetensors.index.json"))
    m = model.load(f"diffusers:file://{tmp_path / 'sharded'}")
    reference = loaded("wan21")
    x = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    cond = reference.encode_text(["sharded"])
    assert torch.equal(m.velocity(x, 0.7, cond), reference.velocity(x, 0.7, cond))


def test_geometry_of_a_url_and_text_on_another_device(memory_url, checkpoint):
    assert model.geometry_of(f"diffusers:{memory_url}").frame_rule == "4n+1"
    m = model.load(f"diffusers:{checkpoint('wan21')[1]}", text_device="cpu", dtype=torch.bfloat16)
    cond = m.encode_text(["a"])
    assert cond.emb.dtype == torch.bfloat16 and m.pipe.text_encoder.dtype == torch.bfloat16
