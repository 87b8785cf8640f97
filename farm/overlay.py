"""Real text over generated frames: the localized headline and call-to-action (CTA).

Video models draw foreign scripts as fake glyphs, so the copy is typeset with Pillow and
alpha-composited onto the frames. Conventions (checked by tests/farm/test_overlay.py):

- Fonts are Debian's Noto fonts (``scripts/install-system-deps.sh`` installs them):
  ``fonts-noto-core`` for Latin, Arabic, Hebrew, Thai, Devanagari and the long tail of scripts,
  ``fonts-noto-cjk`` for Chinese / Japanese / Korean (one ``.ttc`` holding JP, KR, SC, TC, HK).
  ``find_fonts`` picks a primary face per locale (zh-CN -> Noto Sans CJK SC, zh-TW -> TC,
  ja -> JP, ko -> KR; the collection index is found by family name, not hard-coded).
- Coverage ("no tofu") is read from the font's own ``cmap`` table by a small parser
  (``read_cmap_ranges``: TTF/OTF/TTC, subtable formats 4, 6, 12, 13): a character is covered
  when the cmap maps it to a glyph other than .notdef. That is exact and cheap, needs no
  fontTools, and is cross-checked in the tests against what Pillow actually rasterizes.
- Each character of the copy is set in the first face of the locale's fallback chain that
  covers it (primary script -> Noto Sans -> CJK -> Arabic -> Hebrew -> Thai -> Devanagari ->
  every other Noto font found). Non-letters (spaces, punctuation, digits, marks) stay in the
  current face when it covers them, so runs are not split needlessly and marks stay with
  their base letter.
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

import bisect
import functools
import math
import os
import re
import struct
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

__all__ = [
    "DEFAULT_FONT_DIRS",
    "INSTALL_SCRIPT",
    "FontError",
    "FontFace",
    "FontSet",
    "TextLayer",
    "coverage",
    "find_fonts",
    "locale_script",
    "overlay_alpha",
    "raqm_available",
    "read_cmap_ranges",
    "render_overlay",
    "render_text_layer",
    "safe_zone",
    "text_box",
    "uncovered_chars",
]

DEFAULT_FONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts/opentype/noto"),
    Path("/usr/share/fonts/truetype/noto"),
)
INSTALL_SCRIPT = "scripts/install-system-deps.sh"
FONT_DIR_ENV = "FARM_FONT_DIR"

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive

# ---------------------------------------------------------------------------------------------
# Locales and scripts

_RTL_LANGS = {"ar", "fa", "ur", "ps", "sd", "ug", "ckb", "dv", "he", "iw", "yi"}
_LANG_SCRIPT = {
    "ar": "Arab", "fa": "Arab", "ur": "Arab", "ps": "Arab", "sd": "Arab", "ug": "Arab",
    "ckb": "Arab",
    "he": "Hebr", "iw": "Hebr", "yi": "Hebr",
    "th": "Thai",
    "hi": "Deva", "mr": "Deva", "ne": "Deva", "sa": "Deva", "kok": "Deva", "mai": "Deva",
    "bho": "Deva",
    "ja": "Jpan",
    "ko": "Kore",
}  # fmt: skip
_CJK_SCRIPTS = ("Hans", "Hant", "HK", "Jpan", "Kore")
_BASE_ORDER = ("Latn", "CJK", "Arab", "Hebr", "Thai", "Deva")


def _split_locale(locale: str) -> tuple[str, str | None, str | None]:
    parts = [p for p in re.split(r"[-_]", locale.strip()) if p]
    lang = parts[0].lower() if parts else ""
    script = region = None
    for p in parts[1:]:
        if len(p) == 4 and p.isalpha():
            script = p.title()
        elif (len(p) == 2 and p.isalpha()) or (len(p) == 3 and p.isdigit()):
            region = p.upper()
    return lang, script, region


def locale_script(locale: str) -> str:
    """The script key of a BCP-47 locale: Latn, Arab, Hebr, Thai, Deva, Hans, Hant, HK, Jpan,
    Kore. Languages this module has no dedicated font for map to Latn (the fallback chain
    still finds their script's Noto font)."""
    lang, script, region = _split_locale(locale)
    if lang == "zh":
        if region == "HK" or region == "MO":
            return "HK"
        if script == "Hant" or region == "TW":
            return "Hant"
        return "Hans"
    return _LANG_SCRIPT.get(lang, "Latn")


def _raqm_language(locale: str) -> str | None:
    lang, script, region = _split_locale(locale)
    if not lang:
        return None
    if lang == "zh":  # region/script picks Simplified/Traditional forms via OpenType 'locl'
        return "-".join(p for p in (lang, script, region) if p)
    return lang


def _is_rtl_locale(locale: str) -> bool:
    return _split_locale(locale)[0] in _RTL_LANGS


@functools.cache
def raqm_available() -> bool:
    """Whether Pillow can do complex text layout (needs the system's libfribidi)."""
    return bool(features.check_feature("raqm"))


# ---------------------------------------------------------------------------------------------
# cmap parsing (coverage)


class FontError(RuntimeError):
    """The fonts needed to draw the overlay are missing or unreadable."""


def _u16(data: bytes, off: int) -> int:
    return struct.unpack_from(">H", data, off)[0]


def _u32(data: bytes, off: int) -> int:
    return struct.unpack_from(">I", data, off)[0]


def _ttc_count(path: Path) -> int:
    """Number of faces in a font file (1 unless it is a TrueType/OpenType collection)."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[:4] == b"ttcf" and len(head) == 12:
        return _u32(head, 8)
    return 1


def _read_cmap_table(path: Path, index: int) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12:
            raise FontError(f"{path}: not a font file")
        offset = 0
        if head[:4] == b"ttcf":
            count = _u32(head, 8)
            if not 0 <= index < count:
                raise FontError(f"{path}: face index {index} out of range (has {count})")
            fh.seek(12 + 4 * index)
            offset = _u32(fh.read(4), 0)
        elif index != 0:
            raise FontError(f"{path}: not a collection, face index must be 0 (got {index})")
        fh.seek(offset)
        directory = fh.read(12)
        num_tables = _u16(directory, 4)
        records = fh.read(16 * num_tables)
        for i in range(num_tables):
            tag, _checksum, table_off, length = struct.unpack_from(">4sIII", records, 16 * i)
            if tag == b"cmap":
                fh.seek(table_off)
                return fh.read(length)
    raise FontError(f"{path}: font has no cmap table")


def _ranges_format4(data: bytes, off: int) -> list[tuple[int, int]]:
    seg_count = _u16(data, off + 6) // 2
    ends_at = off + 14
    starts_at = ends_at + 2 * seg_count + 2
    deltas_at = starts_at + 2 * seg_count
    range_offsets_at = deltas_at + 2 * seg_count
    out: list[tuple[int, int]] = []
    for i in range(seg_count):
        end = _u16(data, ends_at + 2 * i)
        start = _u16(data, starts_at + 2 * i)
        delta = _u16(data, deltas_at + 2 * i)
        ro_pos = range_offsets_at + 2 * i
        range_offset = _u16(data, ro_pos)
        end = min(end, 0xFFFE)  # 0xFFFF is the sentinel segment, never a character
        if start > end:
            continue
        if range_offset == 0:
            zero = (-delta) & 0xFFFF  # the one code that would map to glyph 0 (.notdef)
            if start <= zero <= end:
                if start < zero:
                    out.append((start, zero - 1))
                if zero < end:
                    out.append((zero + 1, end))
            else:
                out.append((start, end))
            continue
        for c in range(start, end + 1):
            pos = ro_pos + range_offset + 2 * (c - start)
            if pos + 2 > len(data):
                break
            glyph = _u16(data, pos)
            if glyph and (glyph + delta) & 0xFFFF:
                out.append((c, c))
    return out


def _ranges_format6(data: bytes, off: int) -> list[tuple[int, int]]:
    first, count = _u16(data, off + 6), _u16(data, off + 8)
    return [(first + i, first + i) for i in range(count) if _u16(data, off + 10 + 2 * i)]


def _ranges_format12(data: bytes, off: int, fmt: int) -> list[tuple[int, int]]:
    n_groups = _u32(data, off + 12)
    out = []
    for start, end, glyph in struct.iter_unpack(">III", data[off + 16 : off + 16 + 12 * n_groups]):
        if fmt == 12 and glyph == 0:  # format 12 maps start -> glyph 0 (.notdef), then +1 ...
            start += 1
        elif fmt == 13 and glyph == 0:  # format 13 maps the whole group to one glyph
            continue
        if start <= end:
            out.append((start, end))
    return out


def _merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    starts: list[int] = []
    ends: list[int] = []
    for s, e in sorted(ranges):
        if starts and s <= ends[-1] + 1:
            ends[-1] = max(ends[-1], e)
        else:
            starts.append(s)
            ends.append(e)
    return tuple(starts), tuple(ends)


@functools.cache
def read_cmap_ranges(path: str | Path, index: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Code points a font face maps to a real glyph, as sorted disjoint ranges (starts, ends),
    both ends inclusive. Reads only the font's 'cmap' table; Unicode subtables (platform 0, or
    3 with encoding 1/10) of format 12/13 are preferred over format 4, then 6."""
    path = Path(path)
    data = _read_cmap_table(path, index)
    n = _u16(data, 2)
    best: tuple[int, int, int] | None = None  # (rank, format, offset)
    for i in range(n):
        platform, encoding, sub_off = struct.unpack_from(">HHI", data, 4 + 8 * i)
        if not (platform == 0 or (platform == 3 and encoding in (1, 10))):
            continue
        if sub_off + 2 > len(data):
            continue
        fmt = _u16(data, sub_off)
        rank = {12: 0, 13: 1, 4: 2, 6: 3}.get(fmt)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, fmt, sub_off)
    if best is None:
        raise FontError(f"{path}: no Unicode cmap subtable this parser understands")
    _, fmt, off = best
    if fmt == 4:
        ranges = _ranges_format4(data, off)
    elif fmt == 6:
        ranges = _ranges_format6(data, off)
    else:
        ranges = _ranges_format12(data, off, fmt)
    return _merge(ranges)


