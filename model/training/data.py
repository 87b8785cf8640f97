"""Procedural "product films": the training data of the shipped model, made from a seed.

Each clip shows one product (bottle, box, phone, shoe, cup, bag), drawn as soft-edged
shapes with simple shading, in one of nine colours, doing one of eight motions (left,
right, up, down, zoom in, zoom out, rotate, still) over a solid or gradient background,
sometimes with a slow camera pan (the faint background pattern slides). Every clip comes
with captions of the same content in six languages (`caption`, below).

Everything is deterministic: clip `i` of a stream with seed `s` is drawn from
`numpy.random.default_rng([s, i])`, so any clip can be rebuilt from `(seed, index)`.
Training never sees the held-out (product, colour, motion) triples of `HELD_OUT`; the
evaluation (`model/training/eval.py`) prompts for exactly those.

Coordinates: y runs from -1 (top) to 1 (bottom), x from -W/H to W/H (left to right), so a
product keeps its shape at any aspect ratio. Shapes live in object coordinates (u, v) of
unit height, mapped to the frame by the product's centre, scale and angle at each frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "HELD_OUT",
    "LANGUAGES",
    "MOTIONS",
    "PRODUCTS",
    "Clip",
    "ClipStream",
    "is_held_out",
    "render_clip",
    "sample_clip",
]

PRODUCTS = ("bottle", "box", "phone", "shoe", "cup", "bag")
MOTIONS = ("left", "right", "up", "down", "zoom_in", "zoom_out", "rotate", "still")
# Well separated hues plus white and black, so a colour survives a blurry decoder.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (0.96, 0.50, 0.05),
    "yellow": (0.95, 0.86, 0.10),
    "green": (0.10, 0.68, 0.20),
    "blue": (0.10, 0.30, 0.90),
    "purple": (0.56, 0.16, 0.76),
    "pink": (0.98, 0.50, 0.74),
    "white": (0.97, 0.97, 0.97),
    "black": (0.07, 0.07, 0.07),
}
# Desaturated backgrounds, so the product is the only saturated thing in the frame.
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "light_grey": (0.78, 0.78, 0.78),
    "dark_grey": (0.30, 0.30, 0.30),
    "beige": (0.85, 0.78, 0.64),
    "slate": (0.42, 0.48, 0.56),
    "cream": (0.95, 0.92, 0.82),
    "charcoal": (0.14, 0.14, 0.15),
}
MIN_CONTRAST = 0.45  # RGB distance between product and background colours

# Motion amplitudes over one clip (also what the motion analyser expects to see).
TRAVEL = 0.9  # centre moves this far (in units of half the frame height)
ZOOM = (0.7, 1.35)  # scale at the start and end of a zoom in
ROTATE_DEG = 70.0


def is_held_out(product: str, colour: str, motion: str) -> bool:
    """True for the (product, colour, motion) triples that training never sees.

    One colour per (product, motion) pair: 48 of the 432 triples, every product and
    motion held out equally often and every colour 5 or 6 times.
    """
    p, c, m = PRODUCTS.index(product), list(COLOURS).index(colour), MOTIONS.index(motion)
    return (p + 2 * c + 3 * m) % len(COLOURS) == 0


HELD_OUT: tuple[tuple[str, str, str], ...] = tuple(
    (p, c, m) for p in PRODUCTS for m in MOTIONS for c in COLOURS if is_held_out(p, c, m)
)


def _contrasts(colour: str, background: str) -> bool:
    a, b = np.array(COLOURS[colour]), np.array(BACKGROUNDS[background])
    return float(np.linalg.norm(a - b)) >= MIN_CONTRAST


@dataclass(frozen=True)
class Clip:
    """Everything that decides one clip: the captioned attributes and the nuisance ones."""

    product: str
    colour: str
    motion: str
    background: str
    gradient: bool  # gradient (True) or solid (False) background
    pan: str  # "" (no pan), "left" or "right": the way the camera pans
    # Nuisance parameters, not in the captions.
    x0: float = 0.0  # centre offset (for motions that do not move the centre)
    y0: float = 0.0
    size: float = 0.9  # product height relative to half the frame height
    spin: float = 1.0  # rotation sense (+1 / -1)
    grad_angle: float = 0.0  # direction of the gradient (radians)
    jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)  # colour jitter
    pattern_phase: float = 0.0

    def attributes(self) -> dict[str, str | bool]:
        """The captioned attributes (what a prompt says about the clip)."""
        return {k: v for k, v in asdict(self).items() if k in CAPTIONED}

    def captions(self, rng: np.random.Generator) -> dict[str, str]:
        """A caption of this clip in every language (templates drawn from `rng`)."""
        return {lang: caption(self, lang, rng) for lang in LANGUAGES}


CAPTIONED = ("product", "colour", "motion", "background", "gradient", "pan")


def sample_clip(
    rng: np.random.Generator,
    *,
    split: str = "train",
    product: str | None = None,
    colour: str | None = None,
    motion: str | None = None,
) -> Clip:
    """Draw a clip's attributes: `train` avoids `HELD_OUT`, `held_out` draws from it only.

    Fixed `product`/`colour`/`motion` arguments pin those attributes (the split is then
    not enforced, so callers can ask for any triple).
    """
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    pinned = product is not None and colour is not None and motion is not None
    while True:
        if split == "held_out" and not pinned:
            p, c, m = HELD_OUT[rng.integers(len(HELD_OUT))]
        else:
            p = product or PRODUCTS[rng.integers(len(PRODUCTS))]
            c = colour or list(COLOURS)[rng.integers(len(COLOURS))]
            m = motion or MOTIONS[rng.integers(len(MOTIONS))]
        if split == "train" and not pinned and is_held_out(p, c, m):
            continue
        backgrounds = [b for b in BACKGROUNDS if _contrasts(c, b)]
        bg = backgrounds[rng.integers(len(backgrounds))]
        break
    moving = m in ("left", "right", "up", "down")
    return Clip(
        product=p,
        colour=c,
        motion=m,
        background=bg,
        gradient=bool(rng.random() < 0.5),
        pan=("", "", "left", "right")[rng.integers(4)],
        x0=0.0 if moving else float(rng.uniform(-0.25, 0.25)),
        y0=0.0 if moving else float(rng.uniform(-0.15, 0.15)),
        size=float(rng.uniform(0.75, 0.95)),
        spin=float(rng.choice([-1.0, 1.0])),
        grad_angle=float(rng.uniform(0, 2 * np.pi)),
        jitter=tuple(float(j) for j in rng.uniform(-0.04, 0.04, 3)),
        pattern_phase=float(rng.uniform(0, 2 * np.pi)),
    )


# --- drawing -----------------------------------------------------------------------------


def _box(u, v, cu, cv, hu, hv, r=0.0):
    """Signed distance to a rounded box centred at (cu, cv) with half sizes (hu, hv)."""
    qu, qv = np.abs(u - cu) - (hu - r), np.abs(v - cv) - (hv - r)
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0) - r


def _ellipse(u, v, cu, cv, ru, rv):
    """Approximate signed distance to an ellipse (exact for a circle)."""
    k = np.hypot((u - cu) / ru, (v - cv) / rv)
    return (k - 1) * min(ru, rv)


def _ring(u, v, cu, cv, radius, width):
    return np.abs(np.hypot(u - cu, v - cv) - radius) - width


def _shape(product: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signed distance of the silhouette, detail darkening in [0, 1]) in object coords."""
    detail = np.zeros_like(u)
    if product == "bottle":
        d = np.minimum(_box(u, v, 0, 0.12, 0.19, 0.34, 0.08), _box(u, v, 0, -0.3, 0.07, 0.14))
        d = np.minimum(d, _box(u, v, 0, -0.44, 0.09, 0.05, 0.02))
        detail = (_box(u, v, 0, 0.12, 0.19, 0.1) < 0) * 0.35  # label band
    elif product == "box":
        d = _box(u, v, 0, 0.02, 0.4, 0.3, 0.03)
        detail = (_box(u, v, 0, -0.2, 0.4, 0.06) < 0) * 0.35  # lid
    elif product == "phone":
        d = _box(u, v, 0, 0, 0.21, 0.43, 0.07)
        detail = (_box(u, v, 0, -0.02, 0.16, 0.34, 0.02) < 0) * 0.45  # screen
    elif product == "shoe":
        d = np.minimum(
            _box(u, v, 0.0, 0.2, 0.46, 0.09, 0.08), _ellipse(u, v, -0.14, 0.02, 0.3, 0.22)
        )
        d = np.minimum(d, _box(u, v, 0.18, 0.1, 0.22, 0.12, 0.1))
        detail = (_box(u, v, 0.0, 0.24, 0.46, 0.04) < 0) * 0.45  # sole
    elif product == "cup":
        d = np.minimum(
            _box(u, v, -0.08, 0.04, 0.26, 0.3, 0.06), _ring(u, v, 0.2, 0.02, 0.14, 0.045)
        )
        detail = (_box(u, v, -0.08, -0.22, 0.26, 0.04) < 0) * 0.3  # rim
    elif product == "bag":
        handle = np.maximum(_ring(u, v, 0, -0.12, 0.2, 0.04), v + 0.1)  # upper half only
        d = np.minimum(_box(u, v, 0, 0.14, 0.38, 0.26, 0.05), handle)
        detail = (_box(u, v, 0, 0.0, 0.38, 0.03) < 0) * 0.3  # flap seam
    else:
        raise ValueError(f"unknown product {product!r}; known: {PRODUCTS}")
    return d, detail


