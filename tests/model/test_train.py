"""Training: a few steps on `tiny` reduce the losses and resume bit-exactly; the shipped model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import model
from model.checkpoint import read_header
from model.train import parse_args, train

TOY = ["--preset", "tiny", "--size", "32", "--frames", "5", "--vae-frames", "5",
       "--vae-crop", "16", "--vae-batch", "4", "--bank-batch", "4", "--batch", "8",
       "--vae-init", "random", "--vae-lr", "2e-3", "--vae-share", "0.3", "--lr", "2e-3",
       "--warmup", "1", "--minutes", "30", "--threads", "1", "--log-every", "5"]  # fmt: skip


def _run(out: Path, vae: int, bank: int, dit: int) -> Path:
    args = parse_args([*TOY, "--out", str(out), "--vae-steps", str(vae),
                       "--bank-steps", str(bank), "--dit-steps", str(dit)])  # fmt: skip
    return train(args)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    _run(out, vae=25, bank=3, dit=30)
    return out


def test_losses_go_down_and_everything_is_written(run):
    log = json.loads((run / "log.json").read_text())
    for phase in ("vae", "dit"):
        losses = [e["loss"] for e in log if e["phase"] == phase]
        assert len(losses) >= 5
        assert losses[-1] < losses[0], (phase, losses)
    assert (run / "loss.png").stat().st_size > 1000
    header = read_header(str(run / "checkpoint"))
    assert header["meta"]["data_seed"] == 0
    assert header["meta"]["command"].startswith("python -m model.train --preset tiny")
    assert header["meta"]["steps"] == {"vae": 25, "bank": 3, "dit": 30}
    m = model.load(str(run / "checkpoint"))
    assert m.dtype == torch.float32  # fp16 storage is cast back on load
    cond = m.encode_text(["a red bottle moves left", ""])
    assert m.velocity(torch.zeros(2, 4, 2, 4, 4), 0.5, cond).abs().sum() > 0


def test_resume_gives_the_same_weights(run, tmp_path):
    _run(tmp_path, vae=25, bank=3, dit=12)  # stopped early...
    resumed = _run(tmp_path, vae=25, bank=3, dit=30)  # ...and continued
    assert (
        read_header(str(resumed))["weights_sha256"]
        == read_header(str(run / "checkpoint"))["weights_sha256"]
    )


def test_shipped_small_checkpoint_loads_and_matches_its_sha256():
    path = model.shipped_weights("small")
    assert path is not None, "model/weights/small is missing"
    header = json.loads((path / "config.json").read_text())
    data = (path / "model.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == header["weights_sha256"]
    assert len(data) + (path / "config.json").stat().st_size < 30 * 2**20
    assert header["config"] == model.PRESETS["small"].model_dump(mode="json")
    training = (path / "TRAINING.md").read_text()
    assert header["weights_sha256"] in training and "python -m model.train" in training
    m = model.load("small")
    assert m.weights_sha256 == header["weights_sha256"]
    assert m.dtype == torch.float32
