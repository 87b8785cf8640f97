"""Finished video files (H.264 MP4, JPEG poster, JSON sidecar) on any fsspec storage."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import posixpath
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import av
import fsspec
import numpy as np
from PIL import Image
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from farm.storage import retry

FpsLike = int | float | str | Fraction

# Stores where one upload is atomic and mv is copy+delete, so the temp-name dance is skipped.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs"}


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """Content hash used to tie a sidecar to the exact MP4 bytes it describes."""
    return hashlib.sha256(data).hexdigest()


def _software_version() -> str:
    try:
        return package_metadata.version("video-farm")
    except package_metadata.PackageNotFoundError:
        return "0+unknown"


class Provenance(BaseModel):
    """Where a rendered video came from, embedded in the MP4 and written to its sidecar."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Model name or id that rendered the frames.")
    weights_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 (lowercase hex) of the model weights."
    )
    seed: int = Field(ge=0, description="Sampler seed; with the prompt it reproduces the video.")
    prompt: str = Field(description="Text prompt the video was rendered from.")
    negative_prompt: str = Field(default="", description="Negative prompt, empty when unused.")
    campaign_id: str = Field(description="Ad campaign this video belongs to.")
    variant_id: str = Field(description="Variant (locale, audience, ...) within the campaign.")
    created_at: AwareDatetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="Render time; stored in UTC and serialised as ISO-8601.",
    )
    software_version: str = Field(
        default_factory=_software_version, description="video-farm package version."
    )
    extra: dict[str, str] = Field(default_factory=dict, description="Free-form string tags.")

    @field_validator("created_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        # One timezone everywhere so sidecars from different workers compare and sort.
        return value.astimezone(UTC)

    def to_metadata(self) -> dict[str, str]:
        """MP4 tags: the record (less created_at) as JSON under `provenance`, and a `comment`."""
        comment = (
            f"{self.model} seed={self.seed} campaign={self.campaign_id} variant={self.variant_id}"
        )
        # created_at stays in the sidecar only: the same request must give the same bytes.
        return {"provenance": self.model_dump_json(exclude={"created_at"}), "comment": comment}

    @classmethod
    def from_metadata(cls, tags: dict[str, str]) -> Provenance:
        """Rebuild the record from MP4 tags written by `to_metadata`."""
        return cls.model_validate_json(tags["provenance"])


@dataclass(frozen=True)
class VideoInfo:
    """What an MP4 actually contains, for tests and output checks."""

    frames: int
    fps: Fraction
    width: int
    height: int
    codec: str
    pix_fmt: str
    duration: float  # seconds
    faststart: bool  # moov box before mdat at the top level
    metadata: dict[str, str] = field(default_factory=dict)


class VideoOutputs(BaseModel):
    """Where write_video_outputs put the three files, and what they hold."""

    model_config = ConfigDict(frozen=True)

    mp4_url: str = Field(description="URL of the H.264 MP4.")
    poster_url: str = Field(description="URL of the JPEG poster frame.")
    sidecar_url: str = Field(description="URL of the JSON sidecar; written last.")
    sha256: str = Field(description="sha256 of the MP4 bytes.")
    mp4_bytes: int = Field(description="Size of the MP4 in bytes.")
    poster_bytes: int = Field(description="Size of the poster in bytes.")
    sidecar_bytes: int = Field(description="Size of the sidecar in bytes.")
    watermark: dict[str, Any] | None = Field(
        None, description="How the frames were watermarked and whether the file verified."
    )


def _as_frames(frames: Any) -> np.ndarray:
    """Check frames are uint8 [F, H, W, 3] (numpy or torch) and return them as numpy."""
    if hasattr(frames, "detach"):  # torch.Tensor, without importing torch here
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4:
        raise ValueError(f"frames must be 4-D [F, H, W, 3]; got shape {arr.shape}")
    if arr.shape[-1] != 3:
        raise ValueError(f"frames must have 3 (RGB) channels in the last axis; got {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError("frames must hold at least one frame (F >= 1)")
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(f"frames must have H >= 1 and W >= 1; got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8; got dtype {arr.dtype}")
    return arr


def as_fps(fps: FpsLike) -> Fraction:
    """Exact frame rate from an int, float, "num/den" / decimal string or Fraction.

    Ints, Fractions and "num/den" strings are taken exactly. Floats and decimal strings are
    rounded: values within 0.01 of an NTSC rate n*1000/1001 snap to it (29.97 -> 30000/1001,
    23.976 -> 24000/1001), anything else becomes `Fraction(fps).limit_denominator(1001)`.
    """
    if isinstance(fps, bool):
        raise ValueError(f"fps must be a number; got {fps!r}")
    exact = isinstance(fps, int | Fraction) or (isinstance(fps, str) and "/" in fps)
    try:
        rate = Fraction(fps.strip() if isinstance(fps, str) else fps)
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        raise ValueError(f"fps must be a positive number; got {fps!r}") from exc
    if rate <= 0:
        raise ValueError(f"fps must be positive; got {fps!r}")
    if not exact and rate.denominator != 1:
        ntsc = Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)
        rate = ntsc if abs(ntsc - rate) < Fraction(1, 100) else rate.limit_denominator(1001)
    return rate


# BT.709 RGB → Y'CbCr, limited ("tv") range: rows give Y, Cb, Cr from (R, G, B) in 0..255.
_BT709 = np.array(
    [[0.2126, 0.7152, 0.0722], [-0.114572, -0.385428, 0.5], [0.5, -0.454153, -0.045847]],
    dtype=np.float32,
) * (np.array([219.0, 224.0, 224.0], dtype=np.float32)[:, None] / 255.0)
_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float32)