def trajectory(clip: Clip, frames: int) -> tuple[np.ndarray, ...]:
    """Per-frame (cx, cy, scale, angle) of the product: the ground truth of its motion."""
    s = np.linspace(0.0, 1.0, frames)
    cx = np.full(frames, clip.x0)
    cy = np.full(frames, clip.y0)
    scale = np.full(frames, clip.size)
    angle = np.zeros(frames)
    half = TRAVEL / 2
    if clip.motion == "left":
        cx = half - TRAVEL * s
    elif clip.motion == "right":
        cx = -half + TRAVEL * s
    elif clip.motion == "up":
        cy = half - TRAVEL * s
    elif clip.motion == "down":
        cy = -half + TRAVEL * s
    elif clip.motion in ("zoom_in", "zoom_out"):
        lo, hi = ZOOM
        ramp = s if clip.motion == "zoom_in" else 1 - s
        scale = clip.size * lo * (hi / lo) ** ramp  # geometric: constant zoom speed
    elif clip.motion == "rotate":
        angle = clip.spin * np.deg2rad(ROTATE_DEG) * s
    return cx, cy, scale, angle


def render_clip(clip: Clip, frames: int = 17, height: int = 64, width: int = 64) -> np.ndarray:
    """The clip's pixels: uint8 [frames, height, width, 3]."""
    aspect = width / height
    ys = (np.arange(height) + 0.5) / height * 2 - 1
    xs = ((np.arange(width) + 0.5) / width * 2 - 1) * aspect
    X, Y = np.meshgrid(xs, ys)  # (H, W)
    s = np.linspace(0.0, 1.0, frames)[:, None, None]  # (F, 1, 1)

    # Background: colour, optional gradient, a faint diagonal pattern that slides on a pan.
    base = np.array(BACKGROUNDS[clip.background])
    if clip.gradient:
        g = np.cos(clip.grad_angle) * X + np.sin(clip.grad_angle) * Y  # (H, W)
        g = g / (np.abs(g).max() + 1e-6)
        bg = base[None, None] * (1 + 0.22 * g[..., None])  # (H, W, 3)
    else:
        bg = np.broadcast_to(base, (height, width, 3))
    # A camera panning left sees the scene slide right.
    shift = {"": 0.0, "left": 0.6, "right": -0.6}[clip.pan] * s  # (F, 1, 1)
    pattern = np.sin(7.0 * (X[None] - shift + 0.5 * Y[None]) + clip.pattern_phase)  # (F, H, W)
    video = bg[None] + 0.035 * pattern[..., None]  # (F, H, W, 3)

    # Product: map every pixel into object coordinates at every frame.
    cx, cy, scale, angle = (a[:, None, None] for a in trajectory(clip, frames))  # (F, 1, 1)
    ca, sa = np.cos(angle), np.sin(angle)
    dx, dy = (X[None] - cx) / scale, (Y[None] - cy) / scale  # (F, H, W)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    d, detail = _shape(clip.product, u, v)
    pixel = 2.0 / height / scale  # one pixel in object units, for anti-aliased edges
    alpha = np.clip(0.5 - d / pixel, 0.0, 1.0)[..., None]  # (F, H, W, 1)
    colour = np.clip(np.array(COLOURS[clip.colour]) + np.array(clip.jitter), 0, 1)
    shade = 1.0 - 0.28 * (u + v) - 0.25 * detail  # light from the top left
    if clip.colour == "black":
        shade = 1.0 - 0.6 * (u + v) + 1.5 * detail  # black needs additive light to show form
    product = np.clip(colour * shade[..., None], 0, 1)
    video = video * (1 - alpha) + product * alpha
    return (np.clip(video, 0, 1) * 255 + 0.5).astype(np.uint8)


