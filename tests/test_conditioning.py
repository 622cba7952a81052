"""Class (AC-GAN) and text (conditioning augmentation, projection D, matching-aware negatives, GAN-INT) conditioning:
the networks' conditional paths, the loss terms against hand computations, and a step's condition rows."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from progan.config import ConfigError, LossConfig, ModelConfig, TrainConfig
from progan.layers import pixel_norm
from progan.losses import discriminator_loss, generator_loss, gradient_penalty, kl_divergence, soft_cross_entropy
from progan.lod import condition_weight
from progan.networks import Discriminator, Generator
from progan.conditioning.training import CaptionVariants, condition_table, pairs_differ, step_conditions

BASE = dict(resolution=8, latent_size=8, fmap_base=32, fmap_max=8, mbstd_group=4)
CLASSES = ModelConfig(**BASE, num_classes=3)
TEXT = ModelConfig(**BASE, text_size=6, ca_size=4)


def unit_rows(n, e, seed=0):
    return F.normalize(torch.randn(n, e, generator=torch.Generator().manual_seed(seed)), dim=1)


def hidden_features(D, img, lod, cond=None):
    """D's output and the input of its last dense layer (h), captured by a hook."""
    seen = {}
    handle = D.dense1.register_forward_hook(lambda m, inp, out: seen.update(h=inp[0]))
    out = D(img, lod, cond)
    handle.remove()
    return out, seen["h"]


# --- networks ---------------------------------------------------------------------------------------------------

def test_class_rows_are_concatenated_to_z_before_the_pixel_norm():
    torch.manual_seed(0)
    G = Generator(CLASSES)
    z = torch.randn(4, 8)
    for cond in (F.one_hot(torch.tensor([0, 1, 2, 1]), 3).float(), torch.tensor([[0.5, 0.5, 0.0]] * 4)):
        x = pixel_norm(torch.cat([z, cond], 1))
        x = G.dense(x).view(4, -1, 4, 4) + G.dense_bias.view(1, -1, 1, 1)
        expected = pixel_norm(F.leaky_relu(x, 0.2))
        torch.testing.assert_close(G.embed(z, cond), expected)
    # a soft row lies between the two classes it mixes, and is not either of them
    a, b = G(z, 0.0, F.one_hot(torch.zeros(4, dtype=torch.long), 3).float()), G(z, 0.0, torch.eye(3)[[1] * 4])
    mid = G(z, 0.0, torch.tensor([[0.5, 0.5, 0.0]] * 4))
    assert torch.isfinite(mid).all() and not torch.allclose(mid, a) and not torch.allclose(mid, b)