def _yuv420_frames(frames: np.ndarray, chunk: int = 16):
    """Yield each RGB frame as a yuv420p `av.VideoFrame` whose bytes are fully defined.

    The conversion is done here with numpy and every plane is written whole, row padding
    zeroed (PyAV leaves it uninitialised when the width is not a multiple of the alignment),
    so every byte handed to the encoder is defined: the same frames, the same file.
    """
    _, h, w, _ = frames.shape
    for planes in _yuv420_planes(frames, chunk):
        frame = av.VideoFrame(w, h, "yuv420p")
        for plane, data in zip(frame.planes, planes, strict=True):
            rows = np.zeros((plane.height, plane.line_size), dtype=np.uint8)
            rows[:, : plane.width] = data
            plane.update(rows)
        yield frame


def _yuv420_planes(frames: np.ndarray, chunk: int = 16):
    """Yield the (Y [H, W], U [H/2, W/2], V [H/2, W/2]) planes of each RGB frame (BT.709)."""
    _, h, w, _ = frames.shape
    for start in range(0, len(frames), chunk):
        rgb = frames[start : start + chunk].astype(np.float32)
        ycc = rgb @ _BT709.T + _OFFSET  # (n, H, W, 3)
        y = np.clip(np.rint(ycc[..., 0]), 0, 255).astype(np.uint8)
        # 4:2:0: average each 2x2 block of chroma.
        c = ycc[..., 1:].reshape(len(rgb), h // 2, 2, w // 2, 2, 2).mean(axis=(2, 4))
        c = np.clip(np.rint(c), 0, 255).astype(np.uint8)  # (n, H/2, W/2, 2)
        for k in range(len(rgb)):
            yield y[k], c[k, ..., 0], c[k, ..., 1]


def encode_mp4(
    frames: Any,
    fps: FpsLike,
    *,
    crf: int = 20,
    metadata: dict[str, str] | None = None,
    preset: str = "medium",
) -> bytes:
    """Encode RGB uint8 frames [F, H, W, 3] to a finished, faststart H.264 MP4; return its bytes.

    Odd heights/widths are padded to even by replicating the last row/column (yuv420p needs
    even sizes and ad platforms reject odd ones). Colours are converted with BT.709 and the
    stream is tagged BT.709 limited range. `metadata` becomes container tags; any key survives
    except `encoder`, which libavformat overwrites. `fps` is read by `as_fps`.
    """
    arr = _as_frames(frames)
    rate = as_fps(fps)
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51 for libx264; got {crf}")
    tags = dict(metadata or {})
    if not all(isinstance(k, str) and k and isinstance(v, str) for k, v in tags.items()):
        raise ValueError("metadata must map non-empty str keys to str values")
    _, h, w, _ = arr.shape
    if h % 2 or w % 2:
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    # FFmpeg's faststart pass re-opens the output *by file name* to move the moov box, so it
    # cannot run on a Python file object; encode into a private temp dir (never the target
    # storage) and hand back the finished bytes.
    with tempfile.TemporaryDirectory(prefix="farm-media-") as tmp:
        path = Path(tmp) / "video.mp4"
        # use_metadata_tags keeps arbitrary keys (e.g. "provenance"), not just iTunes ones.
        opts = {"movflags": "+faststart+use_metadata_tags"}
        with av.open(str(path), "w", format="mp4", options=opts) as container:
            for key, value in tags.items():
                container.metadata[key] = value
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = arr.shape[2], arr.shape[1], "yuv420p"
            cc = stream.codec_context
            cc.time_base = 1 / rate
            cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709
            cc.color_range = 1  # limited ("tv") range, what players expect
            # mbtree off: x264's macroblock-tree pass read uninitialised lowres memory here, so
            # the same frames encoded to different bytes from run to run. The same request
            # must give the same file; the cost is a few percent of bitrate at the same CRF.
            stream.options = {"crf": str(crf), "preset": preset, "x264-params": "mbtree=0"}
            for i, frame in enumerate(_yuv420_frames(arr)):
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush delayed B-frames
        return path.read_bytes()


def poster_jpeg(frames: Any, index: int | None = None, quality: int = 90) -> bytes:
    """JPEG of one frame (default the middle one) for thumbnails and ad-platform previews."""
    arr = _as_frames(frames)
    i = arr.shape[0] // 2 if index is None else index
    if not -arr.shape[0] <= i < arr.shape[0]:
        raise IndexError(f"poster index {index} out of range for {arr.shape[0]} frames")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr[i])).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_atomic(url: str, data: bytes, *, fs_kwargs: dict[str, Any] | None = None) -> None:
    """Write `data` to `url` so readers see either the old file or the whole new one.

    Transient storage errors are retried with backoff (farm.storage.retry); a write that
    still fails raises StorageUnavailable (an OSError), and no partial file is left.
    """
    fs, path = fsspec.core.url_to_fs(url, **(fs_kwargs or {}))
    retry(lambda: _write_atomic(fs, path, data), f"write {url}")