# --- captions ----------------------------------------------------------------------------

LANGUAGES = ("en", "zh", "es", "ja", "ar", "fr")

# Per language: product words (with grammatical gender where adjectives agree), colour
# words, motion phrases, background names, phrases for solid/gradient backgrounds and pans.
_EN = {
    "product": {p: p for p in PRODUCTS},
    "colour": {c: c for c in COLOURS},
    "motion": {
        "left": ["moves to the left", "slides left"],
        "right": ["moves to the right", "slides right"],
        "up": ["rises up", "moves upward"],
        "down": ["moves down", "sinks downward"],
        "zoom_in": ["grows as the camera zooms in", "comes closer, zoom in"],
        "zoom_out": ["shrinks as the camera zooms out", "moves away, zoom out"],
        "rotate": ["rotates slowly", "spins in place"],
        "still": ["stands still", "stays perfectly still"],
    },
    "short": {
        "left": "moving left",
        "right": "moving right",
        "up": "moving up",
        "down": "moving down",
        "zoom_in": "zooming in",
        "zoom_out": "zooming out",
        "rotate": "rotating slowly",
        "still": "completely still",
    },
    "bg": {
        "light_grey": "light grey",
        "dark_grey": "dark grey",
        "beige": "beige",
        "slate": "slate grey",
        "cream": "cream",
        "charcoal": "charcoal",
    },
    "solid": ["on a {b} background", "against a plain {b} backdrop"],
    "gradient": ["on a {b} gradient background", "against a soft {b} gradient"],
    "pan": {
        "left": ["the camera pans left", "slow pan to the left"],
        "right": ["the camera pans right", "slow pan to the right"],
    },
}

