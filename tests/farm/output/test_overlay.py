"""Text overlay: RTL layout, placement, fading, wrapping.

Needs the system fonts and FriBiDi that scripts/install-system-deps.sh installs (`make test`
runs it); without them these tests fail loudly rather than skip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from farm.output import fonts as ft
from farm.output import overlay as ov
from tests.helpers.overlay import COPY, noise


@pytest.fixture(scope="module")
def fonts() -> ft.FontSet:
    return ft.find_fonts()


# --- right-to-left ----------------------------------------------------------------------------


def test_rtl_headline_is_right_aligned(fonts):
    w, h = 640, 360
    headline = "تخفيضات الصيف على كل شيء في المتجر هذا الأسبوع فقط لا تفوتوا الفرصة"
    layer = ov.render_text_layer(w, h, headline=headline, cta="تسوق", locale="ar-SA", fonts=fonts)
    assert len(layer.headline_lines) >= 2
    sx1 = layer.safe_zone[2]
    _, hy0, hx1, hy1 = layer.headline_box
    assert hx1 == sx1  # the backing box hugs the right edge of the safe zone
    # White text pixels, line by line: right edges line up, left edges are ragged.
    rgb, alpha = layer.rgba[..., :3], layer.rgba[..., 3]
    text = (rgb.min(axis=2) > 200) & (alpha > 200)
    text[:hy0] = text[hy1:] = False
    rows = np.flatnonzero(text.any(axis=1))
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    bands = [b for b in bands if len(b) > layer.headline_size // 3]
    assert len(bands) >= 2
    rights = [np.flatnonzero(text[b].any(axis=0))[-1] for b in bands]
    lefts = [np.flatnonzero(text[b].any(axis=0))[0] for b in bands]
    assert np.ptp(rights) <= layer.headline_size * 0.25
    assert np.ptp(lefts) > layer.headline_size


@pytest.mark.parametrize(
    "wide",
    ["ببببببببب", "iPhoneXYZ"],  # same font run as the alef / a Latin run in another font
)
def test_rtl_headline_puts_the_first_word_at_the_right(fonts, wide):
    layer = ov.render_text_layer(
        640, 360, headline=f"ا {wide}", cta="", locale="ar-SA", aspect="16:9", fonts=fonts
    )
    text = (layer.rgba[..., :3].min(axis=2) > 200) & (layer.rgba[..., 3] > 200)
    cols = np.flatnonzero(text.any(axis=0))
    space = int(np.argmax(np.diff(cols)))  # the widest gap between ink columns: the space
    left, right = cols[: space + 1], cols[space + 1 :]
    # The narrow alef (first logically) is the ink right of the space, the wide word left.
    assert np.ptp(right) < layer.headline_size / 2 < 2 * layer.headline_size < np.ptp(left)


def test_latin_brand_inside_arabic_keeps_its_order(fonts):
    pairs = ft.coverage("على iPhone 15", "ar-SA", fonts)
    assert {f.family for c, f in pairs if c in "iPhone15"} == {"NotoSans"}
    layer = ov.render_text_layer(
        640, 360, headline="على iPhone 15", cta="", locale="ar-SA", fonts=fonts
    )
    assert layer.headline_lines == ("على iPhone 15",)


# --- compositing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("locale", "aspect", "size"), [
    ("en-US", "16:9", (180, 320)),
    ("ar-SA", "9:16", (320, 180)),
    ("ja-JP", "1:1", (200, 200)),
])  # fmt: skip
def test_frames_change_only_inside_the_text_box(fonts, locale, aspect, size):
    h, w = size
    frames = noise(3, h, w)
    before = frames.copy()
    headline, cta = COPY[locale]
    out = ov.render_overlay(
        frames, headline=headline, cta=cta, locale=locale, aspect=aspect, fade_s=0, fonts=fonts
    )
    assert np.array_equal(frames, before), "the input must not be modified"
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, frames)

    box = ov.text_box(w, h, headline=headline, cta=cta, locale=locale, aspect=aspect, fonts=fonts)
    assert box is not None
    x0, y0, x1, y1 = box
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    changed = (out != frames).any(axis=(0, 3))
    assert not (changed & ~inside).any()
    assert changed[inside].mean() > 0.05
    # Tighter: only pixels the layer actually draws change.
    layer = ov.render_text_layer(
        w, h, headline=headline, cta=cta, locale=locale, aspect=aspect, fonts=fonts
    )
    assert not (changed & (layer.rgba[..., 3] == 0)).any()


@pytest.mark.parametrize("locale", ["en-US", "ja-JP", "ar-SA", "th-TH", "hi-IN"])
def test_9x16_keeps_out_of_the_platform_bands(fonts, locale):
    w, h = 360, 640
    headline, cta = COPY[locale]
    layer = ov.render_text_layer(
        w, h, headline=headline, cta=cta, locale=locale, aspect="9:16", fonts=fonts
    )
    drawn_rows = np.flatnonzero(layer.rgba[..., 3].any(axis=1))
    assert drawn_rows.min() >= 0.14 * h
    assert drawn_rows.max() < 0.80 * h
    _, hy0, _, hy1 = layer.headline_box
    _, cy0, _, cy1 = layer.cta_box
    assert 0.14 * h <= hy0 and hy1 <= h / 3  # headline: upper third, below the top band
    assert cy1 <= 0.80 * h and cy0 > 0.5 * h  # CTA: just above the bottom band
    assert hy1 < cy0


@settings(max_examples=15, deadline=None)
@given(
    words=st.lists(
        st.sampled_from(["Sale", "夏季大促", "تخفيضات", "ลดราคา", "सेल", "הנחה", "50%", "!"]),
        min_size=1,
        max_size=40,
    ),
    locale=st.sampled_from(["en-US", "ar-SA", "th-TH", "zh-CN"]),
)
def test_any_copy_stays_inside_the_safe_zone(fonts, words, locale):
    w, h = 180, 320
    layer = ov.render_text_layer(
        w, h, headline=" ".join(words), cta=" ".join(words[:3]), locale=locale, fonts=fonts
    )
    sx0, sy0, sx1, sy1 = layer.safe_zone
    x0, y0, x1, y1 = layer.box
    assert sx0 <= x0 and x1 <= sx1 and sy0 <= y0 and y1 <= sy1


def test_other_formats_keep_five_percent_margins(fonts):
    w, h = 640, 360
    headline, cta = COPY["en-US"]
    for aspect in ("16:9", "1:1", "4:5"):
        layer = ov.render_text_layer(
            w, h, headline=headline, cta=cta, locale="en-US", aspect=aspect, fonts=fonts
        )
        assert layer.safe_zone == (32, 18, 608, 342)
        x0, y0, x1, y1 = layer.box
        assert x0 >= 32 and y0 >= 18 and x1 <= 608 and y1 <= 342
    assert ov.safe_zone(1080, 1920) == (65, 269, 1015, 1536)  # inferred 9:16


def test_fade_in_and_out(fonts):
    fps, start, end, fade = 10, 0.2, 1.0, 0.2
    frames = np.full((12, 90, 160, 3), 60, np.uint8)
    out = ov.render_overlay(
        frames, headline="Hello", cta="Go", locale="en-US", fps=fps, start_s=start, end_s=end,
        fade_s=fade, fonts=fonts,
    )  # fmt: skip
    alpha = ov.overlay_alpha(12, fps, start_s=start, end_s=end, fade_s=fade)
    np.testing.assert_allclose(alpha[[0, 2, 3, 6, 9, 10, 11]], [0, 0, 0.5, 1, 0.5, 0, 0], atol=1e-6)

    # Before and at the start, and from the end on: untouched.
    for f in (0, 1, 2, 10, 11):
        assert np.array_equal(out[f], frames[f]), f
    # Mid-segment: the full layer, exactly as straight-alpha "over" gives it.
    layer = ov.render_text_layer(160, 90, headline="Hello", cta="Go", locale="en-US", fonts=fonts)
    a = layer.rgba[..., 3:].astype(np.float64) / 255
    full = np.rint(frames[0] * (1 - a) + layer.rgba[..., :3] * a).astype(np.uint8)
    assert np.array_equal(out[6], full)
    # Half-way through the fade-in: half of the change.
    d_half = np.abs(out[3].astype(int) - frames[3]).sum()
    d_full = np.abs(out[6].astype(int) - frames[6]).sum()
    assert 0.4 < d_half / d_full < 0.6


# --- wrapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("aspect", ["16:9", "9:16"])
def test_long_headline_wraps_to_the_safe_width(fonts, aspect):
    w, h = (640, 360) if aspect == "16:9" else (360, 640)
    headline = "Our biggest summer sale ever is here: fifty percent off every single item"
    layer = ov.render_text_layer(
        w, h, headline=headline, cta="Shop now", locale="en-US", aspect=aspect, fonts=fonts
    )
    assert len(layer.headline_lines) > 1
    assert " ".join(layer.headline_lines) == headline
    font = fonts.face("Latn").font(layer.headline_size)
    assert all(font.getlength(line) <= layer.wrap_width for line in layer.headline_lines)
    # Unwrapped, the headline would not have fit.
    assert font.getlength(headline) > layer.wrap_width
    sx0, _, sx1, _ = layer.safe_zone
    assert sx0 <= layer.box[0] and layer.box[2] <= sx1


def test_cjk_headline_wraps_without_spaces(fonts):
    headline = "夏季大促全场五折仅限本周末欢迎光临选购新品上市" * 2
    layer = ov.render_text_layer(
        360, 640, headline=headline, cta="立即购买", locale="zh-CN", fonts=fonts
    )
    assert len(layer.headline_lines) > 1
    assert "".join(layer.headline_lines) == headline or layer.headline_lines[-1].endswith("…")
    font = fonts.face("Hans").font(layer.headline_size)
    assert all(font.getlength(line) <= layer.wrap_width for line in layer.headline_lines)


def test_too_long_copy_is_truncated_not_spilled(fonts):
    headline = " ".join(["Unbelievable"] * 60)
    layer = ov.render_text_layer(
        180, 320, headline=headline, cta="Buy", locale="en-US", fonts=fonts
    )
    assert layer.headline_lines[-1].endswith("…")
    assert layer.headline_box[3] <= 320 / 3


# --- examples to look at ----------------------------------------------------------------------


@pytest.mark.parametrize("locale", sorted(COPY))
def test_example_frame_per_script(fonts, locale, tmp_path):
    """Writes one frame per script (look at them: tmp dir printed on failure)."""
    h, w = 640, 360
    y = np.linspace(0, 1, h)[:, None, None]
    x = np.linspace(0, 1, w)[None, :, None]
    frame = (np.concatenate(np.broadcast_arrays(y, x, 1 - y), axis=2) * 200 + 30).astype(np.uint8)
    headline, cta = COPY[locale]
    out = ov.render_overlay(
        frame[None], headline=headline, cta=cta, locale=locale, fade_s=0, fonts=fonts
    )
    path = Path(tmp_path) / f"overlay-{locale}.png"
    Image.fromarray(out[0]).save(path)
    assert path.stat().st_size > 0
    assert (out[0] != frame).any(axis=2).mean() > 0.02


def test_rejects_non_uint8_frames(fonts):
    with pytest.raises(ValueError, match="uint8"):
        ov.render_overlay(np.zeros((1, 8, 8, 3), np.float32), headline="a", cta="b", locale="en")
