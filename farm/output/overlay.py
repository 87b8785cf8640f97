"""Real text over generated frames: the localized headline and call-to-action (CTA).

Video models draw foreign scripts as fake glyphs, so the copy is typeset with Pillow and
alpha-composited onto the frames; ``farm.output.fonts`` finds the Noto fonts and picks the face for
each character. Conventions (checked by tests/farm/output/test_overlay.py):

- Right-to-left locales (Arabic, Hebrew, ...) are shaped by Pillow's raqm layout
  (``direction="rtl"``) and right-aligned. Bidi across font runs is simplified: runs are laid
  out in reverse order on an RTL line, and raqm does full bidi inside each run.
- Placement stays inside ``safe_zone``: 9:16 reserves the top 14% and the bottom 20% (platform
  UI); the headline sits in the upper third just below the top band, the CTA pill just above
  the bottom band. Other formats use 5% margins. Text wraps to the safe-zone width (at spaces,
  or between CJK characters), shrinks 10% at a time when it needs too many lines or too much
  height, and as a last resort at the smallest size is cut short with an ellipsis.
- The text layer is rendered once (RGBA, straight alpha) and composited onto all frames with
  numpy; frames whose fade alpha is 0 and pixels the layer does not touch are returned
  bit-identical. The input array is never modified.
"""

from __future__ import annotations

import math
import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from farm.output.fonts import (
    INSTALL_SCRIPT,
    FontFace,
    FontSet,
    assign_faces,
    find_fonts,
    is_rtl_locale,
    locale_script,
    raqm_available,
    raqm_language,
)

__all__ = [
    "TextLayer",
    "overlay_alpha",
    "render_overlay",
    "render_text_layer",
    "safe_zone",
    "text_box",
]

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive

# ---------------------------------------------------------------------------------------------
# Font runs


@dataclass(frozen=True)
class _Run:
    text: str
    face: FontFace
    direction: str  # "ltr" or "rtl"


def _strong_direction(text: str) -> str | None:
    for ch in text:
        bidi = unicodedata.bidirectional(ch)
        if bidi == "L":
            return "ltr"
        if bidi in ("R", "AL"):
            return "rtl"
    return None


def _runs(text: str, chain: Sequence[FontFace], para_dir: str) -> list[_Run]:
    faces = assign_faces(text, chain)
    fallback = chain[0]
    runs: list[_Run] = []
    buf, buf_face = "", None
    for ch, face in zip(text, faces, strict=True):
        face = face or (buf_face or fallback)  # tofu: draw in the current face
        if buf and face != buf_face:
            runs.append(_Run(buf, buf_face, _strong_direction(buf) or para_dir))
            buf = ""
        buf, buf_face = buf + ch, face
    if buf:
        runs.append(_Run(buf, buf_face, _strong_direction(buf) or para_dir))
    # Spaces at the edges of an embedded opposite-direction run (a Latin brand name in Arabic)
    # belong to the paragraph: split them off so they land between the words, not at the end.
    out: list[_Run] = []
    for run in runs:
        core = run.text.strip()
        if run.direction == para_dir or not core or core == run.text:
            out.append(run)
            continue
        lead = run.text[: len(run.text) - len(run.text.lstrip())]
        trail = run.text[len(run.text.rstrip()) :]
        for part, direction in ((lead, para_dir), (core, run.direction), (trail, para_dir)):
            if part:
                out.append(_Run(part, run.face, direction))
    return out


# ---------------------------------------------------------------------------------------------
# Measuring and wrapping


@dataclass
class _Line:
    runs: list[_Run]
    width: float
    ascent: int
    descent: int


