"""Condition rows for a loaded generator (progan.conditioning.rows) and truncation under them (progan.generate)."""

import math

import pytest
import torch

from progan.conditioning.rows import class_blend_rows, one_hot_rows
from progan.conditioning.spec import ConditionError
from progan.config import ModelConfig
from progan.generate import latents_from_seeds, render
from progan.networks import Generator


@pytest.fixture(scope="module")
def class_G():
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=8, latent_size=16, fmap_base=64, fmap_max=16, num_classes=3)).eval()
    G.meta = {"kimg": 1.0, "conditioning": {"kind": "class", "label_names": ["cat", "dog", "owl"]}}
    return G


def test_truncation_pulls_each_row_toward_its_own_condition(class_G):
    z = latents_from_seeds([0, 1, 2, 3], class_G.latent_size)
    mixed = one_hot_rows(torch.tensor([0, 1, 0, 1]), 3)
    together = render(class_G, z, truncation=0.3, cond=mixed)
    dog_alone = render(class_G, z[[1, 3]], truncation=0.3, cond=mixed[[1, 3]])
    cat_alone = render(class_G, z[[0, 2]], truncation=0.3, cond=mixed[[0, 2]])
    assert torch.equal(together[[1, 3]], dog_alone) and torch.equal(together[[0, 2]], cat_alone)
    # The rows' centres really differ, so pulling toward the wrong one would show.
    cat_centre = render(class_G, z[[1, 3]], truncation=0.3, cond=mixed[[0, 0]])
    assert not torch.equal(cat_centre, dog_alone)


@pytest.mark.parametrize("weights", [[math.inf, 1.0], [1.0, math.nan], [-1.0, 2.0], [0.0, 0.0]])
def test_a_blend_needs_finite_non_negative_weights(class_G, weights):
    with pytest.raises(ConditionError, match="finite, non-negative weight per class"):
        class_blend_rows(class_G, ["cat", "dog"], 2, weights)


def test_a_blend_is_a_soft_one_hot_row(class_G):
    rows = class_blend_rows(class_G, ["cat", "owl"], 2, [3.0, 1.0])
    assert torch.equal(rows, torch.tensor([[0.75, 0.0, 0.25]] * 2))


def test_a_text_model_renders_around_its_code_with_conditioning_noise():
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=8, latent_size=16, fmap_base=64, fmap_max=16, text_size=6, ca_size=4)).eval()
    z = latents_from_seeds([0, 1, 2], G.latent_size)
    cond = torch.nn.functional.normalize(torch.randn(3, 6), dim=1)
    at_mean = render(G, z, cond=cond)
    assert torch.equal(render(G, z, cond=cond, noise=torch.zeros(3, 4)), at_mean)  # mu + sigma * 0: the mean
    assert not torch.equal(render(G, z, cond=cond, noise=torch.randn(3, 4)), at_mean)


def test_condition_noise_is_a_function_of_each_seed():
    from progan.generate import condition_noise_from_seeds
    both = condition_noise_from_seeds([3, 7], 4)
    assert torch.equal(both[1], condition_noise_from_seeds([7], 4)[0])  # whatever else is in the batch
    assert not torch.equal(both[0], both[1])


def test_each_seed_draws_its_own_caption_of_a_reading_by_weight():
    from progan.conditioning.prompts import read_prompt
    from progan.conditioning.rows import drawn_rows
    vectors = torch.eye(4)
    G = Generator(ModelConfig(resolution=8, latent_size=16, fmap_base=64, fmap_max=16, text_size=4, ca_size=2))
    G.meta = {"conditioning": {"kind": "text", "captions": ["a", "b", "c", "d"], "caption_vectors": vectors}}
    reading = read_prompt(torch.tensor([0.8, 0.6, 0.0, 0.0]), vectors, ["a", "b", "c", "d"])
    assert reading.captions == ("a", "b")
    rows = drawn_rows(G, reading, list(range(400)))
    share_a = float(rows[:, 0].mean())  # each row is one caption's vector: a one-hot here
    assert torch.equal(rows.sum(1), torch.ones(400)) and rows[:, 2:].abs().sum() == 0
    assert abs(share_a - float(reading.weights[0])) < 0.08  # drawn by weight
    assert torch.equal(drawn_rows(G, reading, [5, 9])[1], rows[9])  # a seed's draw whatever else is drawn
