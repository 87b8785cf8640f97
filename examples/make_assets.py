"""Draw the example campaign's packshots and logo with Pillow (no downloads).

    .venv/bin/python examples/make_assets.py      # writes examples/assets/*.png

The files are committed; this script is how they were made, and remakes them byte for byte
(same Pillow, same drawing). `examples/campaign.yaml` references them by paths relative to
itself. Packshots have a transparent background, as a studio cut-out has, so the end card
shows them on its own background colour.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ASSETS = Path(__file__).resolve().parent / "assets"
SCALE = 4  # drawn at 4x and reduced: smooth edges without depending on a renderer's AA


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: the same everywhere


def _reduce(big: Image.Image) -> Image.Image:
    """Down to 1x, cut to the drawing and a small margin (a cut-out, not a canvas)."""
    small = big.resize((big.width // SCALE, big.height // SCALE), Image.Resampling.LANCZOS)
    x0, y0, x1, y1 = small.getchannel("A").getbbox()
    pad = 6
    return small.crop((max(0, x0 - pad), max(0, y0 - pad), x1 + pad, y1 + pad))


def _label(draw: ImageDraw.ImageDraw, centre: tuple[float, float], text: str, size: int, fill):
    draw.text(centre, text, font=_font(size), fill=fill, anchor="mm")


def flask() -> Image.Image:
    """A brushed-steel insulated bottle with a bamboo cap and a navy label."""
    w, h = 384 * SCALE, 512 * SCALE
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = SCALE
    d.ellipse((112 * s, 470 * s, 272 * s, 500 * s), fill=(0, 0, 0, 60))  # shadow
    body = (112 * s, 130 * s, 272 * s, 488 * s)
    d.rounded_rectangle(body, radius=36 * s, fill=(176, 184, 192, 255))
    for i, shade in enumerate((196, 214, 228, 214, 196)):  # brushed highlight
        x = (138 + 8 * i) * s
        d.rectangle((x, 150 * s, x + 8 * s, 470 * s), fill=(shade, shade + 4, shade + 8, 255))
    d.rounded_rectangle((140 * s, 96 * s, 244 * s, 140 * s), radius=10 * s, fill=(150, 158, 166))
    d.rounded_rectangle((132 * s, 40 * s, 252 * s, 104 * s), radius=18 * s, fill=(196, 150, 96))
    for y in range(52, 100, 12):  # bamboo grain
        d.line((140 * s, y * s, 244 * s, y * s), fill=(172, 126, 76), width=2 * s)
    d.rectangle((112 * s, 250 * s, 272 * s, 360 * s), fill=(24, 44, 88, 255))
    _label(d, (192 * s, 292 * s), "NORDKAP", 26 * s, (255, 255, 255))
    _label(d, (192 * s, 328 * s), "500 ml", 18 * s, (230, 200, 120))
    return _reduce(img)


def cup() -> Image.Image:
    """A collapsible silicone camping cup in sea-glass green, with a folded lid."""
    w, h = 384 * SCALE, 512 * SCALE
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = SCALE
    d.ellipse((84 * s, 420 * s, 300 * s, 456 * s), fill=(0, 0, 0, 60))  # shadow
    green = [(126, 196, 176), (110, 182, 162), (96, 168, 150), (84, 154, 138)]
    for i, colour in enumerate(green):  # the collapsible rings, widening upwards
        top, bottom = 200 + 56 * i, 256 + 56 * i
        inset = 12 * i
        d.polygon(
            [
                ((72 + inset) * s, top * s),
                ((312 - inset) * s, top * s),
                ((300 - inset) * s, bottom * s),
                ((84 + inset) * s, bottom * s),
            ],
            fill=(*colour, 255),
        )
    d.ellipse((72 * s, 180 * s, 312 * s, 220 * s), fill=(70, 140, 124, 255))  # rim
    d.ellipse((84 * s, 186 * s, 300 * s, 214 * s), fill=(40, 96, 86, 255))  # inside
    d.rounded_rectangle(
        (300 * s, 236 * s, 340 * s, 330 * s), radius=16 * s, outline=(96, 168, 150), width=10 * s
    )
    d.rectangle((108 * s, 300 * s, 276 * s, 350 * s), fill=(250, 248, 240, 255))
    _label(d, (192 * s, 325 * s), "NORDKAP", 24 * s, (24, 44, 88))
    return _reduce(img)


def logo() -> Image.Image:
    """The brand mark: a navy peak over a lake line, and the name."""
    w, h = 512 * SCALE, 160 * SCALE
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = SCALE
    d.polygon([(16 * s, 132 * s), (76 * s, 28 * s), (136 * s, 132 * s)], fill=(24, 44, 88))
    d.polygon([(60 * s, 56 * s), (76 * s, 28 * s), (92 * s, 56 * s)], fill=(255, 255, 255))
    d.rectangle((16 * s, 138 * s, 136 * s, 146 * s), fill=(70, 150, 200))
    d.text((156 * s, 80 * s), "NORDKAP", font=_font(72 * s), fill=(24, 44, 88), anchor="lm")
    return _reduce(img)


def main() -> int:
    ASSETS.mkdir(exist_ok=True)
    for name, draw in (("flask-500.png", flask), ("trail-cup.png", cup), ("logo.png", logo)):
        path = ASSETS / name
        draw().save(path, optimize=True)
        print(f"{path.relative_to(ASSETS.parent.parent)}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
