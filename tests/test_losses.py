import torch

from progan.config import LossConfig, ModelConfig
from progan.losses import discriminator_loss, generator_loss, gradient_penalty
from progan.networks import Discriminator

CFG = ModelConfig(resolution=8, latent_size=8, fmap_base=32, fmap_max=8, mbstd_group=4)


def test_gradient_penalty_matches_direct_autograd():
    torch.manual_seed(0)
    D = Discriminator(CFG)
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    mix = torch.rand(4, 1, 1, 1)
    gp = gradient_penalty(D, real, fake, 0.0, mix, gamma=1.0)
    # direct: per-sample gradient norms of D at x_hat, one sample at a time is NOT equivalent (minibatch stddev
    # couples samples), so differentiate the summed score w.r.t. the whole batch, exactly as defined
    x_hat = (real + (fake - real) * mix).detach().requires_grad_(True)
    D(x_hat, 0.0)[:, 0].sum().backward()
    expected = (x_hat.grad.flatten(1).norm(dim=1) - 1.0) ** 2
    torch.testing.assert_close(gp, expected, rtol=1e-5, atol=1e-6)
    # gamma rescales as (norm - gamma)^2 / gamma^2
    gp750 = gradient_penalty(D, real, fake, 0.0, mix, gamma=750.0)
    torch.testing.assert_close(gp750, (x_hat.grad.flatten(1).norm(dim=1) - 750.0) ** 2 / 750.0**2)


def test_gradient_penalty_is_differentiable_wrt_weights():
    D = Discriminator(CFG)
    gp = gradient_penalty(D, torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), 0.0, torch.rand(4, 1, 1, 1), 1.0)
    gp.mean().backward()
    assert D.from_rgb[1].weight.grad is not None and D.from_rgb[1].weight.grad.abs().sum() > 0


def test_discriminator_loss_terms():
    torch.manual_seed(0)
    D = Discriminator(CFG)
    real, fake, mix = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.rand(4, 1, 1, 1)
    cfg = LossConfig(gp_lambda=10, gp_gamma=1, drift=0.001)
    loss, stats = discriminator_loss(D, real, fake, 0.0, mix, cfg)
    # reals and fakes scored in one batch equal separate passes: groups never mix reals and fakes
    d_real, d_fake = D(real, 0.0)[:, 0], D(fake, 0.0)[:, 0]
    gp = gradient_penalty(D, real, fake, 0.0, mix, 1.0)
    expected = (d_fake - d_real + 10 * gp + 0.001 * d_real**2).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["d_real"], d_real.mean().detach())
    torch.testing.assert_close(generator_loss(D, fake, 0.0), -d_fake.mean())


def test_bf16_autocast_step_agrees_with_float32():
    """What --bf16 does on CUDA, run under the CPU's autocast: every D and G gradient (penalty's double backward
    included) within bf16 rounding of float32, and the critic's score kept in float32."""
    import copy

    from progan.networks import Generator
    cfg = ModelConfig(resolution=16, latent_size=16, fmap_base=128, fmap_max=32, mbstd_group=4)
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    z, real, mix = torch.randn(16, 16), torch.rand(16, 3, 16, 16) * 2 - 1, torch.rand(16, 1, 1, 1)

    def grads(bf16: bool):
        g, d = copy.deepcopy(G), copy.deepcopy(D)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                fake = g(z, 0.5)
            loss_d, _ = discriminator_loss(d, real, fake.float(), 0.5, mix, LossConfig())
            score = d(real, 0.5)
        loss_d.backward()
        d.requires_grad_(False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss_g = generator_loss(d, g(z, 0.5), 0.5)
        loss_g.backward()
        named = [(f"D.{n}", p.grad) for n, p in d.named_parameters()]
        named += [(f"G.{n}", p.grad) for n, p in g.named_parameters()]
        return fake.dtype, score.dtype, {n: gr for n, gr in named if gr is not None}

    fake32, score32, full = grads(False)
    fake16, score16, half = grads(True)
    assert (fake32, fake16, score16) == (torch.float32, torch.bfloat16, torch.float32)
    assert full.keys() == half.keys() and len(full) > 20
    errors = {name: float((half[name] - g).norm() / g.norm()) for name, g in full.items()}
    # bf16 keeps 8 bits: a few % per tensor, ~10% after G's whole backward; an unscaled or cancelled term is 100%
    assert max(errors.values()) < 0.25, max(errors.items(), key=lambda kv: kv[1])
    assert sorted(errors.values())[len(errors) // 2] < 0.05


def test_logistic_loss_with_r1_by_hand():
    import pytest
    import torch.nn.functional as F

    from progan.config import ConfigError
    torch.manual_seed(0)
    D = Discriminator(CFG)
    real, fake, mix = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.rand(4, 1, 1, 1)
    cfg = LossConfig(kind="logistic", r1_gamma=0.5)
    loss, stats = discriminator_loss(D, real, fake, 0.0, mix, cfg)
    x = real.clone().requires_grad_(True)
    D(x, 0.0)[:, 0].sum().backward()
    r1 = x.grad.flatten(1).square().sum(1)
    d_real, d_fake = D(real, 0.0)[:, 0], D(fake, 0.0)[:, 0]
    expected = (F.softplus(d_fake) + F.softplus(-d_real) + 0.25 * r1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["r1"], r1.mean())
    assert "gp" not in stats
    torch.testing.assert_close(generator_loss(D, fake, 0.0, cfg), F.softplus(-d_fake).mean())
    # lazy: the penalty's weight scales, skipped at 0
    lazy, _ = discriminator_loss(D, real, fake, 0.0, mix, cfg, penalty_scale=0)
    torch.testing.assert_close(lazy, (F.softplus(d_fake) + F.softplus(-d_real)).mean())
    with pytest.raises(ConfigError, match="loss.kind must be one of wgan-gp, logistic, got 'hinge'"):
        LossConfig(kind="hinge").validate()
