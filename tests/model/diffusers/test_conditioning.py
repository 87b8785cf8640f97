"""Known frames through the contract equal diffusers' image-to-video pipelines.

Per family: guided Euler through `m.velocity(..., image=m.encode_image(frames))` on the
same latents, image and sigmas as the pipeline; the known latent frames stay the image's.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from PIL import Image

import model
from model.diffusers.testing import GUIDANCE, NEGATIVE, PROMPT
from model.sampling import cfg, euler

# family -> (pixel frames, height, width, steps)
CASES = {
    "wan22_ti2v": (9, 32, 32, 3),  # "timestep": WanImageToVideoPipeline with expand_timesteps
    "wan21_i2v": (9, 16, 16, 4),  # "channels": mask + image latent, CLIP image tokens
    "ltx": (17, 64, 64, 4),  # "timestep": LTXImageToVideoPipeline
}


def _image(height: int, width: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (1, 1, height, width, 3), dtype=torch.uint8, generator=gen)


def _i2v_pipeline(name: str, pipe):
    """The family's diffusers image-to-video pipeline over the checkpoint's components."""
    from diffusers import LTXImageToVideoPipeline, WanImageToVideoPipeline

    if name == "wan22_ti2v":
        parts = {k: v for k, v in pipe.components.items() if k != "transformer_2"}
        i2v = WanImageToVideoPipeline(**parts, expand_timesteps=True)
    elif name == "ltx":
        i2v = LTXImageToVideoPipeline(**pipe.components)
    else:
        i2v = pipe
    i2v.set_progress_bar_config(disable=True)
    return i2v


def _contract(m, image, x, ts, callback=None):
    cond, uncond = m.encode_text([PROMPT]), m.encode_text([NEGATIVE])
    velocity = cfg(partial(m.velocity, image=image), cond, uncond, GUIDANCE)
    return euler(velocity, x.clone(), ts, callback=callback)


@pytest.fixture(scope="module", params=list(CASES))
def run(request, checkpoint, loaded):
    """(name, model, image, noise, contract latents before apply, pipeline latents)."""
    name = request.param
    pipe, _ = checkpoint(name)
    m = loaded(name)
    frames, height, width, steps = CASES[name]
    pixels = _image(height, width)
    image = m.encode_image(pixels)
    shape = m.latent_shape(frames, height, width)
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    ts = m.timesteps(steps, frames, height, width)
    ours = _contract(m, image, x, ts)
    i2v = _i2v_pipeline(name, pipe)
    start = image.apply(x) if name == "ltx" else x  # LTX's pipeline takes frame 0 from latents
    if name == "ltx":
        start = i2v._pack_latents(start, 1, 1)
    if name == "ltx":
        prompts = dict(prompt=PROMPT, negative_prompt=NEGATIVE)
    else:  # WanImageToVideoPipeline cleans prompts with ftfy, unguarded: give it embeddings
        prompts = dict(
            prompt_embeds=m.encode_text([PROMPT]).emb,
            negative_prompt_embeds=m.encode_text([NEGATIVE]).emb,
        )
    theirs = i2v(
        image=Image.fromarray(pixels[0, 0].numpy()),
        **prompts, height=height, width=width,
        num_frames=frames, num_inference_steps=steps, guidance_scale=GUIDANCE,
        latents=start.clone(), output_type="latent",
    ).frames  # fmt: skip
    if name == "ltx":
        theirs = i2v._unpack_latents(theirs, *shape[1:], 1, 1)
    assert torch.equal(ts, i2v.scheduler.sigmas.float())
    return name, m, image, x, ours, theirs


def test_guided_euler_with_an_image_equals_the_pipeline(run):
    name, m, image, _, ours, theirs = run
    # the pipelines put the known frames in place at the end ("timestep"); Wan 2.1 I2V does not
    error = float((image.apply(ours) if name != "wan21_i2v" else ours).sub(theirs).abs().max())
    print(f"{name} ({m.image_conditioning}): guided Euler with an image, max error {error:.2e}")
    assert error < 1e-4


def test_the_known_frames_stay_the_image_latent(run):
    name, m, image, x, ours, _ = run
    K = image.latents.shape[2]
    held = image.apply(ours)
    assert torch.equal(held[:, :, :K], image.latents)
    assert torch.equal(held[:, :, K:], ours[:, :, K:])
    if m.image_conditioning == "timestep":  # v = 0 there: a sampler started on them keeps them
        frames, height, width, steps = CASES[name]
        seen = []
        ts = m.timesteps(steps, frames, height, width)
        out = _contract(m, image, image.apply(x), ts, lambda i, z, t: seen.append(z[:, :, :K]))
        assert all(torch.equal(z, image.latents) for z in [*seen, out[:, :, :K]])
        assert torch.equal(out[:, :, K:], ours[:, :, K:])  # x is not read on known frames
    else:  # the model generates frame 0 close to the image's latent, not equal
        drift = float((ours[:, :, :K] - image.latents).abs().max())
        print(f"{name}: generated frame 0 vs the image latent {drift:.2e} (random weights)")


def test_the_channel_image_of_a_long_clip_serves_a_short_one(loaded):
    """Wan's VAE is causal: the channels for 3 latent frames are the head of those for 21."""
    m = loaded("wan21_i2v")
    pixels = _image(16, 16)
    short, long = m.encode_image(pixels, latent_frames=3), m.encode_image(pixels)
    assert long.channels.shape[2] == m.geometry.latent_frames(m.geometry.max_frames) == 21
    assert torch.allclose(short.channels, long.channels[:, :, :3], atol=1e-5)
    assert short.embeds is not None and short.embeds.shape[-1] == 8  # CLIP's tokens


