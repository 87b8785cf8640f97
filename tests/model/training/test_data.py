"""The procedural product films: deterministic, captioned in six languages, held-out clean."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.training.data import (
    CAPTION_TABLES,
    COLOURS,
    HELD_OUT,
    LANGUAGES,
    MOTIONS,
    PRODUCTS,
    Clip,
    ClipStream,
    is_held_out,
    render_clip,
    sample_clip,
)


def test_same_seed_same_clips_and_captions():
    a, b = ClipStream(seed=5), ClipStream(seed=5)
    for i in (0, 1, 17):
        x, y = a.item(i), b.item(i)
        assert np.array_equal(x["video"], y["video"])
        assert x["clip"] == y["clip"] and x["captions"] == y["captions"]
    other = ClipStream(seed=6).item(0)
    assert not np.array_equal(a.item(0)["video"], other["video"])


def test_stream_is_endless_and_matches_items():
    stream = ClipStream(seed=2, frames=5, height=32, width=48, start=10)
    items = list(itertools.islice(iter(stream), 3))
    assert [it["index"] for it in items] == [10, 11, 12]
    assert np.array_equal(items[1]["video"], stream.item(11)["video"])
    assert items[0]["video"].shape == (5, 32, 48, 3) and items[0]["video"].dtype == np.uint8


def _mentions(text: str, options) -> bool:
    """True if text holds one of the options (gendered forms and {placeholders} allowed)."""
    if isinstance(options, str):
        options = [options]
    flat = []
    for o in options:
        flat.extend(o if isinstance(o, tuple) else [o])
    return any(o.split("{")[0].strip().lower() in text.lower() for o in flat)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_captions_describe_the_clip(lang):
    table = CAPTION_TABLES[lang]
    rng = np.random.default_rng(0)
    for i in range(60):
        clip = ClipStream(seed=1).item(i)["clip"] if i < 4 else sample_clip(rng)
        text = clip.captions(np.random.default_rng(i))[lang]
        colour = clip.colour if lang == "en" else table["colour"][clip.colour]
        product = clip.product if lang == "en" else table["product"][clip.product]
        assert _mentions(text, colour), (lang, clip.colour, text)
        assert _mentions(text, product), (lang, clip.product, text)
        motions = table["motion"][clip.motion] + [table.get("short", {}).get(clip.motion, "@")]
        assert _mentions(text, motions), (lang, clip.motion, text)
        assert _mentions(text, table["bg"][clip.background]), (lang, clip.background, text)
        if clip.pan:
            assert _mentions(text, table["pan"][clip.pan]), (lang, clip.pan, text)


def test_captions_vary_and_languages_differ():
    clip = sample_clip(np.random.default_rng(3))
    texts = {clip.captions(np.random.default_rng(i))["en"] for i in range(30)}
    assert len(texts) >= 3  # several templates and phrasings
    caps = clip.captions(np.random.default_rng(0))
    assert sorted(caps) == sorted(LANGUAGES) and len(set(caps.values())) == len(LANGUAGES)


def test_held_out_triples_never_in_training_stream():
    assert len(HELD_OUT) == 48
    assert {m for _, _, m in HELD_OUT} == set(MOTIONS)
    assert {p for p, _, _ in HELD_OUT} == set(PRODUCTS)
    assert {c for _, c, _ in HELD_OUT} == set(COLOURS)
    rng = np.random.default_rng(0)
    seen = {(c.product, c.colour, c.motion) for c in (sample_clip(rng) for _ in range(5000))}
    assert not seen & set(HELD_OUT)
    assert len(seen) > 300  # the rest of the 384 training triples do appear
    for i in range(20):
        clip = ClipStream(seed=0).item(i)["clip"]
        assert not is_held_out(clip.product, clip.colour, clip.motion)
    held = [sample_clip(rng, split="held_out") for _ in range(50)]
    assert all(is_held_out(c.product, c.colour, c.motion) for c in held)


def test_render_draws_the_product_where_the_motion_puts_it():
    still = Clip("bottle", "red", "still", "light_grey", False, "")
    video = render_clip(still, frames=5, height=64, width=64)
    assert np.array_equal(video[0], video[-1])  # no pan, no motion: a still picture
    centre = video[0, 28:36, 28:36].reshape(-1, 3).mean(axis=0)
    assert centre[0] > 150 and centre[1] < 80  # red in the middle
    left = render_clip(Clip("box", "blue", "left", "beige", True, "left"), frames=9)
    blue = left[..., 2].astype(int) - left[..., 0]
    xs = [np.nonzero(blue[f].max(axis=0) > 100)[0].mean() for f in (0, 8)]
    assert xs[1] < xs[0] - 15  # moved left by a good part of the frame


def test_contrast_between_product_and_background():
    rng = np.random.default_rng(1)
    for _ in range(300):
        c = sample_clip(rng)
        d = np.linalg.norm(np.array(COLOURS[c.colour]) - np.array(_bg(c.background)))
        assert d >= 0.45


def _bg(name):
    from model.training.data import BACKGROUNDS

    return BACKGROUNDS[name]