class _Typesetter:
    def __init__(self, fonts: FontSet, locale: str, size: int, weight: str = "bold"):
        self.chain = fonts.chain(locale, weight)
        self.size = size
        self.rtl = is_rtl_locale(locale)  # paragraph direction comes from the locale
        self.para_dir = "rtl" if self.rtl else "ltr"
        self.raqm = raqm_available()
        self.language = raqm_language(locale) if self.raqm else None

    def kwargs(self, run: _Run) -> dict:
        return {"direction": run.direction, "language": self.language} if self.raqm else {}

    def line(self, text: str) -> _Line:
        """Runs, advance width and vertical extent of one line. The extent is the fonts'
        ascent/descent capped at 1.1 / 0.35 em (Noto Sans Arabic declares 2.1 em in all) and
        grown again wherever the line's actual ink needs more."""
        runs = _runs(text, self.chain, self.para_dir) if text else []
        width = 0.0
        cap_a, cap_d = 1.1 * self.size, 0.35 * self.size
        a, d = self.chain[0].font(self.size).getmetrics()
        ascent, descent = min(a, cap_a), min(d, cap_d)
        for run in runs:
            font = run.face.font(self.size)
            kw = self.kwargs(run)
            width += font.getlength(run.text, **kw)
            a, d = font.getmetrics()
            _, top, _, bottom = font.getbbox(run.text, anchor="ls", **kw)
            ascent = max(ascent, min(a, cap_a), -top)
            descent = max(descent, min(d, cap_d), bottom)
        return _Line(runs, width, math.ceil(ascent), math.ceil(descent))

    def width(self, text: str) -> float:
        runs = _runs(text, self.chain, self.para_dir) if text else []
        return sum(r.face.font(self.size).getlength(r.text, **self.kwargs(r)) for r in runs)


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x2E80 <= cp <= 0x30FF  # radicals, CJK punctuation, kana
        or 0x3400 <= cp <= 0x4DBF
        or 0x4E00 <= cp <= 0x9FFF
        or 0xF900 <= cp <= 0xFAFF
        or 0xFF00 <= cp <= 0xFFEF  # full/half-width forms
        or 0x20000 <= cp <= 0x3FFFF
    )


# Kinsoku-lite: never start a line with these, never end one with the openers.
_NO_START = set(
    "、。，．・：；？！ー）」』】〕〉》〙〗〟'\"」,.!?:;)]}ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ々〻"
)
_NO_END = set("（「『【〔〈《〘〖〝([{")


def _break_units(text: str) -> list[str]:
    """Split copy into unbreakable units and single spaces (break opportunities). CJK text
    may break between characters; other scripts only at spaces."""
    units: list[str] = []
    word = ""
    for ch in text:
        if ch.isspace():
            if word:
                units.append(word)
                word = ""
            if units and units[-1] != " ":
                units.append(" ")
            continue
        if (
            word
            and (_is_cjk(ch) or _is_cjk(word[-1]))
            and ch not in _NO_START
            and word[-1] not in _NO_END
            and unicodedata.category(ch)[0] != "M"
        ):
            units.append(word)
            word = ""
        word += ch
    if word:
        units.append(word)
    return units


def _clusters(word: str) -> list[str]:
    """Rough grapheme clusters: combining marks, joiners and virama sequences stay attached."""
    out: list[str] = []
    for ch in word:
        joins = unicodedata.category(ch)[0] == "M" or ch in "\u200c\u200d"
        if out and (joins or out[-1][-1] in "\u200d\u094d"):
            out[-1] += ch
        else:
            out.append(ch)
    return out


def _wrap(text: str, ts: _Typesetter, max_width: float) -> list[str]:
    """Greedy line breaking of ``text`` to ``max_width`` pixels; explicit newlines are kept."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for unit in _break_units(paragraph):
            if unit == " ":
                if current:
                    current += " "
                continue
            candidate = current + unit
            if ts.width(candidate.rstrip()) <= max_width:
                current = candidate
                continue
            if current.strip():
                lines.append(current.rstrip())
                current = ""
            if ts.width(unit) <= max_width:
                current = unit
                continue
            for cluster in _clusters(unit):  # a single word wider than the line
                if current and ts.width(current + cluster) > max_width:
                    lines.append(current)
                    current = ""
                current += cluster
        if current.strip() or not lines:
            lines.append(current.rstrip())
    return lines


# ---------------------------------------------------------------------------------------------
# Layout


_KNOWN_ASPECTS = {"9:16": 9 / 16, "16:9": 16 / 9, "1:1": 1.0, "4:5": 4 / 5}
TOP_BAND_9X16 = 0.14
BOTTOM_BAND_9X16 = 0.20
SIDE_MARGIN_9X16 = 0.06
MARGIN = 0.05


def _normalize_aspect(aspect: str | None, width: int, height: int) -> str:
    if aspect:
        return re.sub(r"\s", "", aspect).replace("x", ":").replace("/", ":")
    ratio = width / height
    return min(_KNOWN_ASPECTS, key=lambda k: abs(math.log(ratio / _KNOWN_ASPECTS[k])))


def safe_zone(width: int, height: int, aspect: str | None = None) -> Box:
    """Where overlay text may go, (x0, y0, x1, y1) in pixels, x1/y1 exclusive. 9:16 reserves
    the top 14% and bottom 20% bands (platform UI) and 6% at the sides; other formats keep 5%
    margins. ``aspect`` None: the nearest of 9:16, 16:9, 1:1, 4:5 to the frame's shape."""
    if _normalize_aspect(aspect, width, height) == "9:16":
        mx = round(SIDE_MARGIN_9X16 * width)
        return (
            mx,
            math.ceil(TOP_BAND_9X16 * height),
            width - mx,
            math.floor((1 - BOTTOM_BAND_9X16) * height),
        )
    mx, my = round(MARGIN * width), round(MARGIN * height)
    return (mx, my, width - mx, height - my)