def test_conditions_are_refused_with_clear_messages():
    G, D = Generator(CLASSES), Discriminator(TEXT)
    with pytest.raises(TypeError, match="one_hot"):
        G(torch.randn(2, 8), 0.0, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        G(torch.randn(2, 8), 0.0, torch.randn(2, 4))
    with pytest.raises(ValueError, match="is conditional"):
        G(torch.randn(2, 8), 0.0)
    with pytest.raises(ValueError, match="unconditional"):
        Generator(ModelConfig(**BASE))(torch.randn(2, 8), 0.0, torch.randn(2, 3))
    with pytest.raises(ValueError, match="is conditional"):
        D(torch.randn(4, 3, 8, 8), 0.0)
    with pytest.raises(ValueError, match="unconditional"):  # an AC-GAN D predicts the class; it takes none
        Discriminator(CLASSES)(torch.randn(4, 3, 8, 8), 0.0, torch.eye(3)[[0, 1, 2, 0]])


def test_projection_score_is_psi_plus_embedding_dot_features():
    torch.manual_seed(0)
    D = Discriminator(TEXT)
    D.project.weight.data.normal_()
    img, cond = torch.randn(4, 3, 8, 8), unit_rows(4, 6)
    out, h = hidden_features(D, img, 0.5, cond)
    c4 = TEXT.channels(4)
    psi = h @ D.dense1.weight.T / math.sqrt(c4) + D.dense1.bias  # dense1's equalized scale is 1 / sqrt(c4)
    proj = ((cond @ D.project.weight.T) * h).sum(1, keepdim=True) / math.sqrt(c4)
    torch.testing.assert_close(out, psi + proj)
    # linear in the condition: a mix of two captions scores as the mix of their scores (what GAN-INT relies on)
    other = unit_rows(4, 6, seed=1)
    mixed = D(img, 0.5, 0.3 * cond + 0.7 * other)
    torch.testing.assert_close(mixed, 0.3 * out + 0.7 * D(img, 0.5, other), rtol=1e-5, atol=1e-5)


def test_conditioning_augmentation_code():
    torch.manual_seed(0)
    G = Generator(TEXT)
    # at init mu is at unit scale (the caption has unit norm: gain sqrt(text_size)) and sigma is 1
    with torch.no_grad():
        mu0, log_sigma0 = G.condition_code(unit_rows(256, 6, seed=2), torch.zeros(256, 4))[1:]
    assert 0.5 < float(mu0.std()) < 2 and float(log_sigma0.abs().max()) == 0
    G.ca.weight.data.normal_()
    G.ca.bias.data.normal_()
    cond, noise = unit_rows(4, 6), torch.randn(4, 4)
    code, mu, log_sigma = G.condition_code(cond, noise)
    h = cond @ G.ca.weight.T + G.ca.bias  # runtime weight scale gain / sqrt(fan_in) = sqrt(6) / sqrt(6)
    torch.testing.assert_close(mu, h[:, :4])
    torch.testing.assert_close(log_sigma, h[:, 4:])
    torch.testing.assert_close(code, mu + log_sigma.exp() * noise)
    # inference takes the mean; the same noise gives the same images, other noise other images
    torch.testing.assert_close(G.condition_code(cond)[0], mu)
    z = torch.randn(4, 8)
    torch.testing.assert_close(G(z, 0.0, cond, noise), G(z, 0.0, cond, noise.clone()), rtol=0, atol=0)
    assert not torch.allclose(G(z, 0.0, cond, noise), G(z, 0.0, cond, torch.randn(4, 4)))
    assert not torch.allclose(G(z, 0.0, cond), G(z, 0.0, unit_rows(4, 6, seed=3)))


def test_transitional_condition_weight():
    cfg = ModelConfig(**{**BASE, "resolution": 32}, num_classes=3, cond_fade_start=16)
    # lod 3 = 4x4, 2 = 8x8, 1.5 = halfway through 16's fade, 1 = 16x16
    assert [condition_weight(cfg, lod) for lod in (3.0, 2.0, 1.5, 1.0, 0.0)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    ramp = ModelConfig(**{**BASE, "resolution": 32}, text_size=6, cond_fade_start=8, cond_fade_end=32)
    assert [condition_weight(ramp, lod) for lod in (3.0, 2.5, 1.5, 0.0)] == [0.0, 1 / 6, 0.5, 1.0]
    assert condition_weight(ModelConfig(**BASE, num_classes=3), 2.0) == 1.0
    # at weight 0 the condition does nothing, in G and in the projection
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(ModelConfig(**{**BASE, "resolution": 32}, text_size=6, cond_fade_start=16))
    z, img = torch.randn(4, 8), torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(G(z, 2.0, torch.eye(3)[[0] * 4]), G(z, 2.0, torch.eye(3)[[1] * 4]), rtol=0, atol=0)
    assert not torch.allclose(G(z, 1.5, torch.eye(3)[[0] * 4]), G(z, 1.5, torch.eye(3)[[1] * 4]))
    torch.testing.assert_close(D(img, 2.0, unit_rows(4, 6)), D(img, 2.0, unit_rows(4, 6, 1)), rtol=0, atol=0)
    # G.embed without a lod uses the model's own (what exported models and the studio use)
    G.lod = 2.0
    torch.testing.assert_close(G.embed(z, torch.eye(3)[[0] * 4]), G.embed(z, torch.eye(3)[[1] * 4]))


# --- losses -----------------------------------------------------------------------------------------------------

def test_acgan_discriminator_loss_against_hand_computation():
    torch.manual_seed(0)
    D = Discriminator(CLASSES)
    D.dense1.bias.data.normal_()
    real, fake, mix = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.rand(4, 1, 1, 1)
    labels = torch.tensor([0, 2, 1, 2])
    cfg = LossConfig(cond_weight=0.7)
    loss, stats = discriminator_loss(D, real, fake, 0.5, mix, cfg, F.one_hot(labels, 3).float())
    out_r, out_f = D(real, 0.5), D(fake, 0.5)
    ce_r = F.cross_entropy(out_r[:, 1:], labels, reduction="none")
    ce_f = F.cross_entropy(out_f[:, 1:], labels, reduction="none")
    x_hat = torch.lerp(real, fake, mix).requires_grad_(True)
    (g,) = torch.autograd.grad(D(x_hat, 0.5)[:, 0].sum(), x_hat)
    gp = (g.flatten(1).norm(dim=1) - 1) ** 2
    expected = (out_f[:, 0] - out_r[:, 0] + 10 * gp + 0.001 * out_r[:, 0] ** 2 + 0.7 * (ce_r + ce_f)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["ce_real"], ce_r.mean())
    # G: -D(fake) + cond_weight * CE(fake logits, the labels it was generated from)
    torch.testing.assert_close(generator_loss(D, fake, 0.5, cfg, F.one_hot(labels, 3).float()),
                               (-out_f[:, 0] + 0.7 * ce_f).mean())


def test_soft_labels_cross_entropy():
    logits, soft = torch.randn(5, 3), torch.softmax(torch.randn(5, 3), 1)
    expected = sum(soft[:, k] * F.cross_entropy(logits, torch.full((5,), k), reduction="none") for k in range(3))
    torch.testing.assert_close(soft_cross_entropy(logits, soft), expected)


def test_penalty_uses_the_score_only():
    torch.manual_seed(0)
    D = Discriminator(CLASSES)
    real, fake, mix = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.rand(4, 1, 1, 1)
    before = gradient_penalty(D, real, fake, 0.0, mix, 1.0)
    D.dense1.weight.data[1:] *= 5  # the logit rows
    torch.testing.assert_close(gradient_penalty(D, real, fake, 0.0, mix, 1.0), before)


def test_transitional_weight_scales_the_acgan_terms():
    cfg = ModelConfig(**{**BASE, "resolution": 16}, num_classes=3, cond_fade_start=16)
    torch.manual_seed(0)
    D = Discriminator(cfg)
    real, fake, mix = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.rand(4, 1, 1, 1)
    cond = torch.eye(3)[[0, 1, 2, 0]]
    off = discriminator_loss(D, real, fake, 1.0, mix, LossConfig(), cond)[0]  # 8x8: weight 0
    plain = discriminator_loss(D, real, fake, 1.0, mix, LossConfig(cond_weight=0.0), cond)[0]
    torch.testing.assert_close(off, plain)
    assert generator_loss(D, fake, 1.0, LossConfig(), cond) == generator_loss(D, fake, 1.0, LossConfig(cond_weight=0),
                                                                             cond)


def test_projection_loss_and_matching_aware_negatives():
    torch.manual_seed(0)
    D = Discriminator(TEXT)
    real, fake, mix = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.rand(4, 1, 1, 1)
    cond, wrong = unit_rows(4, 6), unit_rows(4, 6, seed=1)
    mask = torch.tensor([True, True, False, True])
    cfg = LossConfig(mismatch_weight=0.5)
    base, stats = discriminator_loss(D, real, fake, 0.0, mix, cfg, cond)
    d_real, d_fake = D(real, 0.0, cond)[:, 0], D(fake, 0.0, cond)[:, 0]
    x_hat = torch.lerp(real, fake, mix).requires_grad_(True)
    (g,) = torch.autograd.grad(D(x_hat, 0.0, cond)[:, 0].sum(), x_hat)  # the penalty scores with the reals' captions
    gp = (g.flatten(1).norm(dim=1) - 1) ** 2
    torch.testing.assert_close(base, (d_fake - d_real + 10 * gp + 0.001 * d_real**2).mean(), rtol=1e-5, atol=1e-5)
    with_wrong, stats = discriminator_loss(D, real, fake, 0.0, mix, cfg, cond, wrong, mask)
    d_wrong = D(real, 0.0, wrong)[:, 0]
    term = (d_wrong - d_real + 0.001 * d_wrong**2) * mask
    torch.testing.assert_close(with_wrong - base, 0.5 * term.mean(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats["d_wrong"], d_wrong.mean())
    # the mismatch term trains the projection only: psi(h) cancels in d_wrong - d_real
    D.zero_grad()
    (with_wrong - base).backward()
    assert D.project.weight.grad.abs().sum() > 0
    assert D.dense1.weight.grad.abs().sum() < 1e-3 * D.project.weight.grad.abs().sum()


def test_kl_divergence_and_generator_text_loss():
    mu, log_sigma = torch.randn(5, 4), torch.randn(5, 4) * 0.3
    prior = torch.distributions.Normal(torch.zeros(5, 4), torch.ones(5, 4))
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu, log_sigma.exp()), prior).mean(1)
    torch.testing.assert_close(kl_divergence(mu, log_sigma), expected)
    assert kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0

    torch.manual_seed(0)
    G, D = Generator(TEXT), Discriminator(TEXT)
    z, cond, noise = torch.randn(4, 8), unit_rows(4, 6), torch.randn(4, 4)
    fake = G(z, 0.0, cond, noise)
    ca = G.condition_code(cond, noise)[1:]
    loss = generator_loss(D, fake, 0.0, LossConfig(kl_weight=2.0), cond, ca)
    torch.testing.assert_close(loss, (-D(fake, 0.0, cond)[:, 0] + 2.0 * kl_divergence(*ca)).mean())
    D.requires_grad_(False)
    loss.backward()
    assert G.ca.weight.grad.abs().sum() > 0 and G.blocks[0].conv0.weight.grad.abs().sum() > 0


def test_gradients_reach_the_conditional_weights():
    torch.manual_seed(0)
    G, D = Generator(CLASSES), Discriminator(CLASSES)
    z, cond = torch.randn(4, 8), torch.eye(3)[[0, 1, 2, 1]]
    real, mix = torch.randn(4, 3, 8, 8), torch.rand(4, 1, 1, 1)
    loss, _ = discriminator_loss(D, real, G(z, 0.0, cond).detach(), 0.0, mix, LossConfig(), cond)
    loss.backward()
    assert D.dense1.weight.grad[1:].abs().sum() > 0  # the class logits learn
    assert G.dense.weight.grad is None  # fakes detached: D's step leaves G alone
    D.requires_grad_(False)
    generator_loss(D, G(z, 0.0, cond), 0.0, LossConfig(), cond).backward()
    assert G.dense.weight.grad[:, 8:].abs().sum() > 0  # the one-hot columns of G's first layer


def test_a_condition_mapping_sits_before_the_caption_code_and_learns():
    import dataclasses
    mapped = dataclasses.replace(TEXT, cond_mlp=2)
    torch.manual_seed(0)
    G, D = Generator(mapped), Discriminator(mapped)
    cond = unit_rows(64, 6, seed=1)
    hidden = G.cond_map(cond).detach()
    assert hidden.shape == (64, 256) and 0.5 < float(hidden.std()) < 2.0  # unit scale, as the linear code's input
    mu = G.condition_code(cond)[1].detach()
    assert 0.5 < float(mu.std()) < 2.0  # mu starts at unit scale, as without the mapping
    z = torch.randn(4, 8)
    D.requires_grad_(False)
    generator_loss(D, G(z, 0.0, cond[:4]), 0.0, LossConfig(), cond[:4]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.cond_map.parameters())
    assert set(D.state_dict()) == set(Discriminator(TEXT).state_dict())  # D's projection stays linear
    # Without it, the networks hold exactly the weights they always did, so earlier models load unchanged.
    plain = set(Generator(TEXT).state_dict()) | set(Discriminator(TEXT).state_dict())
    assert not any("cond_map" in k for k in plain)
    with pytest.raises(ConfigError, match="needs model.text_size and model.ca_size"):
        dataclasses.replace(TEXT, ca_size=0, cond_mlp=2).validate()


# --- a step's conditions ----------------------------------------------------------------------------------------

def train_cfg(model, **loss):
    return TrainConfig(model=model, loss=LossConfig(**loss))


def test_condition_table_checks_the_dataset():
    table = condition_table(CLASSES, [0, 2, 1], 3)
    torch.testing.assert_close(table, torch.eye(3)[[0, 2, 1]])
    with pytest.raises(ConfigError, match="model has 3 classes but data/x has 4"):
        condition_table(CLASSES, [0, 1], 4, source="data/x")
    with pytest.raises(ConfigError, match="no labels"):
        condition_table(CLASSES, None, 0)
    with pytest.raises(ConfigError, match=r"in \[0, 3\)"):
        condition_table(CLASSES, [0, 3], 3)
    with pytest.raises(ConfigError, match="no caption embeddings"):
        condition_table(TEXT, embeddings=None)
    with pytest.raises(ConfigError, match="size 6"):
        condition_table(TEXT, embeddings=torch.randn(5, 7))
    raw = torch.randn(5, 6) * 3
    raw[2] = 0  # an image without a caption
    emb = condition_table(TEXT, embeddings=raw)
    torch.testing.assert_close(emb.norm(dim=1), torch.tensor([1.0, 1, 0, 1, 1]))
    with pytest.raises(ConfigError, match="no image has a caption"):
        condition_table(TEXT, embeddings=torch.zeros(3, 6))
    # an uncaptioned image neither gets a wrong caption nor serves as one
    c = step_conditions(emb, torch.arange(5).repeat(8), torch.Generator().manual_seed(0), train_cfg(TEXT))
    assert not c.wrong_mask[2::5].any() and c.wrong_mask.any()
    assert (c.wrong[c.wrong_mask].norm(dim=1) > 0.5).all()
    assert condition_table(ModelConfig(**BASE), [0, 1], 2) is None  # an unconditional model ignores labels


def test_model_config_validation():
    with pytest.raises(ConfigError, match="classes or on text, not both"):
        ModelConfig(**BASE, num_classes=3, text_size=6).validate()
    with pytest.raises(ConfigError, match="needs model.text_size"):
        ModelConfig(**BASE, ca_size=4).validate()
    with pytest.raises(ConfigError, match="unconditional"):
        ModelConfig(**BASE, cond_fade_start=8).validate()
    with pytest.raises(ConfigError, match="8 <= start <= end"):
        ModelConfig(**BASE, num_classes=3, cond_fade_start=4).validate()
    with pytest.raises(ConfigError, match="8 <= start <= end"):
        ModelConfig(**BASE, num_classes=3, cond_fade_start=8, cond_fade_end=16).validate()
    ModelConfig(**BASE, text_size=6, ca_size=4, cond_fade_start=8).validate()
    with pytest.raises(ConfigError, match="gan_int"):
        LossConfig(gan_int=1.5).validate()
    with pytest.raises(ConfigError, match="cond_weight"):
        LossConfig(cond_weight=-1).validate()
    LossConfig().validate()


def test_class_step_conditions():
    labels = torch.tensor([0] * 90 + [1] * 10)
    table = condition_table(CLASSES, labels, 3)
    idx = torch.tensor([3, 95, 7, 99])
    c = step_conditions(table, idx, torch.Generator().manual_seed(0), train_cfg(CLASSES))
    torch.testing.assert_close(c.real, table[idx])  # D's fakes are generated from the reals' rows
    assert c.wrong is None and c.noise_d is None
    # G's rows follow the dataset's own label distribution
    draws = torch.cat([step_conditions(table, idx, torch.Generator().manual_seed(s), train_cfg(CLASSES)).fake
                       for s in range(300)])
    assert draws.sum(1).eq(1).all() and draws[:, 2].sum() == 0
    assert 0.85 < draws[:, 0].mean() < 0.95


def test_text_step_conditions_mismatches_and_mixes():
    # 12 images in 4 groups of 3 (say an emoji and two of its skin tones: the same thing, not a mismatch)
    group = torch.arange(12) // 3
    table = condition_table(TEXT, embeddings=unit_rows(12, 6))
    different = group[:, None] != group[None, :]
    idx = torch.arange(12).repeat(4)[:48]
    cfg = train_cfg(TEXT, gan_int=0.5)
    c = step_conditions(table, idx, torch.Generator().manual_seed(0), cfg, different=different)
    torch.testing.assert_close(c.real, table[idx])
    assert c.wrong_mask.all()
    wrong_idx = (c.wrong @ table.T).argmax(1)  # rows are table rows: recover their image
    torch.testing.assert_close(c.wrong, table[wrong_idx])
    assert (group[wrong_idx] != group[idx]).all()
    # the same with a function in place of the matrix
    c2 = step_conditions(table, idx, torch.Generator().manual_seed(0), cfg,
                         different=lambda a, b: group[a] != group[b])
    torch.testing.assert_close(c2.wrong, c.wrong, rtol=0, atol=0)
    # without a rule, only identical rows are "the same"
    assert (pairs_differ(table, idx, idx) == 0).all() and pairs_differ(table, idx, idx.roll(1)).all()
    # GAN-INT: about half of G's rows are convex mixes of two captions (norm < 1), the rest captions themselves
    is_caption = (c.fake @ table.T).amax(1) > 1 - 1e-5
    assert 10 < (~is_caption).sum() < 38
    assert (c.fake.norm(dim=1) <= 1 + 1e-5).all()
    none = step_conditions(table, idx, torch.Generator().manual_seed(0), train_cfg(TEXT, gan_int=0.0))
    assert ((none.fake @ table.T).amax(1) > 1 - 1e-5).all()
    assert c.noise_d.shape == c.noise_g.shape == (48, 4) and not torch.equal(c.noise_d, c.noise_g)


def test_no_really_different_candidate_is_masked():
    table = condition_table(TEXT, embeddings=unit_rows(4, 6))
    same = torch.zeros(4, 4, dtype=torch.bool)
    c = step_conditions(table, torch.arange(4), torch.Generator().manual_seed(0), train_cfg(TEXT), different=same)
    assert not c.wrong_mask.any()
    with pytest.raises(ValueError, match="bool"):
        step_conditions(table, torch.arange(4), torch.Generator().manual_seed(0), train_cfg(TEXT),
                        different=same.float())


def test_step_conditions_are_deterministic_and_split_across_ranks():
    table = condition_table(TEXT, embeddings=unit_rows(20, 6))
    cfg = train_cfg(TEXT)
    idx = torch.randint(20, (8,), generator=torch.Generator().manual_seed(1))
    one = step_conditions(table, idx, torch.Generator().manual_seed(5), cfg)
    again = step_conditions(table, idx, torch.Generator().manual_seed(5), cfg)
    other = step_conditions(table, idx, torch.Generator().manual_seed(6), cfg)
    ranks = [step_conditions(table, idx[r * 4:(r + 1) * 4], torch.Generator().manual_seed(5), cfg, world_size=2,
                             rank=r) for r in range(2)]
    for name in ("real", "fake", "noise_d", "noise_g", "wrong", "wrong_mask"):
        a, b = getattr(one, name), getattr(again, name)
        assert torch.equal(a, b), name
        assert torch.equal(torch.cat([getattr(r, name) for r in ranks]), a), name
    assert not torch.equal(one.fake, other.fake)


def test_conditioned_blocks_start_as_identity_and_then_follow_the_condition():
    torch.manual_seed(0)
    plain = Generator(TEXT)
    torch.manual_seed(0)
    film = Generator(dataclasses.replace(TEXT, cond_blocks=True))
    film.load_state_dict(plain.state_dict(), strict=False)
    z, cond, noise = torch.randn(4, 8), unit_rows(4, 6), torch.randn(4, 4)
    torch.testing.assert_close(film(z, 0.5, cond, noise), plain(z, 0.5, cond, noise))  # zero-initialised: identity
    with torch.no_grad():
        for layer in film.modulate:
            layer.weight.normal_()
    other = unit_rows(4, 6, seed=9)
    x4 = film.embed(z, other)  # the same 4x4 input: only the blocks see a different condition
    a = film.synthesize(x4, 1, 1.0, film.style(cond))
    b = film.synthesize(x4, 1, 1.0, film.style(other))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(film(z, 0.0, cond), film.synthesize(film.embed(z, cond), 1, 1.0, film.style(cond)))
    with pytest.raises(ValueError, match="pass style=G.style"):
        film.synthesize(x4, 1)
    with pytest.raises(ConfigError, match="cond_blocks"):
        ModelConfig(**BASE, cond_blocks=True).validate()
    # Its gradients reach the blocks' condition layers.
    film(z, 0.0, cond, noise).square().mean().backward()
    assert all(layer.weight.grad.abs().sum() > 0 for layer in film.modulate[:2])


def test_caption_variants_are_drawn_per_image_and_step():
    table = condition_table(TEXT, embeddings=unit_rows(6, 6))
    counts = torch.tensor([3, 1, 0, 2, 4, 1])  # image 2 has none: its own caption's row stands in
    rows = unit_rows(int(counts.sum()), 6, seed=3)
    variants = CaptionVariants(rows, torch.cumsum(counts, 0) - counts, counts)
    cfg = train_cfg(TEXT, gan_int=0.0)
    own = {i: rows[int(counts[:i].sum()):int(counts[:i + 1].sum())] for i in range(6)}
    idx = torch.arange(6).repeat(4)
    seen = {i: set() for i in range(6)}
    for seed in range(20):
        c = step_conditions(table, idx, torch.Generator().manual_seed(seed), cfg, variants=variants)
        for i, row in zip(idx.tolist(), c.real):
            if counts[i] == 0:
                assert torch.equal(row, table[i])
            else:
                match = (own[i] - row).abs().amax(dim=1) == 0
                assert match.any(), i
                seen[i].add(int(match.nonzero()[0]))
        assert all(((rows - w).abs().amax(dim=1) == 0).any() or (table - w).abs().amax(dim=1).min() == 0
                   for w in c.wrong)  # a wrong caption is some image's variant (or caption) too
    assert {i: len(v) for i, v in seen.items()} == {0: 3, 1: 1, 2: 0, 3: 2, 4: 4, 5: 1}  # every variant drawn
    # Split across ranks, the draws are those of one process.
    one = step_conditions(table, idx[:8], torch.Generator().manual_seed(5), cfg, variants=variants)
    ranks = [step_conditions(table, idx[r * 4:(r + 1) * 4], torch.Generator().manual_seed(5), cfg, 2, r,
                             variants=variants) for r in range(2)]
    for name in ("real", "fake", "wrong"):
        assert torch.equal(torch.cat([getattr(r, name) for r in ranks]), getattr(one, name)), name
    # Without variants, the draws are exactly those of a run that never had them.
    plain = step_conditions(table, idx, torch.Generator().manual_seed(5), cfg)
    assert torch.equal(plain.real, table[idx])


def test_projection_score_stays_float32_under_bf16_autocast():
    torch.manual_seed(0)
    D = Discriminator(TEXT)
    img, cond = torch.randn(8, 3, 8, 8), unit_rows(8, 6)
    full = D(img, 0.0, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = D(img, 0.0, cond)
    assert half.dtype == torch.float32
    assert (half - full).norm() < 0.05 * full.norm()


# --- a training step --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [CLASSES, TEXT], ids=["classes", "text"])
def test_conditional_train_step(model):
    """One D and one G step of a conditional model, twice from the same state: finite, the conditional weights
    move, and bit for bit the same (every draw comes from the step's generators)."""
    from progan.schedule import phase_at
    from progan.train.distributed import Ranks
    from progan.train.loop import build_state, train_step

    cfg = TrainConfig(model=model)
    cfg.schedule.batch = {4: 8}
    phase = phase_at(0, model.resolution, cfg.schedule)
    count = 12
    if model.num_classes:
        table = condition_table(model, torch.arange(count) % 3, 3)
    else:
        table = condition_table(model, embeddings=torch.randn(count, 6, generator=torch.Generator().manual_seed(2)))
    idx = torch.arange(8)
    real = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def step():
        state = build_state(cfg, torch.device("cpu"))
        before = {f"{net}.{n}": p.clone() for net, m in (("G", state.G), ("D", state.D))
                  for n, p in m.named_parameters()}
        conds = step_conditions(table, idx, torch.Generator().manual_seed(3), cfg)
        stats = train_step(state, phase, real, cfg, Ranks(), conds)
        return state, before, stats

    (a, before, stats), (b, _, stats_b) = step(), step()
    assert stats["ok"] and all(torch.isfinite(v).all() for k, v in stats.items() if k != "ok")
    assert all(torch.equal(stats[k], stats_b[k]) for k in stats if k != "ok")
    assert all(torch.equal(p, q) for p, q in zip(a.G.parameters(), b.G.parameters()))
    moved = "dense1.weight" if model.num_classes else "project.weight"
    assert not torch.equal(a.D.state_dict()[moved], before[f"D.{moved}"])
    if model.text_size:
        assert "d_wrong" in stats and not torch.equal(a.G.ca.weight, before["G.ca.weight"])
    else:
        assert "ce_real" in stats
