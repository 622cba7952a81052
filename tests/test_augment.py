"""DiffAugment (progan/augment.py) and lazy regularisation (LossConfig.gp_every): each transform against a hand
computation, the rank slicing, and what the training step does with them."""

import json

import pytest
import torch

from progan.augment import TRANSFORMS, Draws, augment, color, cutout, translation
from progan.cli import main
from progan.config import AUGMENTATIONS, ConfigError, LossConfig, ModelConfig, parse_augment
from progan.presets import preset
from progan.losses import discriminator_loss, gradient_penalty
from progan.networks import Discriminator
from progan.train import loop


class FixedDraws(Draws):
    """Draws that return given values in order, so a transform can be checked by hand."""

    def __init__(self, uniforms=(), integers=()):
        self.uniforms, self.ints = list(uniforms), list(integers)

    def uniform(self, *shape):
        return self.uniforms.pop(0).view(-1, *shape)

    def integers(self, low, high):
        value = self.ints.pop(0)
        assert ((low <= value) & (value < high)).all()
        return value.view(-1, 1, 1)


def test_parse_augment_names_what_is_unknown():
    assert tuple(TRANSFORMS) == AUGMENTATIONS  # every name the config accepts has its transform
    assert parse_augment("") == ()
    assert parse_augment(" color , cutout") == ("color", "cutout")
    with pytest.raises(ConfigError, match="'rotate'.*color, translation, cutout"):
        parse_augment("color,rotate")
    cfg = preset("tiny", 8)
    cfg.augment = "flip"
    with pytest.raises(ConfigError, match="augment: unknown augmentation 'flip'"):
        cfg.validate()


def test_empty_policy_is_the_identity_and_draws_nothing():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 8, 8)
    assert augment(x, (), Draws(gen, 4, slice(0, 4), x.device)) is x
    assert torch.equal(torch.rand(2, generator=gen), torch.rand(2, generator=torch.Generator().manual_seed(3)))


def test_translation_shifts_whole_pixels_and_fills_zeros():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8) + 1
    # the ratio 1/8 allows shifts of -1, 0, 1 at 8x8; image 0 moves by (ty, tx) = (1, -1), image 1 stays
    out = translation(x, FixedDraws(integers=[torch.tensor([1, 0]), torch.tensor([-1, 0])]))
    assert torch.equal(out[1], x[1])
    expected = torch.zeros(8, 8)
    expected[:7, 1:] = x[0, 0, 1:, :7]  # out[i, j] = x[i + ty, j + tx], zero where that is outside
    assert torch.equal(out[0, 0], expected)


def test_cutout_zeroes_one_square_of_half_the_side():
    x = torch.ones(2, 3, 8, 8)
    out = cutout(x, FixedDraws(integers=[torch.tensor([4, 0]), torch.tensor([4, 0])]))
    # image 0: a 4x4 square centred at (4, 4) covers rows and columns 2..5; image 1's overhangs the corner
    assert torch.equal(out[0, :, 2:6, 2:6], torch.zeros(3, 4, 4))
    assert int((out[0] == 0).sum()) == 3 * 16
    assert int((out[1, 0] == 0).sum()) == 4 and torch.equal(out[1, :, :2, :2], torch.zeros(3, 2, 2))


def test_color_by_hand():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    half = torch.full((2,), 0.5)
    assert torch.allclose(color(x, FixedDraws(uniforms=[half, half, half])), x)  # +0, x1, x1: unchanged
    b, s, c = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    out = color(x, FixedDraws(uniforms=[b, s, c]))
    grey = (x[0] + 0.5).mean(0, keepdim=True).expand(3, 4, 4)  # +0.5, saturation 0, contrast x1.5 round the mean
    torch.testing.assert_close(out[0], (grey - grey.mean()) * 1.5 + grey.mean())
    y = x[1] - 0.5  # -0.5, saturation x2 round the channel mean, contrast x0.5 round the image mean
    y = (y - y.mean(0, keepdim=True)) * 2 + y.mean(0, keepdim=True)
    torch.testing.assert_close(out[1], (y - y.mean()) * 0.5 + y.mean())