# ---------------------------------------------------------------------------------------------
# Fonts


@dataclass(frozen=True)
class FontFace:
    """One face of a font file (``index`` selects the face inside a .ttc collection)."""

    path: Path
    index: int = 0
    family: str = ""
    weight: str = "regular"  # "regular" or "bold"

    def covers(self, ch: str) -> bool:
        """Whether the face's cmap maps this character to a real glyph."""
        starts, ends = read_cmap_ranges(self.path, self.index)
        cp = ord(ch)
        i = bisect.bisect_right(starts, cp) - 1
        return i >= 0 and cp <= ends[i]

    def font(self, size: int) -> ImageFont.FreeTypeFont:
        return _load_font(str(self.path), self.index, int(size))


@functools.lru_cache(maxsize=256)
def _load_font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    engine = ImageFont.Layout.RAQM if raqm_available() else ImageFont.Layout.BASIC
    return ImageFont.truetype(path, size, index=index, layout_engine=engine)


def _face_family(path: Path, index: int) -> str:
    try:
        name = ImageFont.truetype(str(path), 12, index=index).getname()[0]
    except OSError:
        return ""
    return name or ""


_WEIGHT_RE = re.compile(r"-(Regular|Bold)\.(ttf|otf|ttc)$", re.IGNORECASE)
_DEDICATED = {
    "Latn": ("NotoSans",),
    "Arab": ("NotoSansArabic", "NotoNaskhArabic", "NotoKufiArabic"),
    "Hebr": ("NotoSansHebrew", "NotoSerifHebrew"),
    "Thai": ("NotoSansThai", "NotoSansThaiUI", "NotoLoopedThai", "NotoSerifThai"),
    "Deva": ("NotoSansDevanagari", "NotoSansDevanagariUI", "NotoSerifDevanagari"),
}
# Upstream/Google names of the CJK fonts besides Debian's NotoSansCJK-*.ttc.
_CJK_FILE_RE = re.compile(r"^Noto(Sans|Serif)(CJK|CJK(sc|tc|jp|kr|hk)|SC|TC|JP|KR|HK)$", re.I)
_CJK_FAMILY_RE = re.compile(r"^Noto (Sans|Serif) (CJK )?(SC|TC|HK|JP|KR)$")
_CJK_KEY = {"SC": "Hans", "TC": "Hant", "HK": "HK", "JP": "Jpan", "KR": "Kore"}


