"""The end card: the last seconds of an ad show the real packshot, never a generated one.

Models redraw a product a little differently in every frame; the close of an ad must show
it exactly. So the card is composited from the product's reference image itself:

- The card takes the last `seconds` of the video, at most half of it (`card_frames`), and
  replaces those frames: the file keeps its length. It opens with a short cross-fade from
  the generated video (`FADE_S`); every frame after the fade is the card exactly.
- Layout inside the format's safe zone (`farm.output.overlay.safe_zone`, the one rule for
  where text and marks may go): the brand's logo at the top (when there is one), the CTA
  pill at the bottom, typeset by the overlay's own text renderer (`render_text_layer`), and
  the packshot contain-fitted (`farm.campaign.images.fit`: scaled, never stretched or
  cropped) into the space between, on the card's background colour.
- The packshot is pasted once, resized and nothing else: inside its box the card's pixels
  are the fitted reference's (a transparent packshot over the background), so a test can
  compare them with the reference after encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from farm.campaign.images import fit, fit_box
from farm.output.overlay import Box, render_text_layer, safe_zone

__all__ = ["FADE_S", "CardLayout", "apply_end_card", "card_frames", "render_card"]

FADE_S = 0.25  # cross-fade from the generated video into the card
LOGO_SHARE = 0.16  # of the safe zone's height, at most
GAP_SHARE = 0.04  # between logo, packshot and CTA, of the safe zone's height


def card_frames(frames: int, fps: float, seconds: float) -> int:
    """Frames the card takes at the end of a `frames`-frame video: `seconds`, at most half."""
    if seconds <= 0 or frames <= 0:
        return 0
    return min(round(seconds * fps), frames // 2)


@dataclass(frozen=True)
class CardLayout:
    """Where the card put things, (x0, y0, x1, y1) in pixels, x1/y1 exclusive."""

    safe_zone: Box
    packshot: Box  # the contain-fitted packshot's own pixels
    logo: Box | None
    cta: Box | None


def _hex_rgb(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _place(box: Box, image: Image.Image) -> Box:
    """The box of `image` contain-fitted and centred in `box`."""
    x0, y0, x1, y1 = box
    w, h, x, y = fit_box(image.width, image.height, x1 - x0, y1 - y0, "contain")
    return (x0 + x, y0 + y, x0 + x + w, y0 + y + h)


def render_card(
    width: int,
    height: int,
    *,
    packshot: Image.Image,
    logo: Image.Image | None = None,
    cta: str = "",
    locale: str = "en",
    aspect: str | None = None,
    background: str = "#ffffff",
) -> tuple[np.ndarray, CardLayout]:
    """One end-card frame, [H, W, 3] uint8, and where its parts are."""
    zone = safe_zone(width, height, aspect)
    sx0, sy0, sx1, sy1 = zone
    gap = math.ceil(GAP_SHARE * (sy1 - sy0))
    card = Image.new("RGBA", (width, height), (*_hex_rgb(background), 255))
    top = sy0
    logo_box = None
    if logo is not None:
        logo_box = _place((sx0, sy0, sx1, sy0 + max(1, round(LOGO_SHARE * (sy1 - sy0)))), logo)
        lw, lh = logo_box[2] - logo_box[0], logo_box[3] - logo_box[1]
        card.alpha_composite(fit(logo, lw, lh, "contain"), dest=logo_box[:2])
        top = logo_box[3] + gap
    bottom = sy1
    text = render_text_layer(width, height, headline="", cta=cta, locale=locale, aspect=aspect)
    if text.cta_box is not None:
        bottom = text.cta_box[1] - gap
    if bottom - top < 2:  # a tiny frame: the packshot wins over the spacing
        top, bottom = sy0, sy1
    shot_box = _place((sx0, top, sx1, bottom), packshot)
    pw, ph = shot_box[2] - shot_box[0], shot_box[3] - shot_box[1]
    card.alpha_composite(fit(packshot, pw, ph, "contain"), dest=shot_box[:2])
    if text.box is not None:
        card.alpha_composite(Image.fromarray(text.rgba, "RGBA"))
    frame = np.asarray(card.convert("RGB"), dtype=np.uint8).copy()
    return frame, CardLayout(zone, shot_box, logo_box, text.cta_box)


def apply_end_card(
    frames: np.ndarray,
    fps: float,
    *,
    seconds: float,
    packshot: Image.Image,
    logo: Image.Image | None = None,
    cta: str = "",
    locale: str = "en",
    aspect: str | None = None,
    background: str = "#ffffff",
) -> np.ndarray:
    """`frames` ([F, H, W, 3] uint8) with the last `card_frames(...)` replaced by the card.

    A new array of the same shape; frames before the card are returned bit-identical.
    """
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3] (got {arr.dtype} {arr.shape})")
    n = card_frames(len(arr), fps, seconds)
    out = arr.copy()
    if n == 0:
        return out
    _, height, width, _ = arr.shape
    card, _ = render_card(
        width,
        height,
        packshot=packshot,
        logo=logo,
        cta=cta,
        locale=locale,
        aspect=aspect,
        background=background,
    )
    start = len(arr) - n
    fade = min(round(FADE_S * fps), n // 2)
    for i in range(n):
        k = start + i
        if i < fade:  # (i + 1) / (fade + 1): never all video, reaching the card after
            w = (i + 1) / (fade + 1)
            mixed = arr[k].astype(np.float32) * (1 - w) + card.astype(np.float32) * w
            out[k] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        else:
            out[k] = card
    return out
