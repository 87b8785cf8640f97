"""The packshot end card: the real reference image closes each variant, pixel-faithful.

Checked on decoded pixels: after H.264 (and the watermark) the card's packshot region is
the contain-fitted reference image within a high PSNR in the last second, and is not there
in the first. A variant without an image has no card; a bad image renders nothing.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from farm.campaign.images import ImageAccess, fit, open_image
from farm.campaign.spec import load_spec
from farm.cli import app
from farm.jobs.inputs import Campaign
from farm.output.endcard import FADE_S, apply_end_card, card_frames, render_card
from farm.output.overlay import safe_zone
from farm.output.render import render_video, variant_order
from farm.output.watermark import psnr
from farm.render.executors import LocalExecutor
from tests.helpers.paths import EXAMPLES

ASSETS = EXAMPLES / "assets"
# The card's packshot after the watermark and H.264 (crf 20, 4:2:0) vs the contain-fitted
# reference. Luma carries the shape and the label; RGB is capped by 4:2:0 chroma itself
# (this sharp drawn packshot: 37.6 dB at crf 0 with no watermark), not by the card.
LUMA_DB = 36.0
RGB_DB = 33.0


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.709 luma, as uint8."""
    y = rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def demo_spec(**changes) -> dict:
    """The example campaign with the demo's packshots and logo, small and quick."""
    spec = yaml.safe_load((EXAMPLES / "campaign.yaml").read_text(encoding="utf-8"))
    spec["brand"] = {"name": "Nordkap", "logo": "assets/logo.png"}
    spec["products"][0]["reference_image"] = "assets/flask-500.png"
    spec["locales"] = {"en-US": spec["locales"]["en-US"]}
    spec["formats"] = [{"name": "stories", "aspect": "9:16", "width": 288, "height": 512}]
    spec |= {"durations": [3], "fps": 16, "steps": 2, "preset": "tiny", "storyboard": []}
    spec["end_card"] = {"seconds": 1.5, "background": "#f4f1ea"}
    return spec | changes


def frames_of(path: str) -> np.ndarray:
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def expected_packshot(row: dict) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The contain-fitted reference over the card's background, and where the card puts it."""
    shot, logo = open_image(row["reference_image"]), open_image(row["logo"])
    _, layout = render_card(
        row["width"],
        row["height"],
        packshot=shot,
        logo=logo,
        cta=row["cta"],
        locale=row["locale"],
        aspect=row["aspect"],
        background=row["end_card_background"],
    )
    x0, y0, x1, y1 = layout.packshot
    back = Image.new("RGBA", (x1 - x0, y1 - y0), row["end_card_background"])
    back.alpha_composite(fit(shot, x1 - x0, y1 - y0, "contain"))
    return np.asarray(back.convert("RGB")), layout.packshot


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    spec = load_spec(demo_spec(), images=ImageAccess(base=str(EXAMPLES)))
    return Campaign.of_spec(spec)


@pytest.fixture(scope="module")
def executor() -> LocalExecutor:
    return LocalExecutor("tiny")


def test_the_last_second_shows_the_real_packshot(campaign, executor, tmp_path) -> None:
    rows = {r["product_id"]: r for r in campaign.variants.to_pylist()}
    row = rows["flask-500"]  # the product with an image
    out = render_video(executor, variant_order(row), str(tmp_path))
    video = frames_of(out.mp4_url)
    assert len(video) == row["frames"]  # the card replaces frames: the length is unchanged
    reference, (x0, y0, x1, y1) = expected_packshot(row)
    fps = row["fps"]
    last_second = video[-fps:, y0:y1, x0:x1]
    first_second = video[:fps, y0:y1, x0:x1]
    rgb = [psnr(reference, f) for f in last_second]
    y = [psnr(luma(reference), luma(f)) for f in last_second]
    first = [psnr(reference, f) for f in first_second]
    print(
        f"packshot PSNR in the last second: luma min {min(y):.1f} dB, RGB min {min(rgb):.1f} "
        f"dB; first second: RGB max {max(first):.1f} dB"
    )
    assert min(y) > LUMA_DB and min(rgb) > RGB_DB
    assert max(first) < 20  # generated video there, not the card
    # The card starts exactly card_frames from the end (after a short cross-fade).
    n = card_frames(row["frames"], fps, row["end_card_s"])
    assert psnr(reference, video[-n + round(FADE_S * fps), y0:y1, x0:x1]) > RGB_DB
    assert psnr(reference, video[-n - 1, y0:y1, x0:x1]) < 20


