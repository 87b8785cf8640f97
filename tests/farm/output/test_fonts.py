"""Fonts: the Noto faces per locale, coverage (no tofu), the cmap parser, RTL shaping.

Needs the system fonts and FriBiDi that scripts/install-system-deps.sh installs (`make test`
runs it); without them these tests fail loudly rather than skip.
"""

from __future__ import annotations

import shutil
import unicodedata

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, features

from farm.output import fonts as ft
from farm.output import overlay as ov
from tests.helpers.overlay import COPY, noise

# The face that must draw the locale's own letters.
PRIMARY_FAMILY = {
    "en-US": "NotoSans",
    "zh-CN": "Noto Sans CJK SC",
    "zh-TW": "Noto Sans CJK TC",
    "ja-JP": "Noto Sans CJK JP",
    "ko-KR": "Noto Sans CJK KR",
    "ar-SA": "NotoSansArabic",
    "he-IL": "NotoSansHebrew",
    "th-TH": "NotoSansThai",
    "hi-IN": "NotoSansDevanagari",
}

UNASSIGNED = "\u0378"  # a Greek-block code point Unicode has never assigned


@pytest.fixture(scope="module")
def fonts() -> ft.FontSet:
    return ft.find_fonts()


def ink(font: ImageFont.FreeTypeFont, text: str, **kw) -> np.ndarray:
    """Rendered coverage of ``text`` on a canvas with room around it, as [H, W] uint8."""
    size = font.size
    img = Image.new("L", (size * (len(text) + 4), size * 3), 0)
    ImageDraw.Draw(img).text((size, 2 * size), text, font=font, fill=255, anchor="ls", **kw)
    return np.asarray(img)


def ink_cols(mask: np.ndarray) -> tuple[int, int]:
    cols = np.flatnonzero(mask.max(axis=0) > 0)
    return int(cols[0]), int(cols[-1]) + 1


def trimmed(mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.max(axis=1) > 0)
    x0, x1 = ink_cols(mask)
    return mask[:, x0:x1][rows[0] : rows[-1] + 1]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 127, b > 127
    return float((a & b).sum() / max(1, (a | b).sum()))


# --- system dependencies and fonts -----------------------------------------------------------


def test_raqm_is_available_for_complex_layout():
    # The install script's libfribidi0 is what turns this on for Pillow's wheel.
    assert features.check("raqm"), "run scripts/install-system-deps.sh (libfribidi0)"
    assert ft.raqm_available()


@pytest.mark.parametrize("locale", sorted(PRIMARY_FAMILY))
def test_primary_face_per_locale(fonts, locale):
    primary = fonts.chain(locale)[0]
    assert primary.family == PRIMARY_FAMILY[locale]
    assert primary.weight == "bold"
    # The CJK faces share one collection: the index must select the right one in Pillow too.
    if "CJK" in primary.family:
        assert primary.path.suffix == ".ttc"
        assert primary.font(20).getname()[0] == PRIMARY_FAMILY[locale]