def _write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & _OBJECT_STORES:
        fs.pipe_file(path, data)  # one PUT is all-or-nothing already; a "rename" would copy
        return
    parent, name = posixpath.split(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f"{name}.tmp-{uuid.uuid4().hex}")
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)  # a rename within one directory: atomic on local filesystems
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters, not the cleanup's
            if fs.exists(tmp):
                fs.rm(tmp)
        raise


def write_video_outputs(
    root_url: str,
    stem: str,
    frames: Any,
    fps: FpsLike,
    provenance: Provenance,
    *,
    crf: int = 20,
    fs_kwargs: dict[str, Any] | None = None,
    watermark: str | None = None,
) -> VideoOutputs:
    """Write `{stem}.mp4`, `{stem}.jpg` and `{stem}.json` under `root_url`, each atomically.

    The sidecar goes last: its presence marks the output complete, and its sha256 pins the
    MP4 it describes. The sidecar's width/height are the encoded (even-padded) size.
    With `watermark` (a video id), every frame carries `farm.output.watermark.payload_for(id)`;
    the encoded file is decoded and checked before anything is written, and the sidecar's
    `watermark` section records the payload, strength, PSNR and whether it verified.
    """
    if not stem or "/" in stem:
        raise ValueError(f"stem must be a non-empty file name without '/'; got {stem!r}")
    arr = _as_frames(frames)
    rate = as_fps(fps)
    tags = provenance.to_metadata()
    mark = None
    if watermark is None:
        mp4 = encode_mp4(arr, rate, crf=crf, metadata=tags)
    else:
        from farm.output import watermark as wm  # the detector decodes with PyAV too; load on use

        payload = wm.payload_for(watermark)
        tags["watermark"] = payload

        def encode(marked: np.ndarray) -> bytes:
            return encode_mp4(marked, rate, crf=crf, metadata=tags)

        arr, mp4, mark = wm.mark_and_encode(arr, payload, encode)
    poster = poster_jpeg(arr)
    digest = sha256_bytes(mp4)
    sidecar = {
        "schema": 1,
        "provenance": provenance.model_dump(mode="json"),
        **({"watermark": mark.as_dict()} if mark is not None else {}),
        "mp4": {"file": f"{stem}.mp4", "sha256": digest, "bytes": len(mp4)},
        "poster": {"file": f"{stem}.jpg", "sha256": sha256_bytes(poster), "bytes": len(poster)},
        "frames": int(arr.shape[0]),
        "fps": f"{rate.numerator}/{rate.denominator}",
        "width": int(arr.shape[2] + arr.shape[2] % 2),
        "height": int(arr.shape[1] + arr.shape[1] % 2),
    }
    side = json.dumps(sidecar, indent=2, ensure_ascii=False).encode()
    urls = {ext: f"{root_url.rstrip('/')}/{stem}.{ext}" for ext in ("mp4", "jpg", "json")}
    write_atomic(urls["mp4"], mp4, fs_kwargs=fs_kwargs)
    write_atomic(urls["jpg"], poster, fs_kwargs=fs_kwargs)
    write_atomic(urls["json"], side, fs_kwargs=fs_kwargs)
    return VideoOutputs(
        mp4_url=urls["mp4"],
        poster_url=urls["jpg"],
        sidecar_url=urls["json"],
        sha256=digest,
        mp4_bytes=len(mp4),
        poster_bytes=len(poster),
        sidecar_bytes=len(side),
        watermark=mark.as_dict() if mark is not None else None,
    )


