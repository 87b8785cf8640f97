"""The byte-level text encoder reads every script and handles edge cases clearly."""

import warnings

import pytest
import torch

import model
from model.config import ModelConfig
from model.text import BOS, PAD, TextCond, tokenize

PROMPTS = {
    "en": "A red bottle turns slowly",
    "zh": "一个红色的瓶子慢慢旋转",
    "ja": "赤いボトルがゆっくり回る",
    "ko": "빨간 병이 천천히 돈다",
    "ar": "زجاجة حمراء تدور ببطء",
    "he": "בקבוק אדום מסתובב לאט",
    "th": "ขวดสีแดงหมุนช้าๆ",
    "hi": "एक लाल बोतल धीरे-धीरे घूमती है",
    "emoji": "🍾✨ sale 🔥",
}


def test_every_script_round_trips_through_bytes():
    tokens, mask = tokenize(list(PROMPTS.values()), max_len=128)
    for row, m, text in zip(tokens, mask, PROMPTS.values(), strict=True):
        assert row[0] == BOS
        data = bytes(int(t) - 2 for t in row[1 : int(m.sum())])
        assert data.decode("utf-8") == text
        assert (row[int(m.sum()) :] == PAD).all()


def test_scripts_give_distinct_embeddings(tiny):
    cond = tiny.encode_text(list(PROMPTS.values()))
    assert cond.emb.shape[0] == len(PROMPTS) and torch.isfinite(cond.emb).all()
    pooled = (cond.emb.sum(1) / cond.mask.sum(1, keepdim=True)).double()
    dist = torch.cdist(pooled, pooled)
    assert (dist + torch.eye(len(PROMPTS)) > 1e-4).all()  # no two prompts collapse


def test_empty_prompt_is_one_bos_token(tiny):
    cond = tiny.encode_text(["", "hello"])
    assert cond.mask[0].sum() == 1 and cond.mask[1].sum() == 6
    assert (cond.emb[0, 1:] == 0).all()  # padding rows are exactly zero


def test_padding_does_not_change_a_prompt(tiny):
    alone = tiny.encode_text(["short"])
    batched = tiny.encode_text(["short", "a much longer prompt than the first one"])
    n = int(alone.mask.sum())
    assert (batched.emb[0, :n] - alone.emb[0, :n]).abs().max() <= 1e-5


def test_overlong_prompt_is_truncated_at_a_character_boundary():
    text = "瓶" * 40  # 3 bytes each
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokens, mask = tokenize([text], max_len=32)
    assert any("truncated" in str(w.message) for w in caught)
    data = bytes(int(t) - 2 for t in tokens[0, 1 : int(mask.sum())])
    assert data.decode("utf-8") == "瓶" * 10  # 31 bytes allowed → 10 whole characters


def test_bad_prompt_types_are_named():
    with pytest.raises(TypeError, match="list of strings"):
        tokenize("not a list", 16)
    with pytest.raises(TypeError, match=r"prompts\[1\] must be a str"):
        tokenize(["ok", 3], 16)


def test_cat_and_index_keep_prompts_apart(tiny):
    a, b = tiny.encode_text(["one"]), tiny.encode_text(["a second, longer prompt"])
    both = TextCond.cat([a, b])
    assert both.emb.shape[0] == 2 and torch.equal(both[0].emb[:, :4], a.emb)
    packed, lens = both.packed()
    assert lens == [4, 24] and packed.shape[1] == 28


def test_pooled_is_the_mean_of_real_tokens_only(tiny):
    cond = tiny.encode_text(["short", "a much longer prompt than the first one"])
    n = int(cond.mask[0].sum())
    assert torch.allclose(cond.pooled()[0], cond.emb[0, :n].mean(0), atol=1e-6)
    alone = tiny.encode_text(["short"]).pooled()[0]
    assert (cond.pooled()[0] - alone).abs().max() <= 1e-5  # padding never counts


def _conv_encoder(width: int) -> model.VideoModel:
    config = ModelConfig.model_validate({**dict(model.PRESETS["tiny"]), "text_conv": width})
    return model.build(config, zero_init=False)


def test_byte_conv_gives_each_byte_its_neighbours():
    m = _conv_encoder(3)
    # "rosa" and "roja" differ in one byte; with the convolution, the bytes next to it
    # ("o" and "a") differ too, before any attention.
    tokens, mask = tokenize(["rosa", "roja"], max_len=16)
    x = m.text.embed(tokens) + m.text.pos[: tokens.shape[1]]
    mixed = m.text.embed_bytes(tokens, mask)
    assert (x[0, 2] == x[1, 2]).all() and (x[0, 4] == x[1, 4]).all()
    assert (mixed[0, 2] != mixed[1, 2]).any() and (mixed[0, 4] != mixed[1, 4]).any()
    assert m.text.conv.weight.shape[-1] == 3


def test_byte_conv_keeps_a_prompt_independent_of_its_batch():
    m = _conv_encoder(5)
    alone = m.encode_text(["short"])
    batched = m.encode_text(["short", "a much longer prompt than the first one"])
    n = int(alone.mask.sum())
    assert (batched.emb[0, :n] - alone.emb[0, :n]).abs().max() <= 1e-5
    assert (batched.emb[0, n:] == 0).all()


def test_byte_conv_width_must_be_odd():
    with pytest.raises(ValueError, match=r"text_conv \(4\) must be odd"):
        _conv_encoder(4)
    assert model.build("tiny").text.conv is None  # presets without it are unchanged
