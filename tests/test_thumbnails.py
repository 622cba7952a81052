"""Thumbnails in a text model's condition rows (progan.conditioning.thumbnails): built from the images, carried by
every caption variant of an image, kept apart from the words where only the words count, exported with which
images each caption names, and drawn from those at generation time."""

import math

import pytest
import torch

from progan.conditioning.rows import caption_rows, reading_mean_row, random_caption_rows
from progan.conditioning.prompts import read_prompt
from progan.conditioning.spec import export_conditioning
from progan.conditioning.thumbnails import image_thumbnails
from progan.conditioning.training import CaptionVariants, condition_table, step_conditions
from progan.config import ConfigError, LossConfig, ModelConfig, TrainConfig
from progan.networks import Discriminator, Generator

E = 6
TEXT = ModelConfig(resolution=8, latent_size=8, fmap_base=32, fmap_max=8, text_size=E, ca_size=4, thumbnail_size=4)


def unit_rows(n, e=E, seed=0):
    return torch.nn.functional.normalize(torch.randn(n, e, generator=torch.Generator().manual_seed(seed)), dim=1)


class FakeDataset:
    """What the conditioning code reads of a prepared dataset: images at 4x4, captions, their vectors, variants."""

    def __init__(self, captions, variants, seed=0):
        self.count = len(captions)
        gen = torch.Generator().manual_seed(seed)
        self.pixels = torch.randint(0, 256, (self.count, 3, 4, 4), generator=gen, dtype=torch.uint8)
        self.captions = captions
        self.caption_embeddings = unit_rows(self.count, seed=seed + 1)
        self.variant_texts = variants
        self.variant_embeddings = unit_rows(sum(map(len, variants)), seed=seed + 2)
        self.labels, self.num_classes, self.path = None, 0, "fake"
        self.text_encoder = {"name": "fake", "dimension": E}

    def images(self, res, indices):
        assert res == 4
        return self.pixels[torch.as_tensor(indices)]

    def column(self, name):
        return self.variant_texts if name == "caption_variants" else None


def test_a_thumbnail_is_the_small_image_mirror_symmetric_at_about_unit_norm():
    data = FakeDataset(["a", "b"], [[], []])
    thumbs = image_thumbnails(data, 4)
    assert thumbs.shape == (2, 48)
    x = data.pixels.float() / 127.5 - 1
    expected = (0.5 * (x + x.flip(-1))).flatten(1) / math.sqrt(48)
    assert torch.allclose(thumbs, expected)
    grid = thumbs.view(2, 3, 4, 4)
    assert torch.equal(grid, grid.flip(-1))  # training mirrors the reals: the condition does not say which way
    assert (thumbs.norm(dim=1) <= 1.0 + 1e-6).all()


def test_the_table_carries_each_images_thumbnail_after_its_caption():
    words, thumbs = unit_rows(3), torch.rand(3, 48)
    table = condition_table(TEXT, embeddings=words, thumbnails=thumbs)
    assert table.shape == (3, E + 48) and TEXT.cond_size == E + 48
    assert torch.allclose(table[:, :E], words) and torch.equal(table[:, E:], thumbs)
    with pytest.raises(ConfigError, match=r"takes 4x4 thumbnails beside the captions: my data gave None"):
        condition_table(TEXT, embeddings=words, source="my data")
    with pytest.raises(ConfigError, match=r"my data gave \(3, 12\)"):
        condition_table(TEXT, embeddings=words, thumbnails=torch.rand(3, 12), source="my data")


@pytest.mark.parametrize("change, message", [
    (dict(text_size=0, ca_size=0), "needs a text-conditional model"),
    (dict(thumbnail_size=2), "must be a resolution from 4 to 8"),
    (dict(thumbnail_size=16), "must be a resolution from 4 to 8"),
])
def test_thumbnail_sizes_that_cannot_work_are_refused(change, message):
    import dataclasses
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TEXT, **change).validate()


def test_every_variant_of_an_image_carries_that_images_thumbnail():
    data = FakeDataset(["a", "b", "c"], [["x", "y"], [], ["z"]])
    table = condition_table(TEXT, embeddings=data.caption_embeddings, thumbnails=image_thumbnails(data, 4))
    variants = CaptionVariants.of(data, torch.device("cpu"), table)
    assert variants.rows.shape == (3, E + 48)
    assert torch.equal(variants.rows[:, :E], data.variant_embeddings)
    for row, owner in zip(variants.rows, [0, 0, 2]):
        assert torch.equal(row[E:], table[owner, E:])
    cfg = TrainConfig(model=TEXT, loss=LossConfig(gan_int=0.0))
    idx = torch.tensor([0, 1, 2, 0, 1, 2])
    c = step_conditions(table, idx, torch.Generator().manual_seed(0), cfg, variants=variants)
    assert torch.equal(c.real[:, E:], table[idx, E:])  # whatever words were drawn, the image's own thumbnail
    assert not torch.equal(c.wrong[:, E:], c.real[:, E:])  # a wrong caption comes with its own image


