"""Weights round-trip through fsspec; bad checkpoints get clear errors."""

import json

import fsspec
import pytest
import torch

import model
from model.checkpoint import CONFIG_FILE, WEIGHTS_FILE


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def url(storage_url):
    """Where the test writes: local disk and memory:// (tests/conftest.py)."""
    return storage_url


def test_round_trip(tiny, url):
    digest = model.save(tiny, url, meta={"note": "test"})
    loaded = model.load(url)
    assert same_weights(tiny, loaded)
    assert loaded.config == tiny.config and loaded.weights_sha256 == digest
    x = model.noise((1, 4, 2, 4, 4), 0)
    cond = tiny.encode_text(["x"])
    assert torch.equal(
        tiny.velocity(x, 0.3, cond), loaded.velocity(x, 0.3, loaded.encode_text(["x"]))
    )
    fs, root = fsspec.core.url_to_fs(url)
    assert not [p for p in fs.ls(root, detail=False) if ".tmp-" in p]


def test_load_with_dtype(tiny, url):
    model.save(tiny, url)
    assert model.load(url, dtype=torch.bfloat16).dtype == torch.bfloat16


def corrupt(url: str, edit) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    path = f"{root}/{WEIGHTS_FILE}"
    fs.pipe_file(path, edit(fs.cat_file(path)))


def test_truncated_file_is_named(tiny, url):
    model.save(tiny, url)
    corrupt(url, lambda data: data[: len(data) // 2])
    with pytest.raises(model.CheckpointError, match="truncated"):
        model.load(url)


def test_flipped_byte_fails_the_sha256(tiny, url):
    model.save(tiny, url)
    corrupt(url, lambda data: data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    with pytest.raises(model.CheckpointError, match=r"sha256 .* does not match"):
        model.load(url)


def edit_header(url: str, edit) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    path = f"{root}/{CONFIG_FILE}"
    header = json.loads(fs.cat_file(path))
    edit(header)
    fs.pipe_file(path, json.dumps(header).encode())


def test_mismatched_config_names_the_keys(tiny, url):
    model.save(tiny, url)  # tiny weights under a config with one more block
    edit_header(url, lambda h: h["config"].update(depth=3))
    with pytest.raises(model.CheckpointError, match=r"missing keys .*dit\.blocks\.2"):
        model.load(url)
    edit_header(url, lambda h: h["config"].update(depth=2, dim=64, heads=2, ffn_dim=96))
    with pytest.raises(model.CheckpointError, match="wrong shapes"):
        model.load(url)


def test_invalid_config_and_missing_files(tiny, url, tmp_path):
    with pytest.raises(model.CheckpointError, match=r"config\.json is missing"):
        model.load(str(tmp_path / "nothing-here"))
    model.save(tiny, url)
    edit_header(url, lambda h: h["config"].update(dim="wide"))
    with pytest.raises(model.CheckpointError, match="invalid config"):
        model.load(url)
    edit_header(url, lambda h: h.pop("weights_sha256"))
    with pytest.raises(model.CheckpointError, match="'weights_sha256' is missing"):
        model.load(url)


def test_missing_weights_file(tiny, url):
    model.save(tiny, url)
    fs, root = fsspec.core.url_to_fs(url)
    fs.rm(f"{root}/{WEIGHTS_FILE}")
    with pytest.raises(model.CheckpointError, match=r"model\.safetensors is missing"):
        model.load(url)


def test_unknown_preset_lists_known_names():
    with pytest.raises(model.CheckpointError, match="no checkpoint at 'huge'"):
        model.load("huge")
