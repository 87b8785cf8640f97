"""Invisible variant-id watermark: round trip, H.264, 0.5x resize, PSNR, no false positives."""

from __future__ import annotations

import numpy as np
import pytest

from farm.output import watermark as wm
from farm.output.media import encode_mp4
from farm.testing.clips import half_size, noise_clip, scene_clip

VARIANT = "3fa85f6457174562b3fc"  # 20 hex: a variant id
OTHER = "9c1e0d7a5b3f2e41"  # 16 hex: a campaign id


@pytest.fixture(scope="module", params=["scene", "noise"])
def clip(request) -> tuple[np.ndarray, np.ndarray]:
    """(original, watermarked with VARIANT) for each content type."""
    frames = scene_clip() if request.param == "scene" else noise_clip()
    return frames, wm.embed(frames, VARIANT)


def test_round_trip_without_compression(clip):
    original, marked = clip
    assert marked.shape == original.shape and marked.dtype == np.uint8
    result = wm.extract(marked)
    assert wm.bit_accuracy(result.bits, wm.payload_bits(VARIANT)) == 1.0
    assert result.found and result.payload_hex == VARIANT[:16]
    np.testing.assert_array_equal(wm.embed(original, VARIANT), marked)  # deterministic


def test_invisible(clip):
    original, marked = clip
    assert wm.psnr(original, marked) >= 40.0


def test_survives_h264_crf28(clip):
    result = wm.verify_file(encode_mp4(clip[1], 24, crf=28), expected=VARIANT)
    assert wm.bit_accuracy(result.bits, wm.payload_bits(VARIANT)) >= 0.95
    assert result.found and result.payload_hex == VARIANT[:16] and result.matches


def test_survives_half_size_then_h264(clip):
    result = wm.verify_file(encode_mp4(half_size(clip[1]), 24, crf=28), expected=VARIANT)
    assert wm.bit_accuracy(result.bits, wm.payload_bits(VARIANT)) >= 0.95
    assert result.matches


def test_unmarked_and_other_id(clip, tmp_path):
    original, _ = clip
    clean = wm.verify_file(encode_mp4(original, 24, crf=23), expected=VARIANT)
    assert not clean.found and clean.payload_hex is None and clean.matches is False
    path = tmp_path / "other.mp4"
    path.write_bytes(encode_mp4(wm.embed(original, OTHER), 24, crf=23))
    other = wm.verify_file(path, expected=VARIANT)
    assert other.found and other.payload_hex == OTHER and other.matches is False


@pytest.mark.parametrize(
    ("bad", "rule"),
    [("xyz", "16 or 20 hex"), ("g" * 16, "hex digits"), ("0" * 18, "16 or 20 hex"), (7, "hex")],
)
def test_invalid_ids(bad, rule):
    with pytest.raises(ValueError, match=rule):
        wm.payload_bits(bad)
    with pytest.raises(ValueError, match=rule):
        wm.embed(np.zeros((1, 16, 16, 3), np.uint8), bad)


def test_payload_bits_and_accuracy():
    bits = wm.payload_bits("8000000000000001ffff")
    assert bits.shape == (64,) and bits[0] == 1 and bits[-1] == 1 and bits[1:-1].sum() == 0
    assert wm.bit_accuracy(bits, bits) == 1.0
    assert wm.bit_accuracy(bits, 1 - bits) == 0.0
    with pytest.raises(ValueError, match="length"):
        wm.bit_accuracy(bits, bits[:8])


def test_vertical_format_and_bad_frames():
    vertical = np.ascontiguousarray(scene_clip(frames=17).transpose(0, 2, 1, 3))  # 9:16
    result = wm.verify_file(encode_mp4(wm.embed(vertical, VARIANT), 24, crf=23))
    assert result.payload_hex == VARIANT[:16]
    with pytest.raises(ValueError, match="short side"):
        wm.embed(np.zeros((2, 16, 64, 3), np.uint8), VARIANT)
    with pytest.raises(ValueError, match="uint8"):
        wm.embed(np.zeros((2, 64, 64, 3), np.float32), VARIANT)


# ---- wired into finished files: adaptive strength, honest records, `farm verify` -----------


@pytest.fixture(scope="module")
def model_clip() -> np.ndarray:
    """A 2 s 256x144 render of the untrained `tiny` model: noise-like content."""
    from farm.render.engine import VideoJob, render
    from farm.render.executors import LocalExecutor

    job = VideoJob(
        geometry="tiny",
        prompt="a cup on a table",
        frames=25,
        height=144,
        width=256,
        fps=12,
        steps=4,
        seed=3,
    )
    return np.asarray(render(LocalExecutor("tiny"), job))


def test_model_render_is_marked_and_verified_on_the_encoded_file(model_clip):
    _, data, record = wm.mark_and_encode(model_clip, VARIANT, encode_mp4_12)
    assert record.verified and record.decodes and record.payload == VARIANT[:16]
    assert record.bit_accuracy >= 0.95
    assert record.psnr_db >= 37.0 and record.strength in [s for s, _ in wm.LADDER]
    assert wm.verify_file(data, expected=VARIANT).matches
    again = wm.mark_and_encode(model_clip, VARIANT, encode_mp4_12)
    assert again[1] == data  # deterministic: the same render gives the same file


def encode_mp4_12(frames: np.ndarray) -> bytes:
    return encode_mp4(frames, 12)


def test_clips_too_small_to_carry_a_mark_say_so(model_clip):
    tiny = np.ascontiguousarray(model_clip[:5, :64, :64])  # 5 frames of 64x64
    _, _, record = wm.mark_and_encode(tiny, VARIANT, encode_mp4_12)
    assert not (record.verified or record.decodes) and "chips per coded bit" in record.reason
    assert record.bit_accuracy < 0.95
    small = np.zeros((3, 16, 16, 3), np.uint8)
    frames, _, record = wm.mark_and_encode(small, VARIANT, encode_mp4_12)
    assert not record.verified and "not marked" in record.reason and frames is small


def test_outputs_carry_the_mark_and_farm_verify_reads_it(model_clip, tmp_path):
    import json

    from typer.testing import CliRunner

    from farm.cli import app
    from farm.output.media import Provenance, write_video_outputs

    prov = Provenance(
        model="tiny",
        weights_sha256="0" * 64,
        seed=3,
        prompt="a cup",
        campaign_id=OTHER,
        variant_id=VARIANT,
    )
    out = write_video_outputs(str(tmp_path), VARIANT, model_clip, 12, prov, watermark=VARIANT)
    side = json.loads((tmp_path / f"{VARIANT}.json").read_text())
    assert side["watermark"] == out.watermark and out.watermark["verified"] is True
    runner = CliRunner()
    result = runner.invoke(app, ["verify", out.mp4_url])
    assert result.exit_code == 0, result.output
    assert f"present, payload {VARIANT[:16]}" in result.output
    assert f"tagged id {VARIANT[:16]}: match" in result.output
    result = runner.invoke(app, ["verify", out.mp4_url, "--expected", OTHER])
    assert result.exit_code == 1 and "NO match" in result.output
    plain = tmp_path / "plain.mp4"
    plain.write_bytes(encode_mp4(model_clip, 12))
    result = runner.invoke(app, ["verify", str(plain)])
    assert result.exit_code == 1 and "no blind read" in result.output
    result = runner.invoke(app, ["verify", str(tmp_path / "missing.mp4")])
    assert result.exit_code == 2 and "Traceback" not in result.output