@dataclass(frozen=True)
class TextLayer:
    """The overlay, rendered once. ``rgba`` is [H, W, 4] uint8 with straight (not
    premultiplied) alpha; ``box`` bounds every pixel with alpha > 0 (None: nothing drawn)."""

    rgba: np.ndarray
    box: Box | None
    headline_box: Box | None
    cta_box: Box | None
    safe_zone: Box
    aspect: str
    headline_lines: tuple[str, ...]
    cta_lines: tuple[str, ...]
    headline_size: int
    cta_size: int
    wrap_width: int  # pixels a headline line may take (it was wrapped to this width)


@dataclass
class _Block:
    ts: _Typesetter  # set at this size, for this locale
    lines: list[_Line]
    texts: list[str]
    width: float
    height: int
    advances: list[int]

    @property
    def size(self) -> int:
        return self.ts.size


def _set_block(
    text: str,
    fonts: FontSet,
    locale: str,
    size: int,
    max_width: float,
    max_lines: int,
    max_height: float,
    min_size: int,
) -> _Block:
    """Wrap ``text`` at ``size``, shrinking 10% at a time until it fits the limits (or
    ``min_size`` is reached)."""
    while True:
        ts = _Typesetter(fonts, locale, size)
        block = _block(ts, _wrap(text, ts, max_width))
        lines, height, width = block.lines, block.height, block.width
        fits = len(lines) <= max_lines and height <= max_height and width <= max_width
        if fits:
            return block
        if size <= min_size:
            return _truncate(ts, block.texts, max_width, max_lines, max_height)
        size = max(min_size, int(size * 0.9))


def _block(ts: _Typesetter, texts: list[str]) -> _Block:
    lines = [ts.line(t) for t in texts]
    advances = [max(ln.ascent + ln.descent, round(1.3 * ts.size)) for ln in lines]
    width = max((ln.width for ln in lines), default=0.0)
    return _Block(ts, lines, texts, width, sum(advances), advances)


def _truncate(
    ts: _Typesetter, texts: list[str], max_width: float, max_lines: int, max_height: float
) -> _Block:
    """Even the smallest size does not fit: keep the lines that do (at least one) and end the
    last with an ellipsis."""
    block = _block(ts, texts)
    keep, used = 0, 0
    for adv in block.advances[:max_lines]:
        if keep and used + adv > max_height:
            break
        keep, used = keep + 1, used + adv
    if keep == len(texts):
        return block
    clusters = _clusters(texts[keep - 1])
    while clusters and ts.width("".join(clusters).rstrip() + "\u2026") > max_width:
        clusters.pop()
    return _block(ts, [*texts[: keep - 1], "".join(clusters).rstrip() + "\u2026"])


def _paint(
    layer: Image.Image, alpha: Image.Image, color: Sequence[int], dest: tuple[int, int]
) -> None:
    """Alpha-composite ``color`` (its RGB) through the L-mode ``alpha`` onto ``layer``."""
    patch = Image.new("RGBA", alpha.size, (*color[:3], 0))
    patch.putalpha(alpha)
    layer.alpha_composite(patch, dest=dest)


def _draw_block(
    layer: Image.Image,
    block: _Block,
    x_left: float,
    x_right: float,
    top: float,
    align: str,
    color: tuple[int, int, int],
) -> None:
    """Draw the block's lines in ``color`` onto ``layer``, starting at ``top``."""
    mask = Image.new("L", layer.size, 0)
    draw = ImageDraw.Draw(mask)
    ts = block.ts
    y = top
    for line, adv in zip(block.lines, block.advances, strict=True):
        baseline = y + (adv - line.ascent - line.descent) / 2 + line.ascent
        if align == "right":
            x = x_right - line.width
        elif align == "center":
            x = (x_left + x_right - line.width) / 2
        else:
            x = x_left
        runs = list(reversed(line.runs)) if ts.rtl else line.runs
        for run in runs:
            font = run.face.font(block.size)
            kw = ts.kwargs(run)
            draw.text((x, baseline), run.text, font=font, fill=255, anchor="ls", **kw)
            x += font.getlength(run.text, **kw)
        y += adv
    bbox = mask.getbbox()
    if bbox is not None:
        _paint(layer, mask.crop(bbox), color, bbox[:2])