_ZH = {
    "product": {
        "bottle": "瓶子",
        "box": "盒子",
        "phone": "手机",
        "shoe": "鞋子",
        "cup": "杯子",
        "bag": "包",
    },
    "measure": {"bottle": "个", "box": "个", "phone": "部", "shoe": "只", "cup": "个", "bag": "个"},
    "colour": {
        "red": "红色",
        "orange": "橙色",
        "yellow": "黄色",
        "green": "绿色",
        "blue": "蓝色",
        "purple": "紫色",
        "pink": "粉色",
        "white": "白色",
        "black": "黑色",
    },
    "motion": {
        "left": ["向左移动", "往左滑动"],
        "right": ["向右移动", "往右滑动"],
        "up": ["向上移动", "慢慢升起"],
        "down": ["向下移动", "慢慢落下"],
        "zoom_in": ["越来越大，镜头推近", "逐渐放大"],
        "zoom_out": ["越来越小，镜头拉远", "逐渐缩小"],
        "rotate": ["缓缓旋转", "在原地转动"],
        "still": ["静止不动", "一直保持不动"],
    },
    "bg": {
        "light_grey": "浅灰色",
        "dark_grey": "深灰色",
        "beige": "米色",
        "slate": "石板灰色",
        "cream": "奶油色",
        "charcoal": "炭黑色",
    },
    "solid": ["{b}背景", "纯{b}背景"],
    "gradient": ["{b}渐变背景", "{b}的渐变底色"],
    "pan": {
        "left": ["镜头缓缓向左平移", "镜头向左摇"],
        "right": ["镜头缓缓向右平移", "镜头向右摇"],
    },
}

