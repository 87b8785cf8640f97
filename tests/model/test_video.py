"""The model contract: shapes, seeds, packing, and clear errors on bad input."""

import copy

import pytest
import torch

import model
from model.dit import abs_pos_features
from model.flops import count_params, dit_step_flops
from model.sampling import euler, flow_timesteps


def test_latent_shape_follows_the_strides(tiny):
    assert tiny.latent_shape(9, 64, 64) == (4, 3, 8, 8)
    assert tiny.latent_shape(81, 480, 832) == (4, 21, 60, 104)
    assert tiny.latent_shape(1, 16, 32) == (4, 1, 2, 4)


def sample(m, seed, steps=4):
    cond = m.encode_text(["a red bottle"])
    x = model.noise((1, *m.latent_shape(9, 64, 64)), seed)
    return euler(lambda x, t: m.velocity(x, t, cond), x, flow_timesteps(steps, shift=3.0))


def test_same_seed_gives_bit_identical_latents(tiny):
    a, b = sample(tiny, 7), sample(tiny, 7)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample(tiny, 8))


def test_noise_is_drawn_on_the_cpu_with_its_own_generator():
    torch.manual_seed(123)
    a = model.noise((2, 3), 5)
    torch.manual_seed(456)  # the global RNG does not matter
    assert torch.equal(a, model.noise((2, 3), 5))
    assert a.device.type == "cpu"


def test_velocity_depends_on_t_text_and_x(tiny):
    x = model.noise((2, 4, 3, 8, 8), 0)
    cond = tiny.encode_text(["a red bottle", "a blue shoe"])
    v = tiny.velocity(x, torch.tensor([0.5, 0.5]), cond)
    assert not torch.allclose(v[0], tiny.velocity(x[:1], 0.9, cond[0])[0])
    assert not torch.allclose(v[0], tiny.velocity(x[:1], 0.5, cond[1])[0])
    # Per-sample t: each batch element equals running it alone at its own t.
    vt = tiny.velocity(x, torch.tensor([0.2, 0.8]), cond)
    assert (vt[1] - tiny.velocity(x[1:], 0.8, cond[1])[0]).abs().max() <= 1e-5


def test_packed_mixed_formats_equal_separate(tiny):
    # 9:16, 1:1 and 16:9 windows of different lengths, with prompts of different lengths.
    xs = [model.noise(s, i) for i, s in enumerate([(4, 3, 16, 10), (4, 2, 8, 8), (4, 4, 10, 16)])]
    cond = tiny.encode_text(["vertical", "一个方形的盒子", "wide shot of a phone on a desk"])
    t = torch.tensor([0.9, 0.4, 0.05])
    packed = tiny.velocity_packed(xs, t, cond)
    for i, x in enumerate(xs):
        alone = tiny.velocity(x[None], t[i : i + 1], cond[i])[0]
        assert packed[i].shape == x.shape
        assert (packed[i] - alone).abs().max() <= 1e-5


def test_math_and_sdpa_backends_agree_on_the_model(tiny, monkeypatch):
    x = model.noise((2, 4, 3, 8, 8), 0)
    cond = tiny.encode_text(["a", "bb"])
    monkeypatch.setenv("FARM_ATTENTION", "math")
    ref = tiny.velocity(x, 0.5, cond)
    monkeypatch.setenv("FARM_ATTENTION", "sdpa")
    assert (tiny.velocity(x, 0.5, cond) - ref).abs().max() <= 1e-5


def test_adaln_zero_init_predicts_zero_velocity():
    m = model.build("tiny", zero_init=True)
    x = model.noise((1, 4, 2, 4, 4), 0)
    assert torch.equal(m.velocity(x, 0.5, m.encode_text(["x"])), torch.zeros_like(x))


def test_decode_and_encode_shapes(tiny):
    z = model.noise((1, *tiny.latent_shape(9, 32, 48)), 0)
    video = tiny.decode(z)
    assert video.shape == (1, 9, 32, 48, 3) and video.dtype == torch.uint8
    assert tiny.encode(video).shape == z.shape


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 64, 64), "frames must be of the form 4n\\+1"),
        ((9, 60, 64), "height 60 must be a positive multiple of 16 \\(model 'tiny'\\)"),
        ((9, 64, 0), "width 0 must be a positive multiple of 16 \\(model 'tiny'\\)"),
    ],
)
def test_bad_sizes_name_the_rule(tiny, args, message):
    with pytest.raises(ValueError, match=message):
        tiny.latent_shape(*args)