def test_missing_fonts_raise_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ft.FontError) as err:
        ft.find_fonts(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert "scripts/install-system-deps.sh" in str(err.value)

    empty = tmp_path / "env-fonts"
    empty.mkdir()
    monkeypatch.setenv("FARM_FONT_DIR", str(empty))
    with pytest.raises(ft.FontError, match="env-fonts"):
        ft.find_fonts()
    with pytest.raises(ft.FontError, match="install-system-deps"):
        ov.render_overlay(noise(1, 32, 32), headline="Hi", cta="Go", locale="en-US")


# --- coverage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", sorted(COPY))
def test_copy_has_no_tofu(fonts, locale):
    headline, cta = COPY[locale]
    text = headline + cta
    assert ft.uncovered_chars(text, locale, fonts) == []
    for ch, face in ft.coverage(text, locale, fonts):
        if ch.isspace():
            continue
        assert face is not None and face.covers(ch), ch
        # The locale's own letters come from its primary face, not some distant fallback.
        if unicodedata.category(ch).startswith("L") and ord(ch) >= 0x0370:
            assert face.family == PRIMARY_FAMILY[locale], (ch, face.family)


def test_uncovered_characters_are_reported(fonts, tmp_path):
    assert ft.uncovered_chars(f"Sale {UNASSIGNED}!", "en-US", fonts) == [UNASSIGNED]
    assert [f for c, f in ft.coverage(UNASSIGNED, "ja-JP", fonts)] == [None]

    # With only the Latin font available, CJK and Arabic letters are tofu.
    latin_only = tmp_path / "latin"
    latin_only.mkdir()
    src = fonts.face("Latn").path
    shutil.copy(src, latin_only / src.name)
    small = ft.find_fonts(latin_only)
    assert ft.uncovered_chars("Sale 夏季 مرحبا", "zh-CN", small) == list("夏季مرحبا")
    assert ft.uncovered_chars("Sale, 50% off!", "zh-CN", small) == []


def test_unknown_script_falls_back_to_other_noto_fonts(fonts):
    tamil = "கோடை விற்பனை"  # no dedicated face: found among the other Noto fonts
    assert ft.uncovered_chars(tamil, "ta-IN", fonts) == []
    assert "Tamil" in ft.coverage(tamil, "ta-IN", fonts)[0][1].family
    out = ov.render_overlay(noise(1, 90, 160), headline=tamil, cta="வாங்க", locale="ta-IN", fade_s=0)
    assert not np.array_equal(out, noise(1, 90, 160))
    assert ft.locale_script("xx-YY") == "Latn"


@pytest.mark.parametrize("script", ["Latn", "Arab", "Hant", "Thai"])
def test_cmap_parser_agrees_with_what_pillow_draws(fonts, script):
    """Covered chars rasterize to a real glyph; chars the cmap lacks rasterize to .notdef."""
    face = fonts.face(script)
    font = ImageFont.truetype(str(face.path), 32, index=face.index)
    notdef = ink(font, UNASSIGNED)
    assert notdef.any()  # .notdef is a visible box in Noto fonts
    samples = "Aé€ص٥漢語かก๕अ३ש" + UNASSIGNED
    covered = [c for c in samples if face.covers(c)]
    missing = [c for c in samples if not face.covers(c)]
    assert covered and missing
    for ch in covered:
        assert not np.array_equal(ink(font, ch), notdef), ch
    for ch in missing:
        assert np.array_equal(ink(font, ch), notdef), ch


def test_cmap_ranges_are_sorted_and_disjoint(fonts):
    for face in (fonts.face("Latn"), fonts.face("Hans"), fonts.face("Deva")):
        starts, ends = ft.read_cmap_ranges(face.path, face.index)
        assert len(starts) == len(ends) > 0
        assert all(s <= e for s, e in zip(starts, ends, strict=True))
        assert all(e + 1 < s for e, s in zip(ends, starts[1:], strict=False))
    hans = fonts.face("Hans")
    starts, ends = ft.read_cmap_ranges(hans.path, hans.index)
    assert sum(e - s + 1 for s, e in zip(starts, ends, strict=True)) > 30000


# --- right-to-left ----------------------------------------------------------------------------


def test_arabic_is_shaped_right_to_left(fonts):
    face = fonts.face("Arab")
    word = "مرحبا"  # m-r | h-b-a: r does not join to the left, so two joined groups
    shaped_font = face.font(48)  # raqm layout
    shaped = ink(shaped_font, word, direction="rtl", language="ar")

    # A naive renderer: isolated letters, logical order, left to right.
    basic = ImageFont.truetype(str(face.path), 48, layout_engine=ImageFont.Layout.BASIC)
    naive = Image.new("L", (48 * 9, 48 * 3), 0)
    draw, x = ImageDraw.Draw(naive), 48.0
    for ch in word:
        draw.text((x, 96), ch, font=basic, fill=255, anchor="ls")
        x += basic.getlength(ch)
    naive = np.asarray(naive)
    assert shaped.shape == naive.shape
    assert not np.array_equal(shaped, naive)
    # Joined forms are narrower than the isolated letters side by side.
    assert np.ptp(ink_cols(shaped)) < np.ptp(ink_cols(naive))

    # The first logical letters (m-r) lie at the right, the rest (h-b-a) at the left.
    head = trimmed(ink(shaped_font, word[:2], direction="rtl", language="ar"))
    tail = trimmed(ink(shaped_font, word[2:], direction="rtl", language="ar"))
    whole = trimmed(shaped)

    def match(part: np.ndarray, side: str) -> float:
        w = part.shape[1]
        region = whole[:, -w:] if side == "right" else whole[:, :w]
        h = min(region.shape[0], part.shape[0])
        # Align on the baseline-ish bottom rows, where both have the same ink.
        return iou(region[-h:], part[-h:])

    assert match(head, "right") > 0.6 > match(head, "left")
    assert match(tail, "left") > 0.6 > match(tail, "right")