_JA = {
    "product": {
        "bottle": "ボトル",
        "box": "箱",
        "phone": "スマートフォン",
        "shoe": "靴",
        "cup": "カップ",
        "bag": "バッグ",
    },
    "colour": {
        "red": "赤い",
        "orange": "オレンジ色の",
        "yellow": "黄色い",
        "green": "緑の",
        "blue": "青い",
        "purple": "紫の",
        "pink": "ピンクの",
        "white": "白い",
        "black": "黒い",
    },
    "motion": {
        "left": ["が左へ動く", "が左にスライドする"],
        "right": ["が右へ動く", "が右にスライドする"],
        "up": ["が上へ動く", "がゆっくり上がっていく"],
        "down": ["が下へ動く", "がゆっくり下がっていく"],
        "zoom_in": ["がズームインで大きくなる", "にカメラがズームインする"],
        "zoom_out": ["がズームアウトで小さくなる", "からカメラがズームアウトする"],
        "rotate": ["がゆっくり回転する", "がその場でくるりと回る"],
        "still": ["が静止している", "が止まったまま動かない"],
    },
    "bg": {
        "light_grey": "明るいグレー",
        "dark_grey": "ダークグレー",
        "beige": "ベージュ",
        "slate": "スレートグレー",
        "cream": "クリーム色",
        "charcoal": "チャコール",
    },
    "solid": ["{b}の背景", "無地の{b}の背景"],
    "gradient": ["{b}のグラデーション背景", "{b}のグラデーション"],
    "pan": {
        "left": ["カメラはゆっくり左へパンする", "カメラが左にパン"],
        "right": ["カメラはゆっくり右へパンする", "カメラが右にパン"],
    },
}

_ES = {
    "product": {
        "bottle": ("botella", "f"),
        "box": ("caja", "f"),
        "phone": ("teléfono", "m"),
        "shoe": ("zapato", "m"),
        "cup": ("taza", "f"),
        "bag": ("bolso", "m"),
    },
    "colour": {
        "red": ("rojo", "roja"),
        "orange": ("naranja", "naranja"),
        "yellow": ("amarillo", "amarilla"),
        "green": ("verde", "verde"),
        "blue": ("azul", "azul"),
        "purple": ("morado", "morada"),
        "pink": ("rosa", "rosa"),
        "white": ("blanco", "blanca"),
        "black": ("negro", "negra"),
    },
    "motion": {
        "left": ["se mueve hacia la izquierda", "se desliza a la izquierda"],
        "right": ["se mueve hacia la derecha", "se desliza a la derecha"],
        "up": ["sube lentamente", "se mueve hacia arriba"],
        "down": ["baja lentamente", "se mueve hacia abajo"],
        "zoom_in": ["crece con un zoom de acercamiento", "se acerca a la cámara con zoom"],
        "zoom_out": ["se aleja con un zoom hacia atrás", "se hace cada vez más pequeñ{o}"],
        "rotate": ["gira lentamente", "da vueltas sobre sí mism{o}"],
        "still": ["permanece inmóvil", "se queda quiet{o}"],
    },
    "bg": {
        "light_grey": "gris claro",
        "dark_grey": "gris oscuro",
        "beige": "beige",
        "slate": "gris pizarra",
        "cream": "crema",
        "charcoal": "carbón",
    },
    "solid": ["sobre un fondo {b}", "con fondo liso {b}"],
    "gradient": ["sobre un fondo degradado {b}", "con un degradado {b} de fondo"],
    "pan": {
        "left": ["la cámara hace un paneo a la izquierda", "con un paneo lento a la izquierda"],
        "right": ["la cámara hace un paneo a la derecha", "con un paneo lento a la derecha"],
    },
}

_FR = {
    "product": {
        "bottle": ("bouteille", "f"),
        "box": ("boîte", "f"),
        "phone": ("téléphone", "m"),
        "shoe": ("chaussure", "f"),
        "cup": ("tasse", "f"),
        "bag": ("sac", "m"),
    },
    "colour": {
        "red": ("rouge", "rouge"),
        "orange": ("orange", "orange"),
        "yellow": ("jaune", "jaune"),
        "green": ("vert", "verte"),
        "blue": ("bleu", "bleue"),
        "purple": ("violet", "violette"),
        "pink": ("rose", "rose"),
        "white": ("blanc", "blanche"),
        "black": ("noir", "noire"),
    },
    "motion": {
        "left": ["se déplace vers la gauche", "glisse vers la gauche"],
        "right": ["se déplace vers la droite", "glisse vers la droite"],
        "up": ["monte lentement", "se déplace vers le haut"],
        "down": ["descend lentement", "se déplace vers le bas"],
        "zoom_in": ["grossit avec un zoom avant", "se rapproche en zoom avant"],
        "zoom_out": ["rapetisse avec un zoom arrière", "s'éloigne en zoom arrière"],
        "rotate": ["tourne lentement sur {lui}-même", "pivote sur place"],
        "still": ["reste immobile", "ne bouge pas"],
    },
    "bg": {
        "light_grey": "gris clair",
        "dark_grey": "gris foncé",
        "beige": "beige",
        "slate": "gris ardoise",
        "cream": "crème",
        "charcoal": "anthracite",
    },
    "solid": ["sur un fond {b}", "sur fond uni {b}"],
    "gradient": ["sur un fond dégradé {b}", "devant un dégradé {b}"],
    "pan": {
        "left": ["la caméra fait un panoramique vers la gauche", "lent panoramique à gauche"],
        "right": ["la caméra fait un panoramique vers la droite", "lent panoramique à droite"],
    },
}