def test_before_encoding_the_packshot_is_the_reference_bit_for_bit(campaign) -> None:
    row = next(r for r in campaign.variants.to_pylist() if r["reference_image"])
    reference, (x0, y0, x1, y1) = expected_packshot(row)
    card, _ = render_card(
        row["width"],
        row["height"],
        packshot=open_image(row["reference_image"]),
        logo=open_image(row["logo"]),
        cta=row["cta"],
        locale=row["locale"],
        aspect=row["aspect"],
        background=row["end_card_background"],
    )
    assert np.array_equal(card[y0:y1, x0:x1], reference)  # composited, never generated


def test_the_end_card_is_off_without_an_image(campaign, executor, tmp_path) -> None:
    row = next(r for r in campaign.variants.to_pylist() if r["product_id"] == "trail-cup")
    assert row["reference_image"] is None and row["end_card_s"] == 0
    assert variant_order(row).end_card is None


def test_the_card_replaces_only_the_last_frames_and_at_most_half() -> None:
    video = np.full((33, 256, 144, 3), 7, np.uint8)
    shot = open_image(str(ASSETS / "flask-500.png"))
    out = apply_end_card(video, 16, seconds=1.0, packshot=shot, cta="Shop now", aspect="9:16")
    assert out.shape == video.shape
    assert np.array_equal(out[:17], video[:17])  # bit-identical before the card
    assert not np.array_equal(out[17], video[17])
    assert card_frames(33, 16, 10.0) == 16  # at most half the video
    assert card_frames(33, 16, 0.0) == 0
    assert np.array_equal(apply_end_card(video, 16, seconds=0, packshot=shot), video)


@pytest.mark.parametrize(("size", "aspect"), [((144, 256), "9:16"), ((256, 144), "16:9")])
def test_the_card_keeps_to_the_safe_zone_and_never_stretches(size, aspect) -> None:
    shot = open_image(str(ASSETS / "trail-cup.png"))
    logo = open_image(str(ASSETS / "logo.png"))
    w, h = size
    _, layout = render_card(w, h, packshot=shot, logo=logo, cta="Shop now", aspect=aspect)
    sx0, sy0, sx1, sy1 = safe_zone(w, h, aspect)
    for box in (layout.packshot, layout.logo, layout.cta):
        assert sx0 <= box[0] < box[2] <= sx1 and sy0 <= box[1] < box[3] <= sy1, box
    assert layout.logo[3] <= layout.packshot[1] and layout.packshot[3] <= layout.cta[1]
    pw, ph = layout.packshot[2] - layout.packshot[0], layout.packshot[3] - layout.packshot[1]
    assert abs(pw / ph - shot.width / shot.height) < shot.width / shot.height * (1 / pw + 1 / ph)


def test_a_bad_image_renders_and_writes_nothing(tmp_path) -> None:
    data = demo_spec()
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "logo.png").write_bytes((ASSETS / "logo.png").read_bytes())
    (tmp_path / "assets" / "flask-500.png").write_bytes(b"not a png")
    spec = tmp_path / "campaign.yaml"
    spec.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    root = tmp_path / "farm-data"
    args = ["demo", "--in-process", "--spec", str(spec), "--root", str(root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "products[0].reference_image" in result.output and "not an image" in result.output
    assert not root.exists()  # no manifest, no render, no file


def test_an_image_gone_by_render_time_fails_before_any_rendering(campaign, tmp_path) -> None:
    row = next(r for r in campaign.variants.to_pylist() if r["reference_image"])
    order = variant_order(row | {"reference_image": str(tmp_path / "gone.png")})

    class NoRendering:
        def __getattr__(self, name):
            raise AssertionError(f"rendering began ({name})")

    with pytest.raises(ValueError, match="does not exist"):
        render_video(NoRendering(), order, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
