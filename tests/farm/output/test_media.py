"""Tests for farm.output.media: MP4 encoding, probing, provenance tags and atomic writes."""

from __future__ import annotations

import io
import json
import posixpath
import tempfile
import warnings
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import av
import fsspec
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from farm import storage
from farm.output import media
from farm.output.media import (
    Provenance,
    as_fps,
    encode_mp4,
    poster_jpeg,
    probe_mp4,
    sha256_bytes,
    write_atomic,
    write_video_outputs,
)

SHA = "ab" * 32


def same_content(a: Provenance, b: Provenance) -> bool:
    """Equal but for created_at, which the MP4 leaves out (same request → same bytes)."""
    return a.model_dump(exclude={"created_at"}) == b.model_dump(exclude={"created_at"})


def clip(frames: int = 25, height: int = 64, width: int = 96) -> np.ndarray:
    """A smooth gradient with a red square moving left to right."""
    y = np.linspace(0, 200, height)[:, None]
    x = np.linspace(0, 200, width)[None, :]
    base = np.stack(
        [
            np.broadcast_to(y, (height, width)),
            np.broadcast_to(x, (height, width)),
            np.full((height, width), 90.0),
        ],
        axis=-1,
    ).astype(np.uint8)
    out = np.repeat(base[None], frames, axis=0)
    side = max(4, min(height, width) // 4)
    for i in range(frames):
        left = (i * 3) % max(1, width - side)
        out[i, 4 : 4 + side, left : left + side] = (230, 30, 30)
    return out


def provenance(**overrides) -> Provenance:
    fields = dict(
        model="wan-tiny",
        weights_sha256=SHA,
        seed=7,
        prompt="A café in 東京 at dusk",
        campaign_id="camp-1",
        variant_id="ja-JP",
        software_version="0.1.0",
    )
    return Provenance(**(fields | overrides))


def top_level_boxes(data: bytes) -> list[str]:
    """Independent ISO-BMFF walk, so the faststart check does not trust farm.media."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        boxes.append(data[pos + 4 : pos + 8].decode("ascii"))
        assert size >= 8
        pos += size
    return boxes


def first_frame(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def no_tmp_files(fs: fsspec.AbstractFileSystem, root: str) -> bool:
    return not [p for p in fs.find(root) if ".tmp-" in p]


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(24, Fraction(24)), ("30000/1001", Fraction(30000, 1001)), (29.97, Fraction(30000, 1001))],
)
def test_round_trip(fps, expected):
    frames = clip()
    info = probe_mp4(encode_mp4(frames, fps))
    assert (info.frames, info.fps, info.width, info.height) == (25, expected, 96, 64)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert info.duration == pytest.approx(float(25 / expected), abs=1e-3)


def test_decoded_frame_close_to_input_and_torch_accepted():
    torch = pytest.importorskip("torch")
    frames = clip(frames=3)
    data = encode_mp4(torch.from_numpy(frames), 24, crf=18)
    assert np.abs(first_frame(data).astype(int) - frames[0]).mean() < 8


@pytest.mark.parametrize(
    ("fps", "expected"),
    [
        (25, Fraction(25)),
        (25.0, Fraction(25)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        ("29.97", Fraction(30000, 1001)),
        (12.5, Fraction(25, 2)),
        (Fraction(2997, 100), Fraction(2997, 100)),
        (" 24000/1001 ", Fraction(24000, 1001)),
    ],
)
def test_as_fps(fps, expected):
    assert as_fps(fps) == expected


@pytest.mark.parametrize("fps", [0, -24, "abc", "1/0", True, None])
def test_as_fps_rejects(fps):
    with pytest.raises(ValueError, match="fps"):
        as_fps(fps)


def test_odd_size_is_edge_padded_to_even():
    frames = clip(frames=5, height=35, width=63)
    data = encode_mp4(frames, 24, crf=10)
    info = probe_mp4(data)
    assert (info.width, info.height, info.frames) == (64, 36, 5)
    out = first_frame(data).astype(int)
    assert np.abs(out[:35, :63] - frames[0]).mean() < 8
    # The padding copies the last real column/row, so it matches them, not black.
    assert np.abs(out[:35, 63] - frames[0, :, 62]).mean() < 8
    assert np.abs(out[35, :63] - frames[0, 34]).mean() < 8


def test_faststart_puts_moov_before_mdat():
    data = encode_mp4(clip(frames=5), 24)
    boxes = top_level_boxes(data)
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")
    assert probe_mp4(data).faststart


def test_probe_detects_missing_faststart():
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:  # plain muxer: mdat, then moov
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for rgb in clip(frames=2, height=32, width=32):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    info = probe_mp4(buf.getvalue())
    assert not info.faststart and info.frames == 2


def test_provenance_and_custom_tags_round_trip_through_mp4():
    prov = provenance(negative_prompt="blurry", extra={"locale": "ja-JP"})
    tags = prov.to_metadata() | {"x-farm-job": "job-42"}
    info = probe_mp4(encode_mp4(clip(frames=2), 24, metadata=tags))
    assert same_content(Provenance.from_metadata(info.metadata), prov)
    assert info.metadata["comment"] == tags["comment"] and "seed=7" in tags["comment"]
    assert info.metadata["x-farm-job"] == "job-42"


def test_provenance_fields_and_time():
    assert all(f.description for f in Provenance.model_fields.values())
    tokyo = timezone(timedelta(hours=9))
    prov = provenance(created_at=datetime(2025, 1, 2, 9, 0, tzinfo=tokyo))
    assert prov.created_at == datetime(2025, 1, 2, 0, 0, tzinfo=UTC)
    assert prov.model_dump(mode="json")["created_at"] == "2025-01-02T00:00:00Z"
    assert provenance().created_at.tzinfo is not None
    with pytest.raises(ValidationError):
        provenance(created_at=datetime(2025, 1, 2))  # naive: ambiguous
    with pytest.raises(ValidationError):
        provenance(weights_sha256="not-a-hash")


@pytest.mark.parametrize(
    ("frames", "rule"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((2, 8, 8, 4), np.uint8), "3 \\(RGB\\) channels"),
        (np.zeros((8, 8, 3), np.uint8), "4-D"),
        (np.zeros((0, 8, 8, 3), np.uint8), "at least one frame"),
    ],
)
def test_bad_frames_rejected(frames, rule):
    with pytest.raises(ValueError, match=rule):
        encode_mp4(frames, 24)
    with pytest.raises(ValueError, match=rule):
        poster_jpeg(frames)


def test_bad_encode_options_rejected():
    with pytest.raises(ValueError, match="crf"):
        encode_mp4(clip(frames=1), 24, crf=60)
    with pytest.raises(ValueError, match="metadata"):
        encode_mp4(clip(frames=1), 24, metadata={"seed": 7})


def test_encode_leaves_no_temp_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    encode_mp4(clip(frames=2), 24)
    assert list(tmp_path.iterdir()) == []


def test_poster_defaults_to_middle_frame():
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    frames = np.array([np.full((16, 24, 3), c, np.uint8) for c in colours])
    for index, colour in [(None, colours[1]), (0, colours[0]), (-1, colours[2])]:
        img = Image.open(io.BytesIO(poster_jpeg(frames, index)))
        assert img.format == "JPEG" and img.size == (24, 16)
        assert np.abs(np.asarray(img).astype(int) - colour).mean() < 6
    with pytest.raises(IndexError):
        poster_jpeg(frames, 3)


@pytest.fixture
def root(storage_url):
    """Where the test writes: local disk and memory:// (tests/conftest.py)."""
    return storage_url


def cat(url: str, fs_kwargs=None) -> bytes:
    with fsspec.open(url, "rb", **(fs_kwargs or {})) as f:
        return f.read()


def check_outputs(root_url: str, prov: Provenance, fs_kwargs=None) -> None:
    frames = clip(frames=6, height=35, width=63)
    out = write_video_outputs(root_url, "ad", frames, 29.97, prov, fs_kwargs=fs_kwargs)
    mp4, poster = cat(out.mp4_url, fs_kwargs), cat(out.poster_url, fs_kwargs)
    side = json.loads(cat(out.sidecar_url, fs_kwargs))
    assert out.mp4_url == f"{root_url}/ad.mp4" and out.sidecar_url == f"{root_url}/ad.json"
    assert side["mp4"]["sha256"] == out.sha256 == sha256_bytes(mp4)
    assert (out.mp4_bytes, out.poster_bytes) == (len(mp4), len(poster))
    assert (side["frames"], side["fps"], side["width"], side["height"]) == (6, "30000/1001", 64, 36)
    assert Provenance.model_validate(side["provenance"]) == prov
    img = Image.open(io.BytesIO(poster))
    assert img.format == "JPEG" and img.size == (63, 35)
    info = probe_mp4(out.mp4_url, fs_kwargs=fs_kwargs)
    assert info.frames == 6 and same_content(Provenance.from_metadata(info.metadata), prov)
    fs, root_path = fsspec.core.url_to_fs(root_url, **(fs_kwargs or {}))
    assert sorted(posixpath.basename(p) for p in fs.find(root_path)) == [
        "ad.jpg",
        "ad.json",
        "ad.mp4",
    ]


def test_write_video_outputs(root):
    check_outputs(root, provenance())


def test_sidecar_written_last_and_absent_if_an_earlier_write_fails(tmp_path, monkeypatch):
    written, real = [], media.write_atomic
    monkeypatch.setattr(
        media, "write_atomic", lambda url, data, **kw: (written.append(url), real(url, data, **kw))
    )
    write_video_outputs(str(tmp_path / "a"), "ad", clip(frames=2), 24, provenance())
    assert [Path(u).suffix for u in written] == [".mp4", ".jpg", ".json"]

    def fail_on_poster(url, data, **kw):
        if url.endswith(".jpg"):
            raise OSError("disk full")
        real(url, data, **kw)

    monkeypatch.setattr(media, "write_atomic", fail_on_poster)
    with pytest.raises(OSError, match="disk full"):
        write_video_outputs(str(tmp_path / "b"), "ad", clip(frames=2), 24, provenance())
    assert not (tmp_path / "b" / "ad.json").exists()


def test_write_atomic_local_creates_dirs_and_replaces(tmp_path):
    target = tmp_path / "x" / "y" / "f.bin"
    write_atomic(str(target), b"one")
    write_atomic(f"file://{target}", b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_write_atomic_failed_data_leaves_nothing(root):
    url = f"{root}/f.bin"
    with pytest.raises(TypeError):
        write_atomic(url, object())  # type: ignore[arg-type]
    fs, path = fsspec.core.url_to_fs(url)
    assert not fs.exists(path)
    assert not fs.exists(root) or fs.ls(fsspec.core.url_to_fs(root)[1]) == []


def test_write_atomic_failed_rename_keeps_old_file(root, monkeypatch):
    url = f"{root}/f.bin"
    write_atomic(url, b"old")
    fs, path = fsspec.core.url_to_fs(url)

    def broken_mv(*args, **kwargs):
        raise OSError("rename failed")

    monkeypatch.setattr(type(fs), "mv", broken_mv)
    monkeypatch.setattr(storage, "RETRY_WINDOW_S", 0.0)  # give up after the minimum tries
    with pytest.raises(OSError, match="rename failed"):
        write_atomic(url, b"new")
    assert fs.cat_file(path) == b"old"
    assert no_tmp_files(fs, fsspec.core.url_to_fs(root)[1])


@pytest.fixture(scope="module")
def s3_kwargs():
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    ).create_bucket(Bucket="renders")
    yield {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    server.stop()


def test_write_video_outputs_s3(s3_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old s3fs versions warn on import
        check_outputs("s3://renders/camp-1", provenance(), fs_kwargs=s3_kwargs)
