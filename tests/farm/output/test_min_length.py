"""The watermark's minimum length: every entry point refuses a clip too short to carry it,
and a clip at the minimum carries a mark that `farm verify` finds (issue 19, defect 9).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from farm.campaign.expand import expand_feed
from farm.campaign.feed import load_feed
from farm.campaign.spec import SpecError, load_spec
from farm.cli import app
from farm.output.watermark import MIN_FRAMES
from farm.serve.api import in_process
from farm.settings import hash_token
from tests.helpers.inprocess import AsgiClient
from tests.helpers.paths import EXAMPLE_SPEC

runner = CliRunner()
# Its image paths made absolute: these tests load the spec as a dict, with no directory.
EXAMPLE = yaml.safe_load(
    EXAMPLE_SPEC.read_text("utf-8").replace(": assets/", f": {EXAMPLE_SPEC.parent}/assets/")
)
NEEDS = f"the watermark needs at least {MIN_FRAMES} frames"
FEED = (
    "product_id,product_name,locale,headline,cta,prompt,format,width,height,duration_s,fps\n"
    "cup,Acme Cup,en-US,Hot,Buy,a red cup,square,64,64,2,24\n"
    "cup,Acme Cup,de-DE,Heiß,Kaufen,a red cup,square,64,64,0.1,24\n"
)


def test_farm_render_refuses_a_clip_too_short_for_the_mark(tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", "a cup", "--seconds", "0.1", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "--seconds: 0.1 s at 24 fps renders 5 frames" in text, text
    assert NEEDS in text and "at least 0.71 s at 24 fps" in text, text
    assert not list(tmp_path.glob("*"))  # nothing rendered, nothing written


def test_a_spec_duration_too_short_for_the_mark_is_named() -> None:
    data = copy.deepcopy(EXAMPLE) | {"durations": [6, 0.1]}
    with pytest.raises(SpecError) as info:
        load_spec(data)
    ((path, message),) = info.value.errors
    assert path == "durations[1]" and NEEDS in message, info.value.errors


def test_a_feed_row_too_short_for_the_mark_is_named() -> None:
    table = load_feed(FEED.encode(), "csv", preset="tiny")
    with pytest.raises(SpecError) as info:
        expand_feed(table, {"preset": "tiny"})
    ((path, message),) = info.value.errors
    assert path == "feed row 2, column duration_s" and NEEDS in message, info.value.errors


@pytest.fixture(scope="module")
def api(tmp_path_factory: Any) -> Any:
    root = tmp_path_factory.mktemp("min-length")
    tokens = {hash_token("min-length"): "acme"}
    with in_process(None, str(root), tokens=tokens, jobs_address="http://127.0.0.1:9") as asgi:
        client = AsgiClient(asgi, {"authorization": "Bearer min-length"})
        yield client
        client.close()


def test_post_videos_refuses_seconds_too_short_for_the_mark(api: AsgiClient) -> None:
    body = {"prompt": "a cup", "size": "64x32", "seconds": 0.1, "fps": 24, "steps": 2}
    r = api.post("/v1/videos", json=body)
    assert r.status == 422, r.body
    got = r.json()
    assert got["param"] == "seconds" and NEEDS in got["message"], got


def test_post_campaigns_refuses_a_duration_too_short_for_the_mark(api: AsgiClient) -> None:
    data = copy.deepcopy(EXAMPLE) | {"durations": [0.1], "brand": "Nordkap"}
    for product in data["products"]:  # a served farm reads no images from a spec's paths
        product.pop("reference_image", None)
    r = api.post("/v1/campaigns", json=data)
    assert r.status == 422, r.body
    got = r.json()
    assert got["param"] == "durations[0]" and NEEDS in got["message"], got


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prompt", "size", "seed"),
    [("a red sneaker on a wooden table", "256x144", 0), ("a cup of coffee", "144x144", 1)],
)
def test_the_shortest_clip_allowed_carries_a_mark_farm_verify_finds(
    tmp_path: Path, prompt: str, size: str, seed: int
) -> None:
    shortest = math.ceil(MIN_FRAMES / 24 * 100) / 100  # what the refusal tells users to ask
    args = ["render", prompt, "--seconds", str(shortest), "--size", size, "--seed", str(seed)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (mp4,) = tmp_path.glob("*.mp4")
    checked = runner.invoke(app, ["verify", str(mp4)])
    assert checked.exit_code == 0, checked.output
    assert "match" in checked.output and "NO match" not in checked.output, checked.output
