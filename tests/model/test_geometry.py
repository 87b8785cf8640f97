"""Tests for model.geometry: the one owner of a model's frame and size rules."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from model.config import PRESETS
from model.geometry import Geometry, geometry_of

SMALL = geometry_of("small")
# A model with another rule (LTX-Video style: 8n+1 frames, 32-pixel multiple).
LTX = Geometry(model="ltx", temporal_stride=8, spatial_stride=32, pixel_multiple=32, max_frames=257)


def test_presets_state_their_geometry() -> None:
    for name, config in PRESETS.items():
        g = geometry_of(name)
        assert g == config.geometry and g.model == name
        assert (g.temporal_stride, g.spatial_stride) == config.vae_stride[:2]
        assert (g.pixel_multiple, g.max_frames) == (config.pixel_multiple, config.max_frames)


def test_geometry_is_frozen_and_strict() -> None:
    with pytest.raises(ValidationError):
        SMALL.temporal_stride = 8  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        Geometry(model="x", temporal_stride=4, spatial_stride=8, pixel_multiple=16, max_frames=5,
                 fps=24)  # fmt: skip
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Geometry(model="x", temporal_stride=0, spatial_stride=8, pixel_multiple=16, max_frames=5)


def test_frame_rule_and_validity() -> None:
    assert (SMALL.frame_rule, LTX.frame_rule) == ("4n+1", "8n+1")
    assert [f for f in range(0, 14) if SMALL.is_valid_frames(f)] == [1, 5, 9, 13]
    assert [f for f in range(0, 20) if LTX.is_valid_frames(f)] == [1, 9, 17]
    assert not SMALL.is_valid_frames(5.0)  # a count is an int


def test_check_frames_names_the_rule_and_the_model() -> None:
    SMALL.check_frames(17)
    with pytest.raises(ValueError) as info:
        SMALL.check_frames(10)
    assert str(info.value) == (
        "frames must be of the form 4n+1 (1, 5, 9, ...) for model 'small', got 10"
    )
    with pytest.raises(ValueError, match=r"8n\+1 \(1, 9, 17, \.\.\.\) for model 'ltx', got 5"):
        LTX.check_frames(5)


def test_latent_and_pixel_frames_are_inverse() -> None:
    for g in (SMALL, LTX):
        for n in range(1, 20):
            assert g.latent_frames(g.pixel_frames(n)) == n
    assert (SMALL.latent_frames(17), LTX.latent_frames(17)) == (5, 3)
    assert (SMALL.pixel_frames(5), LTX.pixel_frames(3)) == (17, 17)
    with pytest.raises(ValueError, match="model 'small'"):
        SMALL.latent_frames(18)
    with pytest.raises(ValueError, match="latent_frames must be >= 1, got 0"):
        SMALL.pixel_frames(0)


def test_first_pixel_frame_of_each_latent_frame() -> None:
    # Latent 0 is pixel 0; latent b >= 1 covers pixels 4b-3 .. 4b (8b-7 .. 8b for LTX).
    assert [SMALL.first_pixel_frame(b) for b in range(4)] == [0, 1, 5, 9]
    assert [LTX.first_pixel_frame(b) for b in range(3)] == [0, 1, 9]
    assert SMALL.first_pixel_frame(2.5) == 7.0  # a window's middle maps linearly
    assert SMALL.first_pixel_frame(0.5) == 0  # never before the first frame


def test_frames_for_rounds_to_the_nearest_valid_count() -> None:
    assert SMALL.frames_for(1, 24) == 25
    assert SMALL.frames_for(0.01, 24) == 5  # at least one stride
    assert SMALL.frames_for(2.5, 25) == 65  # 62.5 frames: n = round(15.625) = 16
    assert LTX.frames_for(1, 24) == 25 and LTX.frames_for(1, 25) == 25
    assert all(SMALL.is_valid_frames(SMALL.frames_for(s, 24)) for s in (0.3, 1.1, 6, 60))
    with pytest.raises(ValueError, match="seconds and fps must be positive, got 0 s at 24 fps"):
        SMALL.frames_for(0, 24)
    with pytest.raises(ValueError, match="positive"):
        SMALL.frames_for(1, 0)


@pytest.mark.parametrize("fps", [1, 8, 12, 24, 25, 30, 60])
def test_frame_counts_equal_frames_for_elementwise(fps: int) -> None:
    seconds = np.array([0.01, 0.1, 0.5, 1, 1.1, 2.5, 6, 15, 29.97, 60, 120])
    for g in (SMALL, LTX):
        got = g.frame_counts(seconds, fps)
        assert got.dtype == np.int32
        assert got.tolist() == [g.frames_for(float(s), fps) for s in seconds]
    with pytest.raises(ValueError, match="positive"):
        SMALL.frame_counts([1.0, 0.0], fps)


def test_max_latent_frames_bounds_a_window() -> None:
    assert SMALL.max_latent_frames == SMALL.latent_frames(SMALL.max_frames)
    assert LTX.max_latent_frames == 33  # 257 = 8·32 + 1


def test_check_side_and_size_name_the_side_and_the_model() -> None:
    SMALL.check_size(256, 144)
    SMALL.check_side("width", np.int32(32))  # numpy integers are sides too
    cases = [
        (1000, "width 1000 must be a positive multiple of 16 (model 'small')"),
        (0, "width 0 must be a positive multiple of 16 (model 'small')"),
        (-16, "width -16 must be a positive multiple of 16 (model 'small')"),
        (16.0, "width 16.0 must be a positive multiple of 16 (model 'small')"),
        ("16", "width '16' must be a positive multiple of 16 (model 'small')"),
    ]
    for value, message in cases:
        with pytest.raises(ValueError) as info:
            SMALL.check_side("width", value)
        assert str(info.value) == message
    with pytest.raises(ValueError, match=r"^height 144 must be a positive multiple of 32 "):
        LTX.check_size(256, 144)
    with pytest.raises(ValueError, match=r"^width 100 "):  # width is checked first
        SMALL.check_size(100, 100)


def test_side_problem_leaves_the_name_to_the_caller() -> None:
    assert SMALL.side_problem(256) is None
    assert SMALL.side_problem(1000) == "1000 must be a positive multiple of 16 (model 'small')"
    assert LTX.side_problem(48) == "48 must be a positive multiple of 32 (model 'ltx')"


def test_latent_size_and_tokens() -> None:
    assert SMALL.latent_size(256, 144) == (18, 32)  # (H, W)
    assert LTX.latent_size(256, 128) == (4, 8)
    with pytest.raises(ValueError, match=r"height 100 .* \(model 'small'\)"):
        SMALL.latent_size(256, 100)
    # 25 frames at 144x256: 7 latent frames x 9 x 16 tokens.
    assert SMALL.latent_tokens(25, 256, 144) == 7 * 9 * 16
    tokens = SMALL.latent_tokens(np.array([5, 25]), np.array([64, 256]), np.array([64, 144]))
    assert tokens.tolist() == [2 * 4 * 4, 7 * 9 * 16]
    assert LTX.latent_tokens(17, 256, 128) == 3 * 4 * 8


def test_describe_states_every_rule() -> None:
    text = SMALL.describe()
    assert text == "model 'small': frames 4n+1, width and height multiples of 16, " + (
        "at most 65 frames per window"
    )


def test_geometry_of_a_checkpoint_directory(tmp_path) -> None:
    config = PRESETS["tiny"].model_copy(update={"name": "mine", "max_frames": 33})
    (tmp_path / "config.json").write_text(json.dumps({"config": config.model_dump(mode="json")}))
    g = geometry_of(str(tmp_path))
    assert (g.model, g.max_frames, g.max_latent_frames) == ("mine", 33, 9)
    assert geometry_of(str(tmp_path) + "/") == g


def test_geometry_of_an_unknown_reference_names_it(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"model 'huge' is neither a preset .*small.*tiny"):
        geometry_of("huge")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"readable config\.json"):
        geometry_of(str(tmp_path))


def test_geometry_needs_neither_torch_nor_ray() -> None:
    code = (
        "import sys; from model.geometry import geometry_of; geometry_of('small'); "
        "assert not {'torch', 'ray'} & set(sys.modules), sorted({'torch', 'ray'} & "
        "set(sys.modules))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_latent_step_makes_the_frame_rule_coarser():
    """CogVideoX: stride 4 but odd latent counts, so clips are 8n+1 frames (13 latents for 49)."""
    cog = Geometry(model="cog", temporal_stride=4, spatial_stride=8, pixel_multiple=16,
                   max_frames=49, latent_step=2)  # fmt: skip
    assert cog.frame_rule == "8n+1" and cog.latent_frames(49) == 13
    assert not cog.is_valid_frames(45) and cog.frames_for(6, 8) == 49
    assert cog.frame_counts([6.0, 1.0], [8, 8]).tolist() == [49, 9]
    with pytest.raises(ValueError, match=r"8n\+1 \(1, 9, 17"):
        cog.check_frames(45)