_AR = {
    "product": {
        "bottle": ("زجاجة", "f"),
        "box": ("علبة", "f"),
        "phone": ("هاتف", "m"),
        "shoe": ("حذاء", "m"),
        "cup": ("كوب", "m"),
        "bag": ("حقيبة", "f"),
    },
    "colour": {
        "red": ("أحمر", "حمراء"),
        "orange": ("برتقالي", "برتقالية"),
        "yellow": ("أصفر", "صفراء"),
        "green": ("أخضر", "خضراء"),
        "blue": ("أزرق", "زرقاء"),
        "purple": ("بنفسجي", "بنفسجية"),
        "pink": ("وردي", "وردية"),
        "white": ("أبيض", "بيضاء"),
        "black": ("أسود", "سوداء"),
    },
    "motion": {  # (masculine, feminine) verb forms
        "left": [
            ("يتحرك إلى اليسار", "تتحرك إلى اليسار"),
            ("ينزلق نحو اليسار", "تنزلق نحو اليسار"),
        ],
        "right": [
            ("يتحرك إلى اليمين", "تتحرك إلى اليمين"),
            ("ينزلق نحو اليمين", "تنزلق نحو اليمين"),
        ],
        "up": [("يرتفع إلى الأعلى", "ترتفع إلى الأعلى"), ("يصعد ببطء", "تصعد ببطء")],
        "down": [("ينخفض إلى الأسفل", "تنخفض إلى الأسفل"), ("يهبط ببطء", "تهبط ببطء")],
        "zoom_in": [
            ("يكبر مع تقريب الكاميرا", "تكبر مع تقريب الكاميرا"),
            ("يقترب من الكاميرا", "تقترب من الكاميرا"),
        ],
        "zoom_out": [
            ("يصغر مع إبعاد الكاميرا", "تصغر مع إبعاد الكاميرا"),
            ("يبتعد عن الكاميرا", "تبتعد عن الكاميرا"),
        ],
        "rotate": [("يدور ببطء", "تدور ببطء"), ("يدور حول نفسه", "تدور حول نفسها")],
        "still": [("يبقى ثابتا", "تبقى ثابتة"), ("لا يتحرك", "لا تتحرك")],
    },
    "bg": {
        "light_grey": "رمادية فاتحة",
        "dark_grey": "رمادية داكنة",
        "beige": "بيج",
        "slate": "رمادية أردوازية",
        "cream": "كريمية",
        "charcoal": "فحمية",
    },
    "solid": ["على خلفية {b}", "أمام خلفية {b} سادة"],
    "gradient": ["على خلفية متدرجة {b}", "على خلفية {b} متدرجة"],
    "pan": {
        "left": ["والكاميرا تتحرك ببطء نحو اليسار", "مع حركة كاميرا نحو اليسار"],
        "right": ["والكاميرا تتحرك ببطء نحو اليمين", "مع حركة كاميرا نحو اليمين"],
    },
}