def test_bad_velocity_inputs_name_the_rule(tiny):
    cond = tiny.encode_text(["x"])
    good = model.noise((1, 4, 2, 4, 4), 0)
    cases = [
        (good[0], "shape \\[B, C, T, H, W\\]"),
        (good.to(torch.int64), "floating point"),
        (model.noise((1, 5, 2, 4, 4), 0), "4 channels"),
        (model.noise((1, 4, 2, 5, 4), 0), "multiples of 2"),
        (good.to("meta"), "on meta but the model is on cpu"),
    ]
    for x, message in cases:
        with pytest.raises(ValueError, match=message):
            tiny.velocity(x, 0.5, cond)
    with pytest.raises(ValueError, match="t must lie in"):
        tiny.velocity(good, 1.5, cond)
    with pytest.raises(ValueError, match="2 prompts for a batch of 1"):
        tiny.velocity(good, 0.5, tiny.encode_text(["a", "b"]))
    with pytest.raises(ValueError, match="uint8"):
        tiny.encode(torch.zeros(1, 9, 32, 32, 3))


@pytest.mark.parametrize("name", sorted(model.PRESETS))
def test_every_preset_builds_on_meta(name):
    m = model.build(name, device="meta")
    assert count_params(m.dit) > 0 and m.config.name == name


def test_base_reports_parameters_and_flops():
    m = model.build("base", device="meta")
    params = count_params(m.dit)
    assert 1.2e9 < params < 1.6e9  # the range of Wan-2.1-1.3B
    flops = dit_step_flops(m.config, frames=81, height=480, width=832)
    assert flops.tokens == 21 * 30 * 52
    # Self-attention dominates at 32k tokens; a 2x longer video is >2x the FLOPs.
    assert flops.self_attention > flops.linear
    assert dit_step_flops(m.config, 161, 480, 832).total > 2 * flops.total


def test_pooled_prompt_conditions_without_cross_attention(tiny):
    # With every cross-attention silenced, the prompt still reaches the blocks through
    # the pooled adaLN path, in the batched and the packed layout alike.
    m = copy.deepcopy(tiny)
    for block in m.dit.blocks:
        block.cross.proj.weight.data.zero_()
        block.cross.proj.bias.data.zero_()
    x = model.noise((1, 4, 3, 8, 8), 0)
    red, blue = m.encode_text(["a red bottle"]), m.encode_text(["a blue shoe"])
    assert not torch.allclose(m.velocity(x, 0.5, red), m.velocity(x, 0.5, blue))
    with torch.no_grad():
        packed = m.dit.forward_packed([x[0]], torch.tensor([0.5]), red)[0]
    assert (packed - m.velocity(x, 0.5, red)[0]).abs().max() <= 1e-5


def test_absolute_positions_span_the_clip_in_fractions():
    feats = abs_pos_features((5, 2, 4), 3, "cpu").view(5, 2, 4, 3, 6)  # (T, H, W, axis, sin/cos)
    t_sin = feats[:, 0, 0, 0, 0]  # sin(pi/2 * tau): 0 at the first frame, 1 at the last
    assert t_sin[0].abs() < 1e-6 and (t_sin[-1] - 1).abs() < 1e-6 and (t_sin.diff() > 0).all()
    x_sin = feats[0, 0, :, 2, 0]  # x runs from left to right, symmetric about the centre
    assert (x_sin.diff() > 0).all() and torch.allclose(x_sin, -x_sin.flip(0))
    assert len(torch.unique(feats.reshape(40, 18), dim=0)) == 40  # no two tokens alike
    assert abs_pos_features((1, 1, 1), 2, "cpu")[0, :2].abs().max() < 1e-6  # one frame: tau 0


def test_absolute_positions_let_a_uniform_input_give_a_placed_output(tiny):
    # Rotary positions are relative: a latent that is the same everywhere gives the same
    # velocity at every token. The absolute embedding lets the model place things.
    def token_shift_gap(v):  # largest change when moving one token along t, y or x
        return max(
            (v[:, :, 1:] - v[:, :, :-1]).abs().max(),
            (v[..., 2:, :] - v[..., :-2, :]).abs().max(),
            (v[..., 2:] - v[..., :-2]).abs().max(),
        )

    x = torch.zeros(1, 4, 3, 8, 8)
    v = tiny.velocity(x, 1.0, tiny.encode_text(["a red bottle moves left"]))
    assert tiny.config.abs_pos and token_shift_gap(v) > 1e-3
    relative = model.build(tiny.config.model_copy(update={"abs_pos": 0}), zero_init=False)
    v = relative.velocity(x, 1.0, relative.encode_text(["a red bottle moves left"]))
    assert token_shift_gap(v) < 1e-5