def test_an_uncaptioned_image_is_never_a_mismatch_although_it_has_a_thumbnail():
    words = unit_rows(4)
    words[3] = 0  # no caption
    table = condition_table(TEXT, embeddings=words, thumbnails=torch.rand(4, 48) + 0.1)
    cfg = TrainConfig(model=TEXT, loss=LossConfig(gan_int=0.0))
    for seed in range(10):
        c = step_conditions(table, torch.tensor([3, 3, 0, 1]), torch.Generator().manual_seed(seed), cfg)
        assert not c.wrong_mask[:2].any()
        assert c.wrong_mask[2:].all() and (c.wrong[2:, :E].norm(dim=1) > 0.5).all()


def exported_G(data, cfg=TEXT):
    meta, tensors = export_conditioning(data, cfg, with_variants=True)
    G = Generator(cfg).eval()
    G.meta = {"kimg": 1.0, "conditioning": {**meta, **tensors}}
    return G


def test_the_export_says_which_images_each_caption_names():
    data = FakeDataset(["a dog", "a cat", "a dog"], [["animal", "pet"], ["animal"], []])
    G = exported_G(data)
    cond = G.meta["conditioning"]
    assert cond["captions"] == ["a dog", "a cat", "animal", "pet"]
    offsets, images = cond["caption_image_offsets"].tolist(), cond["caption_images"].tolist()
    named = {text: images[offsets[i]:offsets[i + 1]] for i, text in enumerate(cond["captions"])}
    assert named == {"a dog": [0, 2], "a cat": [1], "animal": [0, 1], "pet": [0]}
    assert torch.equal(cond["thumbnails"], image_thumbnails(data, 4))
    # A model without thumbnails exports what it always did.
    plain = export_conditioning(data, ModelConfig(**{**TEXT.__dict__, "thumbnail_size": 0}), with_variants=True)[1]
    assert plain.keys() == {"caption_vectors"}


def test_a_captions_row_takes_the_thumbnail_of_an_image_it_names():
    data = FakeDataset(["a dog", "a cat", "a dog"], [["animal"], ["animal"], []])
    G = exported_G(data)
    thumbs = G.meta["conditioning"]["thumbnails"]
    dog, animal = 0, 2
    rows = caption_rows(G, torch.tensor([dog, dog, animal, animal]), torch.tensor([0.1, 0.9, 0.1, 0.9]))
    assert rows.shape == (4, E + 48)
    assert torch.equal(rows[:, :E], G.meta["conditioning"]["caption_vectors"][[dog, dog, animal, animal]])
    for row, image in zip(rows, [0, 2, 0, 1]):
        assert torch.equal(row[E:], thumbs[image])
    centre = caption_rows(G, torch.tensor([dog]))[0]
    assert torch.allclose(centre[E:], 0.5 * (thumbs[0] + thumbs[2]))
    reading = read_prompt(G.meta["conditioning"]["caption_vectors"][dog], G.meta["conditioning"]["caption_vectors"],
                          G.meta["conditioning"]["captions"])
    assert torch.allclose(reading_mean_row(G, reading), centre)
    drawn = random_caption_rows(G, 16, torch.Generator().manual_seed(0))
    assert all(any(torch.equal(r[E:], t) for t in thumbs) for r in drawn)


def test_both_networks_take_the_caption_and_the_thumbnail():
    G, D = Generator(TEXT), Discriminator(TEXT)
    rows = torch.cat([unit_rows(2), torch.rand(2, 48)], dim=1)
    img = G(torch.randn(2, TEXT.latent_size), 0.0, rows)
    assert D(img, 0.0, rows).shape == (2, 1)
    other = rows.clone()
    other[:, E:] = torch.rand(2, 48)  # the same words, another image's thumbnail
    assert not torch.equal(D(img, 0.0, other), D(img, 0.0, rows))
    torch.manual_seed(0)
    z = torch.randn(2, TEXT.latent_size)
    assert not torch.equal(G.eval()(z, 0.0, other), G(z, 0.0, rows))
    with pytest.raises(ValueError, match=rf"\[B, {E + 48}\]"):
        D(img, 0.0, rows[:, :E])