def caption(clip: Clip, lang: str, rng: np.random.Generator) -> str:
    """A caption of `clip` in `lang`, as a person would write it (template drawn from rng)."""

    def pick(options):
        return options[rng.integers(len(options))]

    if lang not in CAPTION_TABLES:
        raise ValueError(f"unknown language {lang!r}; known: {LANGUAGES}")
    t = CAPTION_TABLES[lang]
    bg = pick(t["gradient" if clip.gradient else "solid"]).format(b=t["bg"][clip.background])
    pan = pick(t["pan"][clip.pan]) if clip.pan else ""
    template = rng.integers(3)
    motion = pick(t["motion"][clip.motion])
    if lang == "en":
        c, p = clip.colour, clip.product
        body = [
            f"A {c} {p} {motion} {bg}",
            f"{c.capitalize()} {p} {motion}, {bg}",
            f"Product video: {c} {p}, {t['short'][clip.motion]}, {bg}",
        ][template]
        return body + (f", {pan}." if pan else ".")
    if lang == "zh":
        c, p, m = t["colour"][clip.colour], t["product"][clip.product], t["measure"][clip.product]
        body = [
            f"一{m}{c}的{p}{motion}，{bg}",
            f"{bg}上，{c}{p}{motion}",
            f"产品视频：{c}{p}{motion}，{bg}",
        ][template]
        return body + (f"，{pan}。" if pan else "。")
    if lang == "ja":
        c, p = t["colour"][clip.colour], t["product"][clip.product]
        body = [
            f"{bg}で、{c}{p}{motion}",
            f"商品動画：{c}{p}{motion}（{bg}）",
            f"{c}{p}{motion}。{bg}",
        ][template]
        return body + (f"。{pan}。" if pan else "。")
    word, gender = t["product"][clip.product]
    c = t["colour"][clip.colour][gender == "f"]
    if lang == "ar":
        motion = motion[gender == "f"]
        body = [
            f"{word} {c} {motion} {bg}",
            f"فيديو منتج: {word} {c} {motion} {bg}",
            f"{bg}، {word} {c} {motion}",
        ][template]
        return body + (f" {pan}." if pan else ".")
    if lang == "es":
        motion = motion.format(o="a" if gender == "f" else "o")
        un = "una" if gender == "f" else "un"
        body = [
            f"{un.capitalize()} {word} {c} {motion} {bg}",
            f"Vídeo de producto: {un} {word} {c} que {motion}, {bg}",
            f"{bg[0].upper()}{bg[1:]}, {un} {word} {c} {motion}",
        ][template]
        return body + (f", {pan}." if pan else ".")
    # fr
    motion = motion.format(lui="elle" if gender == "f" else "lui")
    un = "une" if gender == "f" else "un"
    body = [
        f"{un.capitalize()} {word} {c} {motion} {bg}",
        f"Vidéo produit : {un} {word} {c} qui {motion}, {bg}",
        f"{bg[0].upper()}{bg[1:]}, {un} {word} {c} {motion}",
    ][template]
    return body + (f", {pan}." if pan else ".")


# The words and phrasings of each caption language.
CAPTION_TABLES = {"en": _EN, "zh": _ZH, "es": _ES, "ja": _JA, "ar": _AR, "fr": _FR}


# --- the stream --------------------------------------------------------------------------


class ClipStream(torch.utils.data.IterableDataset):
    """Endless deterministic stream of (video, clip, captions) items from one seed.

    Item i is drawn from `default_rng([seed, i])`; with DataLoader workers, worker k of n
    takes items k, k+n, k+2n, ... so the stream is the same whatever the worker count.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        frames: int = 17,
        height: int = 64,
        width: int = 64,
        split: str = "train",
        start: int = 0,
    ):
        super().__init__()
        self.seed, self.frames, self.height, self.width = seed, frames, height, width
        self.split, self.start = split, start

    def item(self, index: int) -> dict:
        """Item `index`: {"video": uint8 [F, H, W, 3], "clip": Clip, "captions": {lang: str}}."""
        rng = np.random.default_rng([self.seed, index])
        clip = sample_clip(rng, split=self.split)
        video = render_clip(clip, self.frames, self.height, self.width)
        return {"index": index, "video": video, "clip": clip, "captions": clip.captions(rng)}

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        step, offset = (info.num_workers, info.id) if info is not None else (1, 0)
        index = self.start + offset
        while True:
            yield self.item(index)
            index += step

    def batch(self, start: int, size: int) -> tuple[np.ndarray, list[Clip]]:
        """Items start..start+size-1 as one uint8 array [size, F, H, W, 3] and their clips."""
        items = [self.item(i) for i in range(start, start + size)]
        return np.stack([it["video"] for it in items]), [it["clip"] for it in items]