def _aa_rounded_rect(layer: Image.Image, box: Sequence[float], radius: float, fill) -> None:
    """Alpha-composite an anti-aliased rounded rectangle (drawn at 4x, box-filtered down)."""
    x0, y0, x1, y1 = (round(v) for v in box)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(layer.width, x1), min(layer.height, y1)
    if x1 <= x0 or y1 <= y0:
        return
    s = 4
    big = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    r = max(0, min(radius, (x1 - x0) / 2, (y1 - y0) / 2))
    ImageDraw.Draw(big).rounded_rectangle(
        (0, 0, big.width - 1, big.height - 1), radius=round(r * s), fill=255
    )
    small = big.resize((x1 - x0, y1 - y0), Image.Resampling.BOX)
    alpha = np.asarray(small, dtype=np.float32) * (fill[3] / 255.0)
    _paint(layer, Image.fromarray(np.rint(alpha).astype(np.uint8)), fill, (x0, y0))


def _outer(x0: float, y0: float, x1: float, y1: float) -> Box:
    """The smallest integer box holding (x0, y0, x1, y1)."""
    return (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))


HEADLINE_COLOR = (255, 255, 255)
HEADLINE_BACKING = (0, 0, 0, 150)
CTA_FILL = (255, 255, 255, 235)
CTA_COLOR = (20, 20, 20)


def render_text_layer(
    width: int,
    height: int,
    *,
    headline: str,
    cta: str,
    locale: str,
    aspect: str | None = None,
    fonts: FontSet | None = None,
) -> TextLayer:
    """Typeset the headline (large, on a semi-transparent backing box) and the CTA (a pill)
    into one RGBA layer of the frame's size, inside ``safe_zone``."""
    fonts = fonts or find_fonts()
    if not raqm_available() and (
        is_rtl_locale(locale) or locale_script(locale) in {"Thai", "Deva"}
    ):
        warnings.warn(
            f"Pillow has no raqm layout (libfribidi missing?): {locale} text will not be "
            f"shaped correctly. Run {INSTALL_SCRIPT}.",
            RuntimeWarning,
            stacklevel=2,
        )
    aspect_key = _normalize_aspect(aspect, width, height)
    sx0, sy0, sx1, sy1 = safe_zone(width, height, aspect_key)
    safe_w, safe_h = sx1 - sx0, sy1 - sy0
    base = min(width, height)
    h_size = max(10, round(0.07 * base))
    c_size = max(9, round(0.045 * base))
    align = "right" if is_rtl_locale(locale) else "left"

    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    headline_box = cta_box = None
    h_block = c_block = None

    # CTA first: the headline may use whatever height the pill leaves.
    c_pad_x, c_pad_y = 0.9 * c_size, 0.35 * c_size
    if cta.strip():
        c_block = _set_block(
            cta.strip(), fonts, locale, c_size, safe_w - 2 * c_pad_x, 2, 0.3 * safe_h, 7
        )
        c_pad_x, c_pad_y = 0.9 * c_block.size, 0.35 * c_block.size
        pill_w = c_block.width + 2 * c_pad_x
        pill_h = c_block.height + 2 * c_pad_y
        px0 = sx0 + (safe_w - pill_w) / 2
        py1 = sy1 - 0.02 * safe_h
        py0 = py1 - pill_h
        cta_box = _outer(px0, py0, px0 + pill_w, py1)
        radius = pill_h / 2 if len(c_block.lines) == 1 else 0.5 * c_block.size
        _aa_rounded_rect(layer, cta_box, radius, CTA_FILL)
        c_x0, c_x1 = px0 + c_pad_x, px0 + pill_w - c_pad_x
        _draw_block(layer, c_block, c_x0, c_x1, py0 + c_pad_y, "center", CTA_COLOR)

    h_pad_x, h_pad_y = 0.4 * h_size, 0.25 * h_size
    h_wrap = math.floor(safe_w - 2 * h_pad_x)
    if headline.strip():
        top = sy0 + 0.02 * safe_h
        # 9:16: the upper third, below the top band.
        limit = height / 3 if aspect_key == "9:16" else sy0 + 0.45 * safe_h
        if cta_box is not None:
            limit = min(max(limit, top), cta_box[1] - 0.02 * safe_h)
        max_h = max(limit - top, 0) - 2 * h_pad_y
        h_block = _set_block(headline.strip(), fonts, locale, h_size, h_wrap, 3, max_h, 8)
        h_pad_x, h_pad_y = 0.4 * h_block.size, 0.25 * h_block.size
        box_w = h_block.width + 2 * h_pad_x
        box_h = h_block.height + 2 * h_pad_y
        bx0 = sx1 - box_w if align == "right" else sx0
        headline_box = _outer(bx0, top, bx0 + box_w, top + box_h)
        _aa_rounded_rect(layer, headline_box, 0.25 * h_block.size, HEADLINE_BACKING)
        h_x0, h_x1 = bx0 + h_pad_x, bx0 + box_w - h_pad_x
        _draw_block(layer, h_block, h_x0, h_x1, top + h_pad_y, align, HEADLINE_COLOR)

    rgba = np.asarray(layer, dtype=np.uint8).copy()
    box = layer.getchannel("A").getbbox()
    return TextLayer(
        rgba=rgba,
        box=tuple(box) if box else None,
        headline_box=headline_box,
        cta_box=cta_box,
        safe_zone=(sx0, sy0, sx1, sy1),
        aspect=aspect_key,
        headline_lines=tuple(h_block.texts) if h_block else (),
        cta_lines=tuple(c_block.texts) if c_block else (),
        headline_size=h_block.size if h_block else 0,
        cta_size=c_block.size if c_block else 0,
        wrap_width=h_wrap,
    )


