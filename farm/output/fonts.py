"""Fonts for the text overlay: which Noto face draws each character of localized copy.

Video models draw foreign scripts as fake glyphs, so ``farm.output.overlay`` typesets the copy with
Pillow; this module finds the fonts it needs and says which face covers which character.
Conventions (checked by tests/farm/output/test_fonts.py):

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
- Right-to-left locales and complex scripts need Pillow's raqm layout (``raqm_available``).
"""

from __future__ import annotations

import bisect
import functools
import os
import re
import struct
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import ImageFont, features

__all__ = [
    "DEFAULT_FONT_DIRS",
    "INSTALL_SCRIPT",
    "FontError",
    "FontFace",
    "FontSet",
    "assign_faces",
    "coverage",
    "find_fonts",
    "is_rtl_locale",
    "locale_script",
    "raqm_available",
    "raqm_language",
    "read_cmap_ranges",
    "uncovered_chars",
]

DEFAULT_FONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts/opentype/noto"),
    Path("/usr/share/fonts/truetype/noto"),
)
INSTALL_SCRIPT = "scripts/install-system-deps.sh"
FONT_DIR_ENV = "FARM_FONT_DIR"

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


def raqm_language(locale: str) -> str | None:
    lang, script, region = _split_locale(locale)
    if not lang:
        return None
    if lang == "zh":  # region/script picks Simplified/Traditional forms via OpenType 'locl'
        return "-".join(p for p in (lang, script, region) if p)
    return lang


def is_rtl_locale(locale: str) -> bool:
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
        end = min(_u16(data, ends_at + 2 * i), 0xFFFE)  # 0xFFFF: the sentinel, never a character
        start = _u16(data, starts_at + 2 * i)
        delta = _u16(data, deltas_at + 2 * i)
        ro_pos = range_offsets_at + 2 * i
        range_offset = _u16(data, ro_pos)
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
        return ImageFont.truetype(str(path), 12, index=index).getname()[0] or ""
    except OSError:
        return ""


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
# Coverage


def _sticky(ch: str) -> bool:
    """Non-letters that should stay in the current run's face when it covers them."""
    return not unicodedata.category(ch).startswith("L")


def assign_faces(text: str, chain: Sequence[FontFace]) -> list[FontFace | None]:
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
    return list(zip(text, assign_faces(text, fonts.chain(locale, weight)), strict=True))


def uncovered_chars(
    text: str, locale: str, fonts: FontSet | None = None, weight: str = "bold"
) -> list[str]:
    """Characters (whitespace excepted) no font in the locale's chain covers: they would be
    drawn as tofu boxes."""
    pairs = coverage(text, locale, fonts, weight)
    return [ch for ch, face in pairs if face is None and not ch.isspace()]
