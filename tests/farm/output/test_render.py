"""A campaign variant becomes a finished, decodable ad file with its copy composited."""

import json
from pathlib import Path

import pytest

from farm.campaign.expand import expand
from farm.campaign.spec import load_spec
from farm.output.media import probe_mp4
from farm.output.render import output_dir, render_variant
from farm.render.executors import LocalExecutor


@pytest.fixture(scope="module")
def rows():
    spec = load_spec(Path("examples/campaign.yaml").read_bytes())
    return expand(spec).to_pylist()


@pytest.fixture(scope="module")
def executor():
    return LocalExecutor("tiny")


def pick(rows, locale, aspect):
    row = next(r for r in rows if r["locale"] == locale and r["aspect"] == aspect)
    return row | {"steps": 2}  # a short schedule keeps the test fast


@pytest.mark.parametrize(("locale", "aspect"), [("ar-SA", "9:16"), ("zh-CN", "16:9")])
def test_variant_renders_to_a_decodable_ad(rows, executor, tmp_path, locale, aspect):
    row = pick(rows, locale, aspect)
    out = render_variant(executor, row, str(tmp_path))
    mp4 = Path(out.mp4_url)
    assert mp4.parent == Path(output_dir(str(tmp_path), row["campaign_id"]))
    info = probe_mp4(mp4.read_bytes())
    assert (info.frames, info.width, info.height) == (row["frames"], row["width"], row["height"])
    sidecar = json.loads(Path(out.sidecar_url).read_text())
    assert sidecar["provenance"]["variant_id"] == row["variant_id"]
    assert sidecar["provenance"]["extra"]["headline"] == row["headline"]
    assert sidecar["mp4"]["sha256"] == out.sha256


def test_same_variant_gives_the_same_bytes(rows, executor, tmp_path):
    row = pick(rows, "en-US", "9:16")
    first = render_variant(executor, row, str(tmp_path / "a"))
    second = render_variant(executor, row, str(tmp_path / "b"))
    assert first.sha256 == second.sha256