def test_augment_is_differentiable():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    augment(x, parse_augment("color,translation,cutout"), Draws(gen, 4, slice(0, 4), x.device)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ranks_augment_their_rows_of_the_global_draw():
    """Two processes, each augmenting its half with the same step generator, give what one process gives."""
    x = torch.randn(8, 3, 16, 16)
    policy = parse_augment("color,translation,cutout")
    whole = augment(x, policy, Draws(torch.Generator().manual_seed(5), 8, slice(0, 8), x.device))
    halves = [augment(x[r * 4:(r + 1) * 4], policy,
                      Draws(torch.Generator().manual_seed(5), 8, slice(r * 4, (r + 1) * 4), x.device))
              for r in range(2)]
    assert torch.equal(torch.cat(halves), whole)


# --- lazy regularisation ----------------------------------------------------------------------------------------

def test_penalty_every_kth_step_weighted_k():
    cfg = preset("tiny", 8)
    assert [loop.penalty_scale(i * 8, 8, cfg) for i in range(4)] == [1, 1, 1, 1]
    cfg.loss.gp_every = 4
    assert [loop.penalty_scale(i * 8, 8, cfg) for i in range(8)] == [4, 0, 0, 0, 4, 0, 0, 0]
    with pytest.raises(ConfigError, match="gp_every"):
        LossConfig(gp_every=0).validate()


def test_discriminator_loss_penalty_scale():
    torch.manual_seed(0)
    D = Discriminator(ModelConfig(resolution=8, latent_size=8, fmap_base=32, fmap_max=8, mbstd_group=4))
    real, fake, mix = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.rand(4, 1, 1, 1)
    cfg = LossConfig()
    d_real, d_fake = D(real, 0.0)[:, 0], D(fake, 0.0)[:, 0]
    gp = gradient_penalty(D, real, fake, 0.0, mix, 1.0)
    skipped, stats = discriminator_loss(D, real, fake, 0.0, mix, cfg, penalty_scale=0)
    torch.testing.assert_close(skipped, (d_fake - d_real + 0.001 * d_real**2).mean())
    assert "gp" not in stats
    heavy, stats = discriminator_loss(D, real, fake, 0.0, mix, cfg, penalty_scale=4)
    torch.testing.assert_close(heavy, (d_fake - d_real + 40 * gp + 0.001 * d_real**2).mean())
    torch.testing.assert_close(stats["gp"], gp.mean().detach())


def test_tick_averages_a_lazy_term_over_the_steps_that_have_it():
    from progan.train.distributed import init_from_env
    from progan.schedule import phase_at
    cfg = preset("tiny", 8)
    state = loop.build_state(cfg, torch.device("cpu"))
    tick = loop.Tick(0)
    tick.add({"loss_d": torch.tensor(1.0), "gp": torch.tensor(6.0), "ok": True})
    tick.add({"loss_d": torch.tensor(3.0), "ok": True})
    record = tick.close(state, phase_at(0, 8, cfg.schedule), init_from_env("cpu"))
    assert record["loss_d"] == 2.0 and record["gp"] == 6.0


# --- through the CLI --------------------------------------------------------------------------------------------

def train_tiny(data, run, *flags):
    main(["train", "--data", data, "--run", str(run), "--preset", "tiny", "--resolution", "8", "--quiet",
          "--device", "cpu", *flags])
    return json.loads((run / "config.json").read_text())


def final_weights(run):
    from progan.train.checkpoint import list_checkpoints
    from safetensors.torch import load_file
    return load_file(str(list_checkpoints(run)[-1] / "G.safetensors"))


def test_augmented_lazy_run_is_reproducible_and_differs_from_the_plain_one(tiny_dataset, tmp_path):
    flags = ["--augment", "color,translation,cutout", "--gp-every", "2"]
    cfg = train_tiny(tiny_dataset, tmp_path / "a", *flags)
    assert cfg["augment"] == "color,translation,cutout" and cfg["loss"]["gp_every"] == 2
    train_tiny(tiny_dataset, tmp_path / "b", *flags)
    train_tiny(tiny_dataset, tmp_path / "plain")
    a, b, plain = (final_weights(tmp_path / n) for n in ("a", "b", "plain"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], plain[k]) for k in a)
    stats = [json.loads(line) for line in (tmp_path / "a" / "stats.jsonl").read_text().splitlines()]
    assert stats and all(torch.isfinite(torch.tensor(s["gp"])) for s in stats)


def test_the_step_shows_D_augmented_images(tiny_dataset, monkeypatch):
    """With a policy, D's inputs in both steps are transformed reals and fakes; without, the untouched ones."""
    seen = []
    real_loss, real_gen_loss = loop.discriminator_loss, loop.generator_loss

    def spy_d(D, real, fake, *args, **kwargs):
        seen.append(("d", real.detach().clone()))
        return real_loss(D, real, fake, *args, **kwargs)

    def spy_g(D, fake, *args, **kwargs):
        seen.append(("g", fake.detach().clone()))
        return real_gen_loss(D, fake, *args, **kwargs)

    monkeypatch.setattr(loop, "discriminator_loss", spy_d)
    monkeypatch.setattr(loop, "generator_loss", spy_g)
    from progan.schedule import phase_at
    from progan.train.distributed import init_from_env
    real = torch.rand(8, 3, 4, 4) * 2 - 1
    for policy in ("", "cutout"):
        cfg = preset("tiny", 8)
        cfg.augment = policy
        state = loop.build_state(cfg, torch.device("cpu"))
        loop.train_step(state, phase_at(0, 8, cfg.schedule), real, cfg, init_from_env("cpu"))
    (_, d_plain), _, (_, d_aug), (_, g_aug) = seen
    assert torch.equal(d_plain, real)
    # cutout at 4x4: a 2x2 square of zeros per image (whole, or clipped at the border)
    assert not torch.equal(d_aug, real) and ((d_aug == 0).flatten(1).sum(1) >= 3).all()
    assert ((g_aug == 0).flatten(1).sum(1) >= 3).all()


def test_logistic_r1_run_through_the_cli(tiny_dataset, tmp_path):
    cfg = train_tiny(tiny_dataset, tmp_path / "a", "--loss", "logistic", "--r1-gamma", "0.1", "--gp-every", "2",
                     "--gp-gamma", "750")
    assert cfg["loss"]["kind"] == "logistic" and cfg["loss"]["r1_gamma"] == 0.1 and cfg["loss"]["gp_gamma"] == 750
    stats = [json.loads(line) for line in (tmp_path / "a" / "stats.jsonl").read_text().splitlines()]
    assert stats and all("gp" not in s and s["r1"] >= 0 for s in stats)
    assert all(torch.isfinite(torch.tensor([s["loss_d"], s["loss_g"]])).all() for s in stats)
