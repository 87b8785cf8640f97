"""Product images and logos: where they come from, what is accepted, how they fit a frame.

The one owner of image rules, for the spec (`products[].reference_image`, `brand.logo`),
the feed (`reference_image` column) and the render path (the end card, first frames):

1. A reference is an fsspec URL (`s3://b/x.png`, `file:///...`, `memory://...`) or a path
   relative to the spec's directory (`ImageAccess.base`). Without a base (a spec sent as
   text), a relative path is an error, never resolved against the current directory.
2. `ImageAccess.allowed` lists the URL prefixes images may come from (None: anywhere
   readable; `..` and symlinks are resolved before the check). A served farm reads none
   unless it names its image storage (`load_spec(..., model=...)`), so a spec never makes
   it read a path of the sender's choosing. Only regular files are read.
3. An image is accepted when it exists, is at most `MAX_BYTES`, its format is PNG, JPEG or
   WebP (checked by Pillow's own identification, not the file name, and other formats are
   refused even where Pillow reads them), its pixel count read from the header is at most
   `MAX_PIXELS` (checked before anything is decoded: no decompression bomb), and it then
   decodes completely (a truncated file is refused).
4. Every refusal is a `ValueError` whose message states the rule; the spec and feed loaders
   put it under the field's path (`products[0].reference_image: ...`).
5. `fit` places an image in a box by a stated rule, never stretched: `contain` scales to fit
   inside and letterboxes (the end card's packshot: nothing is cut off), `cover` scales to
   fill and centre-crops (any first-frame use: no bars in the video).
"""

from __future__ import annotations

import io
import os
import posixpath
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image, ImageOps

__all__ = [
    "FORMATS",
    "MAX_BYTES",
    "MAX_PIXELS",
    "FitMode",
    "ImageAccess",
    "check_image",
    "check_reference",
    "decode_image",
    "fit",
    "fit_box",
    "open_image",
    "resolve",
]

MAX_PIXELS = 40_000_000  # 40 MP: any camera's packshot; decoded RGBA that is 160 MB at most
MAX_BYTES = 50 << 20  # read no more than this from storage
FORMATS = ("PNG", "JPEG", "WEBP")  # Pillow's format names
FitMode = Literal["contain", "cover"]


@dataclass(frozen=True)
class ImageAccess:
    """Where a spec's images may be read from (see the module docstring, 1-2)."""

    base: str | None = None  # the spec's directory (a path or URL); None: only absolute URLs
    allowed: tuple[str, ...] | None = None  # URL prefixes images may come from; None: any
    storage_options: dict[str, Any] | None = None  # fsspec options for remote storage

    @classmethod
    def none(cls) -> ImageAccess:
        """Access that reads no image at all (a served farm with no image storage)."""
        return cls(allowed=())


def _is_url(ref: str) -> bool:
    scheme, sep, _ = ref.partition("://")
    return bool(sep) and scheme.replace("+", "").replace(".", "").replace("-", "").isalnum()


def _normal(url: str) -> str:
    """`url` without `.`/`..` segments (local paths also without symlinks), so a prefix
    check sees where it really points."""
    if _is_url(url):
        scheme, _, rest = url.partition("://")
        if scheme == "file":
            return f"file://{os.path.realpath(rest)}"
        return f"{scheme}://{posixpath.normpath(rest)}"
    return os.path.realpath(url)


def resolve(ref: str, access: ImageAccess) -> str:
    """The absolute URL or path of `ref`: URLs as given, relative paths under `access.base`."""
    if not ref.strip():
        raise ValueError("must not be empty")
    if _is_url(ref) or ref.startswith("/"):
        return ref
    if access.base is None:
        raise ValueError(
            f"{ref!r} is a relative path, and this spec has no directory to resolve it "
            "against (load the spec from a file, or give a URL like s3://...)"
        )
    base = access.base.rstrip("/")
    if _is_url(base):
        scheme, _, rest = base.partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, ref))}"
    return posixpath.normpath(posixpath.join(base, ref))


def _allowed(url: str, access: ImageAccess) -> None:
    if access.allowed is None:
        return
    real = _normal(url)
    if not any(real.startswith(_normal(p).rstrip("/") + "/") for p in access.allowed):
        where = ", ".join(access.allowed) or "nowhere (this farm reads no images from specs)"
        raise ValueError(f"{url!r} is not on storage this farm reads images from: {where}")