@dataclass
class FontSet:
    """The Noto faces found on this machine, by script and weight, plus every other Noto face
    (consulted last, lazily) so that unexpected scripts still render."""

    font_dirs: tuple[Path, ...]
    faces: dict[tuple[str, str], FontFace]  # (script key, weight) -> face
    extra: tuple[FontFace, ...] = ()
    _chains: dict[tuple[str, str], tuple[FontFace, ...]] = field(default_factory=dict, repr=False)

    def face(self, script: str, weight: str = "bold") -> FontFace | None:
        other = "regular" if weight == "bold" else "bold"
        return self.faces.get((script, weight)) or self.faces.get((script, other))

    def chain(self, locale: str, weight: str = "bold") -> tuple[FontFace, ...]:
        """Faces to try, in order, for text of this locale."""
        key = (locale, weight)
        if key not in self._chains:
            primary = locale_script(locale)
            cjk = primary if primary in _CJK_SCRIPTS else "Hans"
            cjk_order = [cjk] + [s for s in _CJK_SCRIPTS if s != cjk]
            order = [primary]
            for s in _BASE_ORDER:
                order.extend(cjk_order if s == "CJK" else [s])
            seen: list[FontFace] = []
            for s in order:
                f = self.face(s, weight)
                if f is not None and f not in seen:
                    seen.append(f)
            extras = sorted(
                (f for f in self.extra if f not in seen),
                key=lambda f: (f.weight != weight, not f.path.name.startswith("NotoSans")),
            )
            self._chains[key] = tuple(seen + extras)
        return self._chains[key]

    def face_for(self, ch: str, locale: str, weight: str = "bold") -> FontFace | None:
        """The first face of the locale's chain that covers ``ch`` (None: tofu everywhere)."""
        return next((f for f in self.chain(locale, weight) if f.covers(ch)), None)


