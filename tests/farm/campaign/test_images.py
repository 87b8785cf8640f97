"""Tests for farm.campaign.images: which product images a spec or feed may name, and how they fit.

Bad images are refused where the spec or feed is loaded, naming the field: a truncated PNG,
a 30000x30000 PNG (its header only: nothing that size is ever allocated), a text file named
.png, a URL that does not resolve. Good PNG, JPEG and WebP files pass, and fitting never
stretches.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import fsspec
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from farm.campaign.expand import expand, expand_feed
from farm.campaign.feed import load_feed
from farm.campaign.images import (
    MAX_PIXELS,
    ImageAccess,
    check_reference,
    decode_image,
    fit,
    fit_box,
    open_image,
)
from farm.campaign.spec import SpecError, load_spec
from tests.helpers.paths import EXAMPLES

EXAMPLE = yaml.safe_load((EXAMPLES / "campaign.yaml").read_text(encoding="utf-8"))


def image_bytes(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    image = Image.new(mode, size, (200, 40, 40) if mode == "RGB" else (200, 40, 40, 128))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says `width` x `height`, with one tiny data chunk: a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


BAD_FILES = {
    "truncated.png": (image_bytes("PNG", (64, 64))[:-40], "does not decode as PNG"),
    "bomb.png": (png_header_only(30000, 30000), f"at most {MAX_PIXELS:,} pixels"),
    "text.png": (b"this is not an image\n", "is not an image"),
    "anim.gif": (image_bytes("GIF"), "is a GIF image; use PNG, JPEG or WebP"),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name, (data, _) in BAD_FILES.items():
        (tmp_path / name).write_bytes(data)
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")):
        (tmp_path / f"good.{ext}").write_bytes(image_bytes(fmt))
    return tmp_path


def spec_with(image: str, **extra: Any) -> dict[str, Any]:
    data = {**EXAMPLE, **extra}
    data["products"] = [{**EXAMPLE["products"][0], "reference_image": image}]
    return data


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_image_is_a_spec_error_naming_the_field(folder: Path, name: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_with(name), images=ImageAccess(base=str(folder)))
    (path, message), *_ = info.value.errors
    assert path == "products[0].reference_image"
    assert BAD_FILES[name][1] in message and name in message, message


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("missing.png", "does not exist"),
        ("file:///nowhere/missing.png", "does not exist"),
        ("memory://nowhere/missing.png", "does not exist"),
        ("nosuchproto://x/y.png", "cannot be read"),
        (".", "is not a file"),
        ("/dev/stdin", "is not a file"),
    ],
)
def test_a_reference_that_does_not_resolve_names_the_field(
    folder: Path, ref: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_with(ref), images=ImageAccess(base=str(folder)))
    assert info.value.errors[0][0] == "products[0].reference_image"
    assert message in info.value.errors[0][1]


@pytest.mark.parametrize("side", [30000, 8000])  # past Pillow's own limit, and only past ours
def test_the_bomb_is_refused_from_its_header_without_decoding(monkeypatch, side: int) -> None:
    def no_decoding(self: Image.Image) -> None:
        raise AssertionError(f"decoded a {side}x{side} image")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ValueError, match=f"at most {MAX_PIXELS:,} pixels"):
        decode_image(png_header_only(side, side))


@pytest.mark.parametrize("ext", ["png", "jpg", "webp"])
def test_good_png_jpeg_and_webp_pass_and_resolve_against_the_spec(folder: Path, ext: str) -> None:
    spec = load_spec(spec_with(f"good.{ext}"), images=ImageAccess(base=str(folder)))
    assert spec.products[0].reference_image == str(folder / f"good.{ext}")
    assert open_image(spec.products[0].reference_image).size == (40, 30)


def test_fsspec_urls_and_transparency(folder: Path) -> None:
    with fsspec.open("memory://shots/cut-out.png", "wb") as f:
        f.write(image_bytes("PNG", (20, 10), "RGBA"))
    url = check_reference("memory://shots/cut-out.png")
    assert url == "memory://shots/cut-out.png"
    assert open_image(url).mode == "RGBA"  # a cut-out keeps its transparency
    relative = ImageAccess(base="memory://shots/campaigns")
    assert check_reference("../cut-out.png", relative) == "memory://shots/cut-out.png"


def test_without_a_directory_a_relative_path_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_with("good.png"))  # a spec sent as text has no directory
    assert "relative path" in info.value.errors[0][1]


def test_a_served_farm_reads_no_image_a_spec_names(folder: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_with(str(folder / "good.png")), model="small")
    assert info.value.errors[0][0] == "products[0].reference_image"
    assert "not on storage this farm reads images from" in info.value.errors[0][1]
    allowed = ImageAccess(allowed=(str(folder / "shots"),))
    (folder / "shots").mkdir()
    (folder / "shots" / "good.png").write_bytes((folder / "good.png").read_bytes())
    (folder / "shots" / "link.png").symlink_to(folder / "good.png")
    spec = load_spec(spec_with(str(folder / "shots/good.png")), model="small", images=allowed)
    assert spec.products[0].reference_image == str(folder / "shots/good.png")
    for escape in ("shots/../good.png", "shots/link.png"):  # out of the allowed folder
        with pytest.raises(SpecError, match="not on storage this farm reads images from"):
            load_spec(spec_with(str(folder / escape)), model="small", images=allowed)


def test_brand_logo_and_end_card_in_the_spec(folder: Path) -> None:
    access = ImageAccess(base=str(folder))
    data = spec_with("good.png", brand={"name": "Nordkap", "logo": "good.webp"})
    spec = load_spec(data, images=access)
    assert (spec.brand_name, spec.logo) == ("Nordkap", str(folder / "good.webp"))
    rows = expand(spec).to_pylist()
    assert {(r["logo"], r["end_card_s"], r["end_card_background"]) for r in rows} == {
        (str(folder / "good.webp"), 1.5, "#ffffff")
    }
    bad = spec_with("good.png", brand={"name": "Nordkap", "logo": "text.png"})
    with pytest.raises(SpecError) as info:
        load_spec(bad, images=access)
    assert info.value.errors[0][0] == "brand.logo"
    # A brand without a logo is its name: the same spec, the same campaign.
    named = load_spec(spec_with("good.png", brand={"name": "Nordkap"}), images=access)
    assert named == load_spec(spec_with("good.png", brand="Nordkap"), images=access)


def test_the_end_card_is_off_without_an_image(folder: Path) -> None:
    data = {**EXAMPLE, "end_card": {"seconds": 2, "background": "#102030"}}
    data["products"] = [
        {**EXAMPLE["products"][0], "reference_image": "good.png"},
        EXAMPLE["products"][1],
    ]
    table = expand(load_spec(data, images=ImageAccess(base=str(folder))))
    by_product = {
        r["product_id"]: (r["reference_image"], r["end_card_s"], r["end_card_background"])
        for r in table.to_pylist()
    }
    assert by_product == {
        "flask-500": (str(folder / "good.png"), 2.0, "#102030"),
        "trail-cup": (None, 0.0, None),
    }
    plain = load_spec(EXAMPLE)  # no image anywhere: the ids every variant always had
    assert (
        expand(plain)["variant_id"].to_pylist()
        == expand(load_spec(EXAMPLE))["variant_id"].to_pylist()
    )
    assert set(expand(plain)["end_card_s"].to_pylist()) == {0.0}


FEED_HEADER = "product_id,product_name,locale,headline,cta,prompt,format,width,height,duration_s"


def feed_csv(*images: str) -> bytes:
    rows = [FEED_HEADER + ",reference_image"]
    for i, image in enumerate(images):
        rows.append(f"p{i},Cup,en-US,Hi,Buy,A cup on a table,square,144,144,1.5,{image}")
    return "\n".join(rows).encode()


def test_the_feed_checks_each_rows_image_naming_row_and_column(folder: Path) -> None:
    access = ImageAccess(base=str(folder))
    with pytest.raises(SpecError) as info:
        load_feed(feed_csv("good.png", "truncated.png", "", "missing.png"), "csv", images=access)
    assert [path for path, _ in info.value.errors] == [
        "feed row 2, column reference_image",
        "feed row 4, column reference_image",
    ]
    table = load_feed(feed_csv("good.png", "", "good.jpg"), "csv", images=access)
    assert table["reference_image"].to_pylist() == [
        str(folder / "good.png"),
        None,
        str(folder / "good.jpg"),
    ]
    variants = expand_feed(table)
    assert variants["end_card_s"].to_pylist() == [1.5, 0.0, 1.5]
    assert variants["reference_image"].to_pylist() == table["reference_image"].to_pylist()


def test_a_feed_names_one_image_many_times_and_it_is_read_once(folder: Path, monkeypatch) -> None:
    import farm.campaign.images as images

    reads = []
    real = images._read
    monkeypatch.setattr(images, "_read", lambda url, opts: reads.append(url) or real(url, opts))
    load_feed(feed_csv(*["good.png"] * 50), "csv", images=ImageAccess(base=str(folder)))
    assert reads == [str(folder / "good.png")]


# --- fit: contain or cover, never stretched ----------------------------------------------

sides = st.integers(1, 600)


@settings(max_examples=300, deadline=None)
@given(sides, sides, sides, sides, st.sampled_from(["contain", "cover"]))
def test_fit_keeps_the_aspect_and_contain_fits_inside(
    w: int, h: int, bw: int, bh: int, mode
) -> None:
    sw, sh, x, y = fit_box(w, h, bw, bh, mode)
    # One scale for both sides: each side is the image's times it, rounded to a pixel.
    scale = (min if mode == "contain" else max)(bw / w, bh / h)
    assert abs(sw - max(1.0, w * scale)) < 1 and abs(sh - max(1.0, h * scale)) < 1
    if mode == "contain":
        assert sw <= bw and sh <= bh and (sw == bw or sh == bh)  # inside, touching two sides
        assert x >= 0 and y >= 0
    else:
        assert sw >= bw and sh >= bh and (sw == bw or sh == bh)  # covers, cut on one axis
        assert x <= 0 and y <= 0


def test_fit_contain_letterboxes_and_cover_crops_the_centre() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 50, 100))  # a blue left quarter
    contained = fit(image, 100, 100, "contain")
    assert contained.size == (100, 100) and contained.mode == "RGBA"
    assert contained.getpixel((50, 10))[3] == 0  # the bar above is transparent
    assert contained.getpixel((10, 50))[:3] == (0, 0, 255)  # nothing cut: the blue is there
    covered = fit(image, 100, 100, "cover")
    assert covered.size == (100, 100)
    assert covered.getpixel((50, 50)) == (255, 0, 0)  # the centre kept
    assert covered.getpixel((0, 50))[2] < 200  # the blue edge cut off
    with pytest.raises(ValueError, match="contain' or 'cover"):
        fit(image, 10, 10, "stretch")