def text_box(
    width: int,
    height: int,
    *,
    headline: str,
    cta: str,
    locale: str,
    aspect: str | None = None,
    fonts: FontSet | None = None,
) -> Box | None:
    """Bounding box (x0, y0, x1, y1; x1/y1 exclusive) of every pixel the overlay draws on a
    ``width`` x ``height`` frame: outside it ``render_overlay`` leaves frames unchanged."""
    return render_text_layer(
        width, height, headline=headline, cta=cta, locale=locale, aspect=aspect, fonts=fonts
    ).box


# ---------------------------------------------------------------------------------------------
# Compositing


def overlay_alpha(
    n_frames: int,
    fps: float = 24,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    fade_s: float = 0.3,
) -> np.ndarray:
    """Per-frame opacity [F] in [0, 1] for frame f at t = f / fps: 0 before ``start_s`` and
    after ``end_s`` (default: the clip's end, F / fps), ramping linearly over ``fade_s`` after
    the start and before the end. ``fade_s`` <= 0: a hard cut on [start_s, end_s)."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0 (got {fps})")
    t = np.arange(n_frames, dtype=np.float64) / fps
    end = n_frames / fps if end_s is None else end_s
    if fade_s <= 0:
        return ((t >= start_s) & (t < end)).astype(np.float32)
    rise = (t - start_s) / fade_s
    fall = (end - t) / fade_s
    return np.clip(np.minimum(rise, fall), 0.0, 1.0).astype(np.float32)


def _composite(frames: np.ndarray, layer: TextLayer, alpha: np.ndarray) -> np.ndarray:
    out = frames.copy()
    if layer.box is None:
        return out
    x0, y0, x1, y1 = layer.box
    rgb = layer.rgba[y0:y1, x0:x1, :3].astype(np.float32)
    a = layer.rgba[y0:y1, x0:x1, 3].astype(np.float32) / 255.0
    shown = np.flatnonzero(alpha > 0)
    # Chunks of frames keep the float32 working set near 64 MiB.
    per_frame = max(1, (y1 - y0) * (x1 - x0) * 3 * 4)
    step = max(1, (64 << 20) // per_frame)
    for i in range(0, len(shown), step):
        idx = shown[i : i + step]
        region = out[idx, y0:y1, x0:x1].astype(np.float32)
        weight = alpha[idx, None, None, None] * a[None, :, :, None]
        region += (rgb[None] - region) * weight
        out[idx, y0:y1, x0:x1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    return out


def render_overlay(
    frames: np.ndarray,
    *,
    headline: str,
    cta: str,
    locale: str,
    aspect: str | None = None,
    fps: float = 24,
    fade_s: float = 0.3,
    start_s: float = 0.0,
    end_s: float | None = None,
    fonts: FontSet | None = None,
) -> np.ndarray:
    """Composite the localized headline and CTA onto ``frames`` ([F, H, W, 3] uint8; a single
    [H, W, 3] frame is accepted too) and return a new array of the same shape. The text layer
    is rendered once and blended into every frame with its fade alpha (see overlay_alpha)."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3] (got {arr.dtype} {tuple(arr.shape)})")
    single = arr.ndim == 3
    video = arr[None] if single else arr
    _, height, width, _ = video.shape
    layer = render_text_layer(
        width, height, headline=headline, cta=cta, locale=locale, aspect=aspect, fonts=fonts
    )
    alpha = overlay_alpha(len(video), fps, start_s=start_s, end_s=end_s, fade_s=fade_s)
    out = _composite(video, layer, alpha)
    return out[0] if single else out
