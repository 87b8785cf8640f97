"""HTTP video requests against the served model's geometry (farm.serve.wire, no Ray).

The schema checks a request's syntax; the size and the frame count are the served model's
to judge, and a refusal is a 422 that names the param and the model's rule.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from farm.serve.wire import (
    CreateVideoRequest,
    RequestError,
    VideoRequest,
    check_request_geometry,
    parse_size,
)
from model.geometry import Geometry, geometry_of

TINY = geometry_of("tiny")
LTX = Geometry(model="ltx", temporal_stride=8, spatial_stride=32, pixel_multiple=32, max_frames=257)


def test_schema_checks_syntax_only() -> None:
    assert VideoRequest(prompt="x", size=" 64X32 ").size == "64x32"
    assert VideoRequest(prompt="x", size="60x32").size == "60x32"  # the model judges sides
    with pytest.raises(ValidationError, match="WIDTHxHEIGHT"):
        VideoRequest(prompt="x", size="wide")
    assert parse_size("256x144") == (256, 144)
    with pytest.raises(ValueError, match=r"size must look like WIDTHxHEIGHT, e\.g\. 256x144"):
        parse_size("256x144x3")


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("60x32", "size: width 60 must be a positive multiple of 16 (model 'tiny')"),
        ("64x40", "size: height 40 must be a positive multiple of 16 (model 'tiny')"),
        ("0x0", "size: width 0 must be a positive multiple of 16 (model 'tiny')"),
        ("-16x16", "size: width -16 must be a positive multiple of 16 (model 'tiny')"),
    ],
)
def test_a_size_the_model_cannot_render_is_a_422_naming_the_rule(size: str, message: str):
    with pytest.raises(RequestError) as info:
        check_request_geometry(VideoRequest(prompt="x", size=size), TINY)
    error = info.value
    assert (error.status, error.code, error.param) == (422, "invalid_request", "size")
    assert error.body() == {"code": "invalid_request", "message": message, "param": "size"}


def test_the_served_models_rule_decides() -> None:
    request = VideoRequest(prompt="x", size="48x48")
    check_request_geometry(request, TINY)
    with pytest.raises(
        RequestError, match=r"width 48 must be a positive multiple of 32 \(model 'ltx'\)"
    ):
        check_request_geometry(request, LTX)
    check_request_geometry(VideoRequest(prompt="x", size="64x32"), LTX)


def test_frames_come_from_the_models_frame_rule() -> None:
    request = VideoRequest(prompt="x", seconds=1, fps=24)
    assert request.frames_for(TINY) == TINY.frames_for(1, 24) == 25
    assert request.frames_for(LTX) == 25  # 8·3 + 1
    assert VideoRequest(prompt="x", seconds=0.5, fps=16).frames_for(TINY) == 9
    assert VideoRequest(prompt="x", seconds=0.5, fps=16).frames_for(LTX) == 9


def test_video_ids_are_unchanged_by_the_geometry_check() -> None:
    # Pinned: the id of this request before the size rule moved to the model.
    request = CreateVideoRequest(
        prompt="a red bottle", size="64x32", seconds=0.5, fps=16, steps=2, tenant="acme"
    )
    engine = {"window": 16, "overlap": 4, "decode_chunk": 16}
    assert request.video_id("tiny", engine) == "332138cc0a325282e3a5988cb935792f"
