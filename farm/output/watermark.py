"""Invisible watermark carrying a variant id in every frame, so a leaked file can be traced.

Method: keyed spread spectrum in the luma at a coarse, size-independent scale.

* The frame is cut into a grid with a fixed number of cells along its short side (one grid
  per entry of `GRIDS`), so the same grid lands on the same content at any resolution: a
  0.5x resize needs no resampling, and the detector reads the geometry from the frame.
* Each cell carries one chip: `±amp * sin(2πu) * sin(2πv)` in cell coordinates (u, v). The
  bump is zero on the cell border (no block edges), has zero mean and is orthogonal to any
  function of x alone or y alone, so flat areas and linear gradients do not interfere.
* A keyed generator assigns every (frame group, cell) a payload bit and a ±1 sign; each of
  the 80 coded bits (64 payload + CRC-16) gets ~13 chips per second of 16:9 video.
* Embedding is informed: the host's own correlation with each bit's chips is measured and
  the amplitude raised where the picture works against the bit, so content does not flip
  bits. Amplitude follows local texture (masking) and the whole mark is capped by a PSNR.
* Detection is blind (suspect video + key): correlate each cell with its basis, weight each
  (frame, grid) by how well it agrees with a first decision (what the codec kept), sum per
  bit, then Chase-decode: flip up to 3 of the weakest bits until the CRC matches.

Limits: the chip layout is indexed from the first frame, so a copy trimmed at the start is
not read; frames need a short side of at least MIN_SIDE pixels, and a clip needs at least
MIN_FRAMES frames: every entry point (`farm render --seconds`, `POST /v1/videos` seconds, a
spec's durations, a feed's duration_s) refuses shorter through `length_problem`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

KEY = "video-farm/watermark/v1"  # changing it orphans every mark already in the wild
GRIDS = (5,)  # cells along the short side: coarser survives motion, finer averages the host
GROUP = 8  # frames sharing one chip layout: codecs keep a mark that holds still a while
PAYLOAD_BITS = 64
MIN_SIDE = 32  # pixels on the short side: a few per cell at the finest grid
# Shortest clip whose encoded file verifies against its id. Measured on `small` renders
# (3 prompts x 2 seeds, with and without copy, 256x144, 144x256, 144x144, H.264 crf 20):
# 5 frames verified 4 of 36, 9 and 13 frames 30 of 36, 17 frames 36 of 36 (>= 90.6% of bits).
MIN_FRAMES = 17
CODE_BITS = PAYLOAD_BITS + 16  # payload + CRC-16
ID_LENGTHS = (16, 20)  # campaign ids, variant ids (hex)
# Soft-decision ECC (Chase decoding): up to CHASE_FLIPS of the CHASE_BITS least reliable bits
# may be flipped to satisfy the CRC. 697 candidates make ~1% of unmarked videos decode to *some*
# id; that id is random, so it will not be a known variant: check it against the manifest or
# pass `expected` to verify_file, which compares bits instead.
CHASE_BITS, CHASE_FLIPS = 16, 3
# With `expected`, this share of the 64 bits must agree (chance: < 1e-11 at random).
MATCH_ACCURACY = 0.9
# Chip amplitude floor and per-bit margin net of the host, in luma levels (0..255).
FLOOR, MARGIN = 4.0, 5.0
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # BT.709


@dataclass(frozen=True)
class Extraction:
    """What the detector read from a video.

    `bits` are the 64 raw hard payload bits before error correction (always present, for
    bit-accuracy checks); `found` means the CRC matched after at most CHASE_FLIPS flips of
    weak bits, and only then is `payload_hex` (16 hex chars) set.
    `bit_accuracy_estimate` is the mean probability each bit is right under a Gaussian
    model of the per-bit sums; `confidence` is their mean |z|.
    """

    found: bool
    payload_hex: str | None
    bits: np.ndarray
    confidence: float
    bit_accuracy_estimate: float
    expected: str | None = None
    matches: bool | None = None  # set when `expected` was given: found and equal


def _normalise_id(payload_id: str) -> str:
    if not isinstance(payload_id, str):
        raise ValueError(f"payload id must be a hex string; got {type(payload_id).__name__}")
    pid = payload_id.strip().lower()
    if len(pid) not in ID_LENGTHS:
        raise ValueError(f"payload id must be 16 or 20 hex characters; got {len(pid)}")
    if any(ch not in "0123456789abcdef" for ch in pid):
        raise ValueError(f"payload id must contain only hex digits 0-9a-f; got {payload_id!r}")
    return pid[:16]


def payload_bits(payload_id: str) -> np.ndarray:
    """The 64 bits (uint8 0/1, MSB first) a payload id is embedded as: its first 16 hex chars."""
    value = int(_normalise_id(payload_id), 16)
    return np.array([(value >> (63 - i)) & 1 for i in range(PAYLOAD_BITS)], dtype=np.uint8)


def _crc16(bits: np.ndarray) -> np.ndarray:
    """CRC-16/CCITT-FALSE of the payload bits, as 16 bits: tells a real mark from noise."""
    crc = 0xFFFF
    for byte in np.packbits(bits.astype(np.uint8)).tolist():
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return np.array([(crc >> (15 - i)) & 1 for i in range(16)], dtype=np.uint8)


def _coded(payload: np.ndarray) -> np.ndarray:
    return np.concatenate([payload, _crc16(payload)])


def bit_accuracy(extracted_bits: np.ndarray, expected_bits: np.ndarray) -> float:
    """Fraction of bits that agree (same length required)."""
    a, b = np.asarray(extracted_bits).ravel(), np.asarray(expected_bits).ravel()
    if a.shape != b.shape:
        raise ValueError(f"bit arrays differ in length: {a.size} vs {b.size}")
    return float(np.mean(a.astype(bool) == b.astype(bool)))


def psnr(original: np.ndarray, marked: np.ndarray) -> float:
    """PSNR in dB between two uint8 videos, the invisibility measure the mark is capped by."""
    mse = float(np.mean((original.astype(np.float64) - marked.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclass(frozen=True)
class _Grid:
    """One grid on one frame size: per-axis cell index and basis, and the projection."""

    rows: int
    cols: int
    iy: np.ndarray  # (H,) cell row of each pixel row
    ix: np.ndarray  # (W,)
    by: np.ndarray  # (H,) sin(2πv) for each pixel row
    bx: np.ndarray  # (W,)
    py: np.ndarray  # (rows, H) basis rows, so Y -> cell correlation is two matmuls
    px: np.ndarray  # (W, cols)
    norm: np.ndarray  # (rows, cols) energy of each cell's basis


def _axis(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres in cell units: the same content position maps to the same (cell, phase)
    # at any resolution, which is what makes a resized copy readable.
    u = (np.arange(n) + 0.5) * cells / n
    idx = np.minimum(u.astype(np.int64), cells - 1)
    return idx, np.sin(2 * np.pi * (u - idx)).astype(np.float32)


@lru_cache(maxsize=32)
def _grid(h: int, w: int, short_cells: int) -> _Grid:
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"frames must be at least {MIN_SIDE} px on the short side; got {h}x{w}")
    long_cells = max(short_cells, round(max(h, w) / min(h, w) * short_cells))
    rows, cols = (short_cells, long_cells) if h <= w else (long_cells, short_cells)
    iy, by = _axis(h, rows)
    ix, bx = _axis(w, cols)
    py = np.zeros((rows, h), np.float32)
    py[iy, np.arange(h)] = by
    px = np.zeros((w, cols), np.float32)
    px[np.arange(w), ix] = bx
    norm = (py**2).sum(1)[:, None] * (px**2).sum(0)[None, :]
    return _Grid(rows, cols, iy, ix, by, bx, py, px, np.maximum(norm, 1e-6))


@lru_cache(maxsize=256)
def _layout(rows: int, cols: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Keyed (bit index, ±1 sign) of each cell for one frame group on one grid."""
    seed = hashlib.sha256(f"{KEY}|{rows}x{cols}|{group}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
    n = rows * cols
    # Round-robin over groups so every bit is carried even when a grid has < 80 cells.
    bit = rng.permutation((np.arange(n) + group * n) % CODE_BITS).reshape(rows, cols)
    sign = rng.choice(np.array([-1.0, 1.0], np.float32), n).reshape(rows, cols)
    return bit, sign


def _layouts(frames: int, g: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """(bit index [F, rows, cols], sign [F, rows, cols]) for a clip of `frames` frames."""
    groups = [_layout(g.rows, g.cols, f // GROUP) for f in range(frames)]
    return np.stack([b for b, _ in groups]), np.stack([s for _, s in groups])


def _correlate(y: np.ndarray, g: _Grid) -> np.ndarray:
    """Per-cell correlation [F, rows, cols] of luma [F, H, W] with the cell basis."""
    return (g.py @ y @ g.px) / g.norm


def _luma(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:  # already luma [F, H, W]
        return arr.astype(np.float32)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3] RGB or [F, H, W] luma; got {arr.shape}")
    return arr.astype(np.float32) @ _LUMA


def _cell_activity(y: np.ndarray, g: _Grid) -> np.ndarray:
    """Mean absolute luma gradient per cell [F, rows, cols]: how much texture hides a chip."""
    grad = np.zeros_like(y)
    grad[:, :, 1:] += np.abs(np.diff(y, axis=2))
    grad[:, 1:, :] += np.abs(np.diff(y, axis=1))
    starts_y = np.r_[0, np.flatnonzero(np.diff(g.iy)) + 1]
    starts_x = np.r_[0, np.flatnonzero(np.diff(g.ix)) + 1]
    sums = np.add.reduceat(np.add.reduceat(grad, starts_y, axis=1), starts_x, axis=2)
    return sums / (np.bincount(g.iy)[:, None] * np.bincount(g.ix)[None, :])


def embed(
    frames: np.ndarray,
    payload_id: str,
    *,
    strength: float = 1.0,
    min_psnr: float = 41.0,
) -> np.ndarray:
    """Return a watermarked copy of RGB uint8 frames [F, H, W, 3] carrying `payload_id`.

    `strength` scales the chip amplitude; `min_psnr` (dB) caps the total distortion over the
    clip. Deterministic: the same frames and id give the same output.
    """
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3]; got {arr.dtype} {arr.shape}")
    bits = _coded(payload_bits(payload_id))
    bit_sign = 2.0 * bits.astype(np.float32) - 1.0
    f, h, w, _ = arr.shape
    y = _luma(arr)
    parts = []  # per grid: (grid, bit index, chip sign, masking weight, host correlation)
    for short in GRIDS:
        g = _grid(h, w, short)
        b, s = _layouts(f, g)
        mask = np.clip(_cell_activity(y, g) / 6.0, 0.5, 2.0)  # texture hides more
        parts.append((g, b, bit_sign[b] * s, mask, _correlate(y, g)))
    # Informed embedding per bit: what the host already contributes to the detector's sum
    # for that bit is known here, so ask each bit for a margin net of it, never below a floor.
    count = sum(np.bincount(b.ravel(), minlength=CODE_BITS) for _, b, *_ in parts)
    host = sum(np.bincount(b.ravel(), (s * c).ravel(), CODE_BITS) for _, b, s, _, c in parts)
    weight = sum(np.bincount(b.ravel(), m.ravel(), CODE_BITS) for _, b, _, m, _ in parts)
    floor, margin = FLOOR * strength, MARGIN * strength
    amp = np.maximum(floor * count, margin * count - host) / np.maximum(weight, 1e-6)
    field = np.zeros((f, h, w), np.float32)
    for g, b, s, m, _ in parts:
        cells = s * amp[b] * m  # [F, rows, cols]
        field += cells[:, g.iy][:, :, g.ix] * (g.by[:, None] * g.bx[None, :])
    # Adding the same delta to R, G and B moves luma by it and leaves chroma alone.
    budget = 255.0**2 / 10 ** (min_psnr / 10)
    mse = float(np.mean(field**2))
    if mse > budget:
        field *= math.sqrt(budget / mse)
    out = arr.astype(np.float32) + field[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def extract(frames: np.ndarray) -> Extraction:
    """Read the watermark from RGB frames [F, H, W, 3] (or luma [F, H, W]) of any size."""
    y = _luma(frames)
    f, h, w = y.shape
    xs, bis, units = [], [], []  # flat observations, their bit, their (grid, frame) unit
    for k, short in enumerate(GRIDS):
        g = _grid(h, w, short)
        b, s = _layouts(f, g)
        xs.append((_correlate(y, g) * s).ravel())
        bis.append(b.ravel())
        units.append(np.repeat(np.arange(f) + k * f, g.rows * g.cols))
    x, bi, unit = np.concatenate(xs), np.concatenate(bis), np.concatenate(units)
    n_units = f * len(GRIDS)
    per_unit = np.bincount(unit, minlength=n_units)
    soft = np.bincount(bi, x, CODE_BITS)
    # Decision-directed weights: a unit agreeing with the first decision carried the mark
    # through the codec (an I-frame, a still area); one that disagrees is mostly noise.
    for _ in range(2):
        agree = x * np.where(soft >= 0, 1.0, -1.0)[bi]
        mean = np.bincount(unit, agree, n_units) / per_unit
        var = np.bincount(unit, (agree - mean[unit]) ** 2, n_units) / per_unit + 1e-6
        unit_w = np.maximum(mean, 0.0) / var
        soft = np.bincount(bi, x * unit_w[unit], CODE_BITS)
    # Under the same model each bit's sum has variance sum(w^2 var) over its observations.
    z = soft / np.sqrt(np.maximum(np.bincount(bi, (unit_w**2 * var)[unit], CODE_BITS), 1e-12))
    hard = (soft > 0).astype(np.uint8)
    fixed = _chase(hard, np.abs(z))
    est = float(np.mean([0.5 * (1 + math.erf(abs(v) / math.sqrt(2))) for v in z]))
    confidence = float(np.mean(np.abs(z)))
    if fixed is None:
        return Extraction(False, None, hard[:PAYLOAD_BITS], confidence, est)
    hex_id = f"{int(''.join(map(str, fixed[:PAYLOAD_BITS])), 2):016x}"
    return Extraction(True, hex_id, hard[:PAYLOAD_BITS], confidence, est)


def _chase(hard: np.ndarray, reliability: np.ndarray) -> np.ndarray | None:
    """Coded bits that pass the CRC after flipping <= CHASE_FLIPS weak bits, or None."""
    weak = np.argsort(reliability)[:CHASE_BITS]
    for flips in range(CHASE_FLIPS + 1):
        for combo in itertools.combinations(weak.tolist(), flips):
            bits = hard.copy()
            bits[list(combo)] ^= 1
            if np.array_equal(_crc16(bits[:PAYLOAD_BITS]), bits[PAYLOAD_BITS:]):
                return bits
    return None


def length_problem(seconds: float, fps: float, frames: int) -> str | None:
    """Why `seconds` at `fps` (which render `frames` frames) is too short for the mark, or None.

    For messages that name the field themselves (``seconds: 0.1 s at 24 fps renders 5
    frames; ...``); the one home of the minimum length every entry point checks.
    """
    if frames >= MIN_FRAMES:
        return None
    shortest = math.ceil(MIN_FRAMES / fps * 100) / 100  # MIN_FRAMES / fps, rounded up
    return (
        f"{seconds:g} s at {fps:g} fps renders {frames} frames; the watermark needs at least "
        f"{MIN_FRAMES} frames, so at least {shortest:g} s at {fps:g} fps"
    )


def _decode_luma(data: bytes) -> np.ndarray:
    import av  # the detector alone decodes: loaders that only check lengths skip PyAV

    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        planes = [frame.to_ndarray(format="gray") for frame in container.decode(stream)]
    if not planes:
        raise ValueError("video has no decodable frames")
    return np.stack(planes)


def verify_file(path_or_bytes: str | Path | bytes, expected: str | None = None) -> Extraction:
    """Decode a video file (path or bytes) with PyAV and read its watermark.

    With `expected` (a 16/20-hex id), `matches` says whether the mark is that id.
    """
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        data = bytes(path_or_bytes)
    else:
        data = Path(path_or_bytes).read_bytes()
    want = _normalise_id(expected) if expected is not None else None
    result = extract(_decode_luma(data))
    if want is None:
        return result
    agree = bit_accuracy(result.bits, payload_bits(want))
    ok = result.payload_hex == want or (not result.found and agree >= MATCH_ACCURACY)
    return Extraction(**{**result.__dict__, "expected": want, "matches": ok})


# ---- marking finished videos ---------------------------------------------------------------

# (strength, min PSNR dB), tried in order. The first rung is invisible (>= 40 dB); the
# others trade a few dB for clips whose content drowns it: the untrained model's noise, and
# text overlays, whose saturated pixels clip half of every chip under the glyphs.
LADDER = ((1.0, 41.0), (2.0, 38.0), (3.0, 36.0))


def payload_for(video_id: str) -> str:
    """The 16-hex payload a video carries: its id's first 16 hex chars, else a hash of the id."""
    vid = video_id.strip().lower()
    if len(vid) >= 16 and all(ch in "0123456789abcdef" for ch in vid[:16]):
        return vid[:16]
    return hashlib.sha256(video_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MarkRecord:
    """How a finished file was marked, checked by decoding the file itself at write time.

    `decodes`: a blind read of the encoded file (no id given, CRC-checked) returns exactly
    `payload`, so `farm verify FILE` names the id. `verified`: the file's mark is `payload`
    by `verify_file(..., expected=payload)` (a blind decode, or >= MATCH_ACCURACY of the
    bits), so checking a file against its claimed id works. When not verified, `reason`
    says why (too small, or what the best rung achieved): provenance never claims a mark
    the file does not carry.
    """

    payload: str
    verified: bool
    decodes: bool = False
    strength: float | None = None
    psnr_db: float | None = None
    bit_accuracy: float | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        """JSON-ready fields for the sidecar."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def mark_and_encode(
    frames: np.ndarray,
    payload: str,
    encode: Callable[[np.ndarray], bytes],
    ladder: tuple[tuple[float, float], ...] = LADDER,
) -> tuple[np.ndarray, bytes, MarkRecord]:
    """Embed `payload`, encode with `encode(frames) -> bytes`, check the bytes; adapt strength.

    Returns (marked frames, encoded file, record). Rungs of `ladder` are tried until the
    file decodes blind to `payload`; failing that, the weakest rung whose file verifies
    against `payload` is kept, else the one with the most bits right (unverified). Frames
    too small to carry a mark are encoded unmarked, and the record says so.
    """
    payload = _normalise_id(payload)
    f, h, w, _ = np.asarray(frames).shape
    if min(h, w) < MIN_SIDE:
        reason = f"not marked: {h}x{w} frames are under {MIN_SIDE} px on the short side"
        return frames, encode(frames), MarkRecord(payload, False, reason=reason)
    tried = []
    for strength, min_psnr in ladder:
        marked = embed(frames, payload, strength=strength, min_psnr=min_psnr)
        data = encode(marked)
        got = verify_file(data, expected=payload)
        record = MarkRecord(
            payload,
            bool(got.matches),
            got.found and got.payload_hex == payload,
            strength,
            round(psnr(frames, marked), 2),
            round(bit_accuracy(got.bits, payload_bits(payload)), 4),
        )
        if record.decodes:
            return marked, data, record
        tried.append((marked, data, record))
    verified = [t for t in tried if t[2].verified]
    if verified:
        marked, data, record = verified[0]
        reason = "verifies against its id; too weak for a blind read (no CRC match)"
        return marked, data, MarkRecord(**{**record.__dict__, "reason": reason})
    marked, data, record = max(tried, key=lambda t: t[2].bit_accuracy)
    chips = f * len(GRIDS) * _grid(h, w, GRIDS[0]).rows * _grid(h, w, GRIDS[0]).cols / CODE_BITS
    reason = (
        f"unverified: best {record.bit_accuracy:.0%} of payload bits after encoding "
        f"({f} frames of {w}x{h} give {chips:.1f} chips per coded bit)"
    )
    return marked, data, MarkRecord(**{**record.__dict__, "reason": reason})
