"""CLIP-style text-video alignment: the loss learns pairs and never repels synonyms."""

import torch

from model.training.align import Aligner


def test_identical_content_is_not_a_negative():
    torch.manual_seed(0)
    al = Aligner(text_dim=16, latent_shape=(4, 2, 4, 4), dim=8)
    text, z = torch.randn(4, 16), torch.randn(4, 4, 2, 4, 4)
    apart = torch.zeros(4, 4, dtype=torch.bool)
    same = apart.clone()
    same[0, 1] = same[1, 0] = True  # clips 0 and 1 have the same captioned content
    loss_apart, _ = al.loss(text, z, apart)
    loss_same, _ = al.loss(text, z, same)
    assert loss_same < loss_apart  # one fewer negative for rows 0 and 1
    # The rows of unrelated clips are untouched by the mask.
    rest_apart = al.loss(text[2:], z[2:], apart[2:, 2:])[0]
    assert torch.equal(rest_apart, al.loss(text[2:], z[2:], same[2:, 2:])[0])


def test_a_few_steps_learn_the_pairs():
    torch.manual_seed(0)
    al = Aligner(text_dim=16, latent_shape=(4, 2, 4, 4), dim=8)
    text, z = torch.randn(16, 16), torch.randn(16, 4, 2, 4, 4)
    none = torch.zeros(16, 16, dtype=torch.bool)
    opt = torch.optim.Adam(al.parameters(), lr=3e-3)
    first, acc0 = al.loss(text, z, none)
    for _ in range(60):
        loss, _ = al.loss(text, z, none)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, acc = al.loss(text, z, none)
    assert last < 0.5 * first and acc > max(acc0, 0.8)
