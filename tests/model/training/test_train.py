"""Training: a few steps on `tiny` reduce the losses and resume bit-exactly; the shipped model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from model.checkpoint import read_header
from model.training.data import HELD_OUT, Clip, ClipStream, is_held_out
from model.training.train import mirror_reverse, parse_args, pool_init, train

TOY = ["--preset", "tiny", "--size", "32", "--frames", "5", "--vae-frames", "5",
       "--vae-crop", "16", "--vae-batch", "4", "--bank-batch", "4", "--batch", "8",
       "--vae-init", "random", "--vae-lr", "2e-3", "--vae-share", "0.3", "--lr", "2e-3",
       "--warmup", "1", "--minutes", "30", "--threads", "1", "--log-every", "5"]  # fmt: skip


def _run(out: Path, vae: int, bank: int, dit: int, align: int = 30) -> Path:
    args = parse_args([*TOY, "--out", str(out), "--vae-steps", str(vae),
                       "--bank-steps", str(bank), "--align-steps", str(align),
                       "--align-batch", "8", "--dit-steps", str(dit)])  # fmt: skip
    return train(args)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    _run(out, vae=25, bank=3, dit=30)
    return out


def test_losses_go_down_and_everything_is_written(run):
    log = json.loads((run / "log.json").read_text())
    for phase in ("vae", "align", "dit"):
        losses = [e["loss"] for e in log if e["phase"] == phase]
        assert len(losses) >= 5
        assert losses[-1] < losses[0], (phase, losses)
    assert (run / "loss.png").stat().st_size > 1000
    header = read_header(str(run / "checkpoint"))
    assert header["meta"]["data_seed"] == 0
    assert header["meta"]["command"].startswith("python -m model.training.train --preset tiny")
    assert header["meta"]["steps"] == {"vae": 25, "bank": 3, "align": 30, "dit": 30}
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
    # The shipped config rebuilds the preset (fields added since take their defaults).
    assert model.ModelConfig.model_validate(header["config"]) == model.PRESETS["small"]
    training = (path / "TRAINING.md").read_text()
    assert header["weights_sha256"] in training and "python -m model.training.train" in training
    m = model.load("small")
    assert m.weights_sha256 == header["weights_sha256"]
    assert m.dtype == torch.float32


def test_pool_vae_reconstructs_and_mirror_reverse_is_exact():
    m = model.build("small")
    pool_init(m.vae)
    item = ClipStream(seed=4).item(3)
    video = torch.from_numpy(item["video"])[None]
    z = m.encode(video)[0]
    recon = m.decode(z[None])[0].numpy().astype(int)
    assert abs(recon - item["video"]).mean() < 16  # 8x8 block means, in uint8 levels
    for mirror, reverse in [(True, False), (False, True), (True, True)]:
        z2, clip = mirror_reverse(z, item["clip"], mirror, reverse)
        v = item["video"][:, :, ::-1] if mirror else item["video"]
        v = v[::-1] if reverse else v
        z3 = m.encode(torch.from_numpy(np.ascontiguousarray(v))[None])[0]
        if clip is item["clip"]:  # would have been a held-out triple: left as it was
            assert torch.equal(z2, z)
        else:
            assert torch.allclose(z2, z3, atol=1e-4)


def test_mirror_reverse_relabels_and_never_makes_a_held_out_triple():
    z = torch.randn(8, 5, 8, 8)
    clip = Clip("cup", "red", "left", "beige", False, "left")
    assert mirror_reverse(z, clip, True, False)[1].motion == "right"
    z2, c2 = mirror_reverse(z, Clip("cup", "red", "zoom_in", "beige", False, "right"), False, True)
    assert (c2.motion, c2.pan) == ("zoom_out", "left") and torch.equal(z2, z.flip(1))
    for product, colour, _ in HELD_OUT:
        for m in ("left", "right", "up", "down", "zoom_in", "zoom_out"):
            c = Clip(product, colour, m, "beige", False, "")
            if is_held_out(product, colour, m):
                continue
            for flags in [(True, False), (False, True), (True, True)]:
                out = mirror_reverse(z, c, *flags)[1]
                assert not is_held_out(out.product, out.colour, out.motion)


def test_text_conv_trains_into_the_checkpoint_config(tmp_path):
    args = parse_args([*TOY, "--out", str(tmp_path), "--vae-steps", "0", "--bank-steps", "1",
                       "--align-steps", "3", "--align-batch", "4", "--dit-steps", "3",
                       "--text-conv", "3"])  # fmt: skip
    checkpoint = train(args)
    assert read_header(str(checkpoint))["config"].text_conv == 3
    assert model.load(str(checkpoint)).text.conv.weight.shape[-1] == 3


@pytest.mark.parametrize("width", ["4", "-1"])
def test_bad_text_conv_is_a_clear_cli_error(width, capsys):
    with pytest.raises(SystemExit):
        parse_args([*TOY, "--out", "x", "--text-conv", width])
    assert "--text-conv must be an odd width" in capsys.readouterr().err