def _read(url: str, storage_options: dict[str, Any] | None) -> bytes:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        if not fs.isfile(path):  # a directory, a device (/dev/stdin would block), nothing
            what = "is not a file" if fs.exists(path) else "does not exist"
            raise ValueError(f"{url!r} {what}")
        with fs.open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except ValueError as e:
        if str(e).startswith(repr(url)):
            raise
        raise ValueError(f"{url!r} cannot be read: {str(e)[:200]}") from None
    except FileNotFoundError:
        raise ValueError(f"{url!r} does not exist") from None
    except Exception as e:  # unknown protocol, no credentials, network: the user's to fix
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ValueError(f"{url!r} cannot be read: {reason}") from None
    if len(data) > MAX_BYTES:
        raise ValueError(f"{url!r} is larger than {MAX_BYTES >> 20} MiB")
    return data


def check_image(data: bytes) -> Image.Image:
    """The opened (header read, nothing decoded) image of `data`; ValueError if refused (3)."""
    try:
        with warnings.catch_warnings():  # our pixel limit decides, below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's own hard limit, far above ours
        raise ValueError(f"has too many pixels; at most {MAX_PIXELS:,} pixels in all") from None
    except Exception:
        raise ValueError("is not an image (PNG, JPEG or WebP)") from None
    if image.format not in FORMATS:
        raise ValueError(f"is a {image.format} image; use PNG, JPEG or WebP")
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise ValueError(f"is {width}x{height} pixels; at most {MAX_PIXELS:,} pixels in all")
    return image


def decode_image(data: bytes) -> Image.Image:
    """`data` checked (3) and fully decoded: RGB, or RGBA where it has transparency.

    EXIF orientation is applied, so a phone photo stands as it was taken.
    """
    image = check_image(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
    except Exception as e:  # truncated or corrupt data
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ValueError(f"does not decode as {image.format} ({reason})") from None
    alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    return image.convert("RGBA" if alpha else "RGB")


def open_image(ref: str, access: ImageAccess | None = None) -> Image.Image:
    """The checked, decoded image at `ref` (resolved by `access`); ValueError naming it."""
    access = access or ImageAccess()
    url = resolve(ref, access)
    _allowed(url, access)
    data = _read(url, access.storage_options)
    try:
        return decode_image(data)
    except ValueError as e:
        raise ValueError(f"{url!r} {e}") from None


def check_reference(ref: str, access: ImageAccess | None = None) -> str:
    """The resolved URL of an acceptable image at `ref`; ValueError stating the rule."""
    access = access or ImageAccess()
    open_image(ref, access)
    return resolve(ref, access)


def fit_box(
    width: int, height: int, box_w: int, box_h: int, mode: FitMode
) -> tuple[int, int, int, int]:
    """(scaled width, scaled height, x, y) of a `width` x `height` image placed in a box by
    `mode`: one scale for both sides, the image centred; x, y negative when `cover` crops."""
    if mode not in ("contain", "cover"):
        raise ValueError(f"fit mode must be 'contain' or 'cover' (got {mode!r})")
    pick = min if mode == "contain" else max
    scale = pick(box_w / width, box_h / height)
    w = max(1, round(width * scale))
    h = max(1, round(height * scale))
    if mode == "contain":  # rounding never pushes a side past the box
        w, h = min(w, box_w), min(h, box_h)
    else:
        w, h = max(w, box_w), max(h, box_h)
    return w, h, (box_w - w) // 2, (box_h - h) // 2


def fit(
    image: Image.Image,
    width: int,
    height: int,
    mode: FitMode,
    background: tuple[int, ...] = (0, 0, 0, 0),
) -> Image.Image:
    """`image` fitted into `width` x `height` by `mode` (5), never stretched.

    `contain`: the whole image, scaled, centred on `background` (RGBA; transparent by
    default, so a caller composites it where it likes). `cover`: the box filled, the
    overflow cut equally from both sides. Same mode as `image` for cover; RGBA for contain.
    """
    w, h, x, y = fit_box(image.width, image.height, width, height, mode)
    scaled = image if (w, h) == image.size else image.resize((w, h), Image.Resampling.LANCZOS)
    if mode == "cover":
        return scaled.crop((-x, -y, -x + width, -y + height))
    canvas = Image.new("RGBA", (width, height), tuple(background))
    canvas.alpha_composite(scaled.convert("RGBA"), dest=(x, y))
    return canvas
