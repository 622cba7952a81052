"""WGAN-GP with the drift term, as the paper trains it. Every term is per sample, then averaged."""

from __future__ import annotations

import torch

from progan.config import LossConfig


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor, lod: float, mix: torch.Tensor,
                     gamma: float) -> torch.Tensor:
    """(||grad D(x_hat)|| - gamma)^2 / gamma^2 per sample, x_hat = lerp(real, fake, mix) with mix ~ U(0, 1) per sample.

    create_graph=True so that the penalty itself is differentiated w.r.t. D's weights (the double backward).
    """
    x_hat = torch.lerp(real, fake, mix).requires_grad_(True)
    score = D(x_hat, lod)[:, 0]
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(dim=1)
    return (norm - gamma).square() / gamma**2


def discriminator_loss(D, real: torch.Tensor, fake: torch.Tensor, lod: float, mix: torch.Tensor,
                       cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_D = D(fake) - D(real) + lambda * GP + drift * D(real)^2.

    Reals, fakes and their mix go through D in separate calls, as in the official code: a minibatch-stddev group
    then never holds a real and a fake (whose stddev would look diverse however collapsed G is), and every call
    sees the per-process batch that `TrainConfig.check_batches` validated.
    """
    d_real = D(real, lod)[:, 0].float()
    d_fake = D(fake, lod)[:, 0].float()
    gp = gradient_penalty(D, real, fake, lod, mix, cfg.gp_gamma)
    loss = (d_fake - d_real + cfg.gp_lambda * gp + cfg.drift * d_real.square()).mean()
    stats = {"d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach(), "gp": gp.mean().detach()}
    return loss, stats


def generator_loss(D, fake: torch.Tensor, lod: float) -> torch.Tensor:
    """L_G = -D(G(z))."""
    return -D(fake, lod)[:, 0].float().mean()