def _font_dirs(font_dir: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    if font_dir is None:
        env = os.environ.get(FONT_DIR_ENV)
        if env:
            return [Path(p) for p in env.split(os.pathsep) if p]
        return list(DEFAULT_FONT_DIRS)
    if isinstance(font_dir, (str, os.PathLike)):
        return [Path(font_dir)]
    return [Path(p) for p in font_dir]


def _missing_fonts_message(dirs: Sequence[Path], what: str) -> str:
    where = ", ".join(str(d) for d in dirs)
    return (
        f"{what} in {where}. Install the Noto fonts with `sudo {INSTALL_SCRIPT}` "
        "(Debian packages fonts-noto-core and fonts-noto-cjk; `make install` runs it), or point "
        f"{FONT_DIR_ENV} at a directory holding NotoSans-*.ttf and friends."
    )


@functools.lru_cache(maxsize=8)
def _scan(dirs: tuple[Path, ...]) -> FontSet:
    files: list[Path] = []
    for d in dirs:
        if d.is_dir():
            files.extend(
                p
                for p in sorted(d.rglob("*"))
                if p.suffix.lower() in {".ttf", ".otf", ".ttc"} and p.is_file()
            )
    if not files:
        raise FontError(_missing_fonts_message(dirs, "No font files found"))

    faces: dict[tuple[str, str], FontFace] = {}
    rank: dict[tuple[str, str], int] = {}
    extra: list[FontFace] = []
    seen_names: set[str] = set()
    for path in files:
        m = _WEIGHT_RE.search(path.name)
        if not m or path.name in seen_names:  # keep one copy of a file found in two dirs
            continue
        seen_names.add(path.name)
        weight = m.group(1).lower()
        stem = path.name[: m.start()]
        placed = False
        for script, stems in _DEDICATED.items():
            if stem in stems:
                r = stems.index(stem)
                if r < rank.get((script, weight), len(stems)):
                    faces[(script, weight)], rank[(script, weight)] = (
                        FontFace(path, 0, stem, weight),
                        r,
                    )
                placed = True
        if _CJK_FILE_RE.match(stem):
            serif = "Serif" in stem
            for index in range(_ttc_count(path)):
                family = _face_family(path, index)
                fm = _CJK_FAMILY_RE.match(family)
                if not fm:
                    continue  # e.g. "Noto Sans Mono CJK JP"
                key = (_CJK_KEY[fm.group(3)], weight)
                r = 1 if serif else 0
                if r < rank.get(key, 2):
                    faces[key], rank[key] = FontFace(path, index, family, weight), r
            placed = True
        if not placed:
            extra.append(FontFace(path, 0, stem, weight))
    if not faces and not extra:
        raise FontError(_missing_fonts_message(dirs, "No usable Noto fonts (*-Regular/-Bold)"))
    return FontSet(font_dirs=dirs, faces=faces, extra=tuple(extra))


def find_fonts(
    font_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
) -> FontSet:
    """Locate the Noto fonts: ``font_dir`` (a directory or several), else ``$FARM_FONT_DIR``
    (os.pathsep-separated), else Debian's standard Noto directories. Raises FontError naming
    the directories and the install script when none are found."""
    return _scan(tuple(_font_dirs(font_dir)))


# ---------------------------------------------------------------------------------------------
# Coverage and font runs


def _sticky(ch: str) -> bool:
    """Non-letters that should stay in the current run's face when it covers them."""
    return not unicodedata.category(ch).startswith("L")


def _assign_faces(text: str, chain: Sequence[FontFace]) -> list[FontFace | None]:
    out: list[FontFace | None] = []
    current: FontFace | None = None
    for ch in text:
        if current is not None and _sticky(ch) and current.covers(ch):
            out.append(current)
            continue
        face = next((f for f in chain if f.covers(ch)), None)
        if face is not None:
            current = face
        out.append(face)
    return out


def coverage(
    text: str, locale: str, fonts: FontSet | None = None, weight: str = "bold"
) -> list[tuple[str, FontFace | None]]:
    """Each character of ``text`` with the face that will draw it (None: no face covers it)."""
    fonts = fonts or find_fonts()
    return list(zip(text, _assign_faces(text, fonts.chain(locale, weight)), strict=True))


def uncovered_chars(
    text: str, locale: str, fonts: FontSet | None = None, weight: str = "bold"
) -> list[str]:
    """Characters (whitespace excepted) no font in the locale's chain covers: they would be
    drawn as tofu boxes."""
    pairs = coverage(text, locale, fonts, weight)
    return [ch for ch, face in pairs if face is None and not ch.isspace()]


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
    faces = _assign_faces(text, chain)
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
        self.rtl = _is_rtl_locale(locale)  # paragraph direction comes from the locale
        self.para_dir = "rtl" if self.rtl else "ltr"
        self.language = _raqm_language(locale) if raqm_available() else None
        self.raqm = raqm_available()

    def kwargs(self, run: _Run) -> dict:
        if not self.raqm:
            return {}
        return {"direction": run.direction, "language": self.language}

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
        a = re.sub(r"\s", "", aspect).replace("x", ":").replace("/", ":")
        return a
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
    lines: list[_Line]
    texts: list[str]
    size: int
    width: float
    height: int
    advances: list[int]


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
    return _Block(lines, texts, ts.size, width, sum(advances), advances)


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


def _draw_block(
    mask: Image.Image,
    block: _Block,
    locale: str,
    fonts: FontSet,
    x_left: float,
    x_right: float,
    top: float,
    align: str,
) -> None:
    draw = ImageDraw.Draw(mask)
    ts = _Typesetter(fonts, locale, block.size)
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
    patch = Image.new("RGBA", small.size, (*fill[:3], 0))
    patch.putalpha(Image.fromarray(np.rint(alpha).astype(np.uint8)))
    layer.alpha_composite(patch, dest=(x0, y0))


def _composite_mask(layer: Image.Image, mask: Image.Image, color: tuple[int, int, int]) -> None:
    bbox = mask.getbbox()
    if bbox is None:
        return
    crop = mask.crop(bbox)
    patch = Image.new("RGBA", crop.size, (*color, 0))
    patch.putalpha(crop)
    layer.alpha_composite(patch, dest=bbox[:2])


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
        _is_rtl_locale(locale) or locale_script(locale) in {"Thai", "Deva"}
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
    align = "right" if _is_rtl_locale(locale) else "left"

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
        cta_box = (math.floor(px0), math.floor(py0), math.ceil(px0 + pill_w), math.ceil(py1))
        radius = pill_h / 2 if len(c_block.lines) == 1 else 0.5 * c_block.size
        _aa_rounded_rect(layer, cta_box, radius, CTA_FILL)
        mask = Image.new("L", (width, height), 0)
        _draw_block(
            mask,
            c_block,
            locale,
            fonts,
            px0 + c_pad_x,
            px0 + pill_w - c_pad_x,
            py0 + c_pad_y,
            "center",
        )
        _composite_mask(layer, mask, CTA_COLOR)

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
        headline_box = (
            math.floor(bx0),
            math.floor(top),
            math.ceil(bx0 + box_w),
            math.ceil(top + box_h),
        )
        _aa_rounded_rect(layer, headline_box, 0.25 * h_block.size, HEADLINE_BACKING)
        mask = Image.new("L", (width, height), 0)
        _draw_block(
            mask,
            h_block,
            locale,
            fonts,
            bx0 + h_pad_x,
            bx0 + box_w - h_pad_x,
            top + h_pad_y,
            align,
        )
        _composite_mask(layer, mask, HEADLINE_COLOR)

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