def _top_level_boxes(data: bytes) -> list[bytes]:
    """Types of the top-level ISO-BMFF boxes, in file order."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if size == 1:  # 64-bit size follows the type
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:  # box runs to end of file
            size = len(data) - pos
        if size < 8:
            break  # corrupt; stop rather than loop forever
        boxes.append(kind)
        pos += size
    return boxes


def probe_mp4(
    data_or_url: bytes | str | Path, *, fs_kwargs: dict[str, Any] | None = None
) -> VideoInfo:
    """Decode an MP4 (bytes, local path or fsspec URL) and report what it really contains."""
    if isinstance(data_or_url, bytes | bytearray | memoryview):
        data = bytes(data_or_url)
    else:
        with fsspec.open(str(data_or_url), "rb", **(fs_kwargs or {})) as f:
            data = f.read()
    boxes = _top_level_boxes(data)
    # faststart: the moov box (sample tables) precedes mdat, so playback starts before download
    faststart = (
        b"moov" in boxes and b"mdat" in boxes and boxes.index(b"moov") < boxes.index(b"mdat")
    )
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        fps = Fraction(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        info = dict(codec=cc.name, pix_fmt=cc.pix_fmt, width=cc.width, height=cc.height)
        tags = dict(container.metadata)
        frames = sum(1 for _ in container.decode(stream))
    return VideoInfo(
        frames=frames, fps=fps, duration=duration, faststart=faststart, metadata=tags, **info
    )
