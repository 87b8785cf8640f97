"""Probes that need no sampling: does the DiT read direction words, does the text encoder
tell colours apart?

At t = 1 the DiT's input is pure noise, so the flow-matching optimum of its velocity is
`noise - E[x0 | caption]`: the clip it predicts, `noise - v`, is the average clip the
caption describes. For "moves to the left" that average starts on the right and ends on
the left. A model that has learned the axis of a motion but not its direction predicts an
even mix of both directions: the product on both sides in the first and in the last frame.
`direction_bias` measures which of the two the model predicts, per language and motion,
and the same measure on the average of real clips of each caption (through the model's
VAE) is what a model that had learned the data would predict.

The shipped `small` model scores 0.39, as real clips do. Its two predecessors scored
0.21 and 0.03 in the same training minutes; the 0.03 one made most of its motion errors in
`model.training.eval` the opposite way (`model/weights/small/TRAINING.md`).

`caption_probe` asks the same of the text side alone: whether pooled caption embeddings
separate colours and motions in every language. It found why the text encoder without a
byte convolution (`text_conv = 0`) drew es and fr colours 30 points worse than en: its es
and fr colour captions separated far worse than en, zh and ja, both after alignment and
in the trained model.

    python -m model.training.probes --model small
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from torch import Tensor

import model
from model.training.data import HELD_OUT, LANGUAGES, caption, render_clip, sample_clip
from model.video import VideoModel

MOVES = ("left", "right", "up", "down")
_AXIS = {"left": -1, "right": -1, "up": -2, "down": -2}  # latent axis (W or H) of the motion
_SIGN = {"left": -1.0, "right": 1.0, "up": -1.0, "down": 1.0}  # towards higher index = +


def clip_shift(x0: Tensor, motion: str) -> Tensor:
    """Signed shift [B] of the product from first to last frame along the motion's axis.

    `x0` [B, C, T, H, W] are latents whose first three channels are colours (as the
    block-average VAE's are). The product is where a frame differs from its own mean; its
    balance is (mass in the far half - mass in the near half) / mass along the axis, and
    the shift is half the change of balance from the first to the last frame, signed so
    that the caption's direction is positive. 0: no preferred direction; 1: all mass
    moves from one half to the other in the caption's direction.
    """
    if motion not in _AXIS:
        raise ValueError(f"motion must be one of {MOVES}, got {motion!r}")
    rgb = x0[:, :3].float()
    mass = (rgb - rgb.mean(dim=(-2, -1), keepdim=True)).abs().sum(1)  # (B, T, H, W)
    profile = mass.sum(dim=-1 if _AXIS[motion] == -2 else -2)  # (B, T, n) along the axis
    half = profile.shape[-1] // 2
    near, far = profile[..., :half].sum(-1), profile[..., -half:].sum(-1)  # (B, T)
    balance = (far - near) / (far + near).clamp_min(1e-8)
    return _SIGN[motion] * (balance[:, -1] - balance[:, 0]) / 2


@torch.no_grad()
def direction_bias(
    m: VideoModel,
    *,
    frames: int = 17,
    size: int = 64,
    draws: int = 8,
    languages: tuple[str, ...] = LANGUAGES,
    seed: int = 0,
) -> dict:
    """`clip_shift` of the predicted clip at t = 1 for the held-out moving triples.

    Returns {"model": mean score, "by_lang": {lang: score}, "by_motion": {motion: score},
    "data": the same score of the mean of `draws` real clips of each triple (different
    sizes, backgrounds and pans) through the model's VAE, i.e. of what the model would
    predict had it learned the data}. Each caption's prediction is averaged over `draws`
    noise draws before it is scored.
    """
    shape = m.latent_shape(frames, size, size)
    noise = torch.cat([model.noise((1, *shape), seed * 1000 + k) for k in range(draws)])
    noise = noise.to(m.device, m.dtype)
    t = torch.ones(draws, device=m.device, dtype=m.dtype)
    rows: list[tuple[str, str, float]] = []  # (language, motion, score)
    data: list[float] = []
    for i, (product, colour, motion) in enumerate(HELD_OUT):
        if motion not in MOVES:
            continue
        rng = np.random.default_rng([seed, 11, i])
        clips = [sample_clip(rng, product=product, colour=colour, motion=motion)
                 for _ in range(draws)]  # fmt: skip
        video = np.stack([render_clip(c, frames, size, size) for c in clips])
        real = m.encode(torch.from_numpy(video)).mean(0, keepdim=True)
        data.append(float(clip_shift(real, motion)[0]))
        for lang in languages:
            cond = m.encode_text([caption(clips[0], lang, rng)] * draws)
            x0 = (noise - m.velocity(noise, t, cond)).mean(0, keepdim=True)
            rows.append((lang, motion, float(clip_shift(x0, motion)[0])))

    def mean(lang: str | None = None, motion: str | None = None) -> float:
        return float(
            np.mean([s for lg, mo, s in rows if lang in (None, lg) and motion in (None, mo)])
        )

    return {
        "model": mean(),
        "by_lang": {lang: mean(lang=lang) for lang in languages},
        "by_motion": {motion: mean(motion=motion) for motion in MOVES},
        "data": float(np.mean(data)),
    }


@torch.no_grad()
def caption_probe(
    m: VideoModel,
    *,
    train_clips: int = 900,
    test_clips: int = 300,
    attributes: tuple[str, ...] = ("colour", "motion"),
    seed: int = 1,
) -> dict:
    """How well the text encoder alone tells captions apart, per attribute and language.

    The pooled caption embedding (what the DiT's adaLN path reads) of captions of held-out
    clips is classified by its nearest class centroid (cosine), the centroids being the
    mean embeddings of captions of `train_clips` training clips. Returns
    {attribute: {"own": {lang: accuracy with that language's centroids}, "from_en":
    {lang: accuracy with English centroids}}}: "own" is whether a language's captions
    separate the attribute at all, "from_en" whether they land where English ones do. No
    video is generated, so it isolates the text side (seconds for `small`).
    """
    rng = np.random.default_rng(seed)
    train = [sample_clip(rng) for _ in range(train_clips)]
    test = [sample_clip(rng, split="held_out") for _ in range(test_clips)]
    train_caps = [c.captions(rng) for c in train]
    test_caps = [c.captions(rng) for c in test]

    def embed(captions: list[str]) -> np.ndarray:
        pooled = m.encode_text(captions).pooled().float()
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()

    fit = {lang: embed([c[lang] for c in train_caps]) for lang in LANGUAGES}
    held = {lang: embed([c[lang] for c in test_caps]) for lang in LANGUAGES}
    out: dict = {}
    for attr in attributes:
        y_fit = np.array([getattr(c, attr) for c in train])
        y_held = np.array([getattr(c, attr) for c in test])
        out[attr] = {
            "own": {lang: _accuracy(held[lang], y_held, fit[lang], y_fit) for lang in LANGUAGES},
            "from_en": {
                lang: _accuracy(held[lang], y_held, fit["en"], y_fit) for lang in LANGUAGES
            },
        }
    return out


def _accuracy(x: np.ndarray, y: np.ndarray, fit_x: np.ndarray, y_fit: np.ndarray) -> float:
    """Share of rows of `x` whose nearest class centroid (dot) of `fit_x` has label `y`."""
    labels = np.unique(y_fit)
    centroids = np.stack([fit_x[y_fit == k].mean(0) for k in labels])
    return float((labels[(x @ centroids.T).argmax(1)] == y).mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="small", help="preset name or checkpoint directory")
    parser.add_argument("--draws", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    m = model.load(args.model).eval()
    result = {"direction": direction_bias(m, draws=args.draws), "captions": caption_probe(m)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