def test_an_image_to_video_checkpoint_needs_an_image(loaded):
    m = loaded("wan21_i2v")
    assert m.image_conditioning == "channels"
    x = torch.randn(1, 16, 3, 2, 2)
    with pytest.raises(ValueError, match=r"image-to-video checkpoint.*encode_image"):
        m.velocity(x, 0.5, m.encode_text(["a"]))
    with pytest.raises(ValueError, match="one image"):
        m.encode_image(torch.zeros(1, 5, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="latent_frames=5"):
        m.velocity(
            torch.randn(1, 16, 5, 2, 2), 0.5, m.encode_text(["a"]),
            image=m.encode_image(_image(16, 16), latent_frames=3),
        )  # fmt: skip


def test_models_without_conditioning_say_so(loaded):
    native, t2v = model.load("tiny"), loaded("wan21")
    for m in (native, t2v):
        assert m.image_conditioning is None
        with pytest.raises(model.ConditioningNotSupported, match="does not support image"):
            m.encode_image(_image(16, 16))
    z = torch.randn(1, native.latent_channels, 1, 2, 2)
    x = torch.randn(1, native.latent_channels, 3, 2, 2)
    with pytest.raises(NotImplementedError, match=r"'tiny'.*retraining"):
        native.velocity(x, 0.5, native.encode_text(["a"]), image=model.ImageCond.from_latents(z))
    with pytest.raises(NotImplementedError, match="wan21"):
        t2v.velocity(
            torch.randn(1, 16, 3, 2, 2), 0.5, t2v.encode_text(["a"]),
            image=model.ImageCond.from_latents(torch.randn(1, 16, 1, 2, 2)),
        )  # fmt: skip


def test_rows_of_a_batch_may_know_different_frames(loaded):
    """Window-steps of different videos share a forward: one with two known frames (a video's
    tail, for extension), one with none; each row equals its own call."""
    m = loaded("ltx")
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 3, 2, 2, generator=gen)
    tail = model.ImageCond.from_latents(torch.randn(1, 8, 2, 2, 2, generator=gen))
    cond, t = m.encode_text(["a", "b"]), torch.tensor([0.7, 0.4])
    both = m.velocity(x, t, cond, image=model.ImageCond.cat([tail, None]))
    first = m.velocity(x[:1], t[:1], cond[0], image=tail)
    second = m.velocity(x[1:], t[1:], cond[1])
    assert float(both[:1, :, :2].abs().max()) == 0.0 == float(first[:, :, :2].abs().max())
    assert torch.allclose(both[:1], first, atol=1e-5)
    assert torch.allclose(both[1:], second, atol=1e-5)
    assert not torch.allclose(first[:, :, 2], m.velocity(x[:1], t[:1], cond[0])[:, :, 2])
    packed = m.velocity_packed([x[0], x[1]], t, cond, images=[tail, None])
    assert torch.allclose(packed[0], first[0], atol=1e-5)


def test_an_image_of_the_wrong_size_is_named(loaded):
    m = loaded("wan22_ti2v")
    image = m.encode_image(_image(64, 64))
    with pytest.raises(ValueError, match="encode the image at the video's size"):
        m.velocity(torch.randn(1, 48, 3, 2, 2), 0.5, m.encode_text(["a"]), image=image)
