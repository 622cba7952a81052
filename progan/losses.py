"""WGAN-GP with the drift term, as the paper trains it, and the conditional terms. Every term is per sample, then
averaged.

LossConfig.kind "logistic" swaps the adversarial terms for the non-saturating logistic loss with the R1 penalty on
reals (StyleGAN's; Mescheder et al. 2018): softplus(D(fake)) + softplus(-D(real)) + r1_gamma / 2 * ||grad D(real)||^2
for D, softplus(-D(G(z))) for G. An option for short CPU runs; the paper's presets keep WGAN-GP.

Conditioning (networks.py): `cond` holds float rows, one per image.
- Classes (D.num_classes): the official AC-GAN. D's extra outputs are class logits trained with softmax cross-entropy
  on the reals' labels for the reals and for fakes generated from those labels; G's loss adds the cross-entropy of
  its fakes' logits against the labels they were generated from (drawn from the dataset). Rows may be soft.
- Text (D.text_size): D is a projection critic that takes the caption embedding. D also scores the reals with a
  mismatched caption (`wrong_cond`) as fakes (matching-aware, GAN-CLS); G's loss adds the conditioning
  augmentation's KL divergence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from progan.config import LossConfig
from progan.lod import condition_weight


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor, lod: float, mix: torch.Tensor,
                     gamma: float, cond: torch.Tensor | None = None) -> torch.Tensor:
    """(||grad D(x_hat)|| - gamma)^2 / gamma^2 per sample, x_hat = lerp(real, fake, mix) with mix ~ U(0, 1) per sample.

    The score only (never class logits); a projection critic scores x_hat with the reals' captions `cond`.
    create_graph=True so that the penalty itself is differentiated w.r.t. D's weights (the double backward).
    """
    x_hat = torch.lerp(real, fake, mix).requires_grad_(True)
    score = D(x_hat, lod, cond)[:, 0]
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(dim=1)
    return (norm - gamma).square() / gamma**2


def r1_penalty(D, real: torch.Tensor, lod: float, cond: torch.Tensor | None = None) -> torch.Tensor:
    """||grad D(real)||^2 per sample (Mescheder et al. 2018): the logistic loss's regulariser, on the reals only."""
    real = real.detach().requires_grad_(True)
    score = D(real, lod, cond)[:, 0]
    (grad,) = torch.autograd.grad(score.sum(), real, create_graph=True)
    return grad.float().flatten(1).square().sum(dim=1)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy per sample against target rows (one-hot or soft), as the official
    tf.nn.softmax_cross_entropy_with_logits."""
    return -(target.float() * torch.log_softmax(logits.float(), dim=1)).sum(dim=1)


def kl_divergence(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per sample, averaged over the code's dimensions as in StackGAN's reference code
    (KL_loss takes the mean over every element): the conditioning augmentation's regulariser. Summed over the
    dimensions instead, the KL outweighed the adversarial term by the code size and pulled mu to 0: G got noise
    in place of its condition and learnt to ignore it."""
    mu, log_sigma = mu.float(), log_sigma.float()
    return (0.5 * (mu.square() + (2 * log_sigma).exp() - 1) - log_sigma).mean(dim=1)


def _conditions(D, cond: torch.Tensor | None) -> torch.Tensor | None:
    """What D takes besides the images: the caption rows for a projection critic; nothing for an AC-GAN one (it
    predicts the class) or an unconditional one."""
    if (D.num_classes or D.text_size) and cond is None:
        raise ValueError("a conditional D's loss needs cond, the rows the images were generated from")
    return cond if D.text_size else None


def discriminator_loss(D, real: torch.Tensor, fake: torch.Tensor, lod: float, mix: torch.Tensor,
                       cfg: LossConfig, cond: torch.Tensor | None = None, wrong_cond: torch.Tensor | None = None,
                       wrong_mask: torch.Tensor | None = None, penalty_scale: float = 1.0
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_D = D(fake) - D(real) + penalty_scale * lambda * GP + drift * D(real)^2, and for a conditional D:
    - classes: + cond_weight * w * [CE(real logits, cond) + CE(fake logits, cond)], the fakes generated from `cond`;
    - text: every score takes `cond`; + mismatch_weight * [D(real, wrong_cond) - D(real) + drift * D(real,
      wrong_cond)^2] on the rows of `wrong_mask` (default all), wrong_cond a caption that does not match the image.
    w is the transitional condition weight at `lod` (1 unless configured); the projection applies it inside D.
    penalty_scale 0 skips the penalty's computation (lazy regularisation: LossConfig.gp_every).

    Reals, fakes and their mix go through D in separate calls, as in the official code: a minibatch-stddev group
    then never holds a real and a fake (whose stddev would look diverse however collapsed G is), and every call
    sees the per-process batch that `TrainConfig.check_batches` validated. The mismatched pairs reuse the reals'
    features (D's features never see the caption): the same sums as a fourth call through D, without its cost.
    """
    c = _conditions(D, cond)
    h_real = D.features(real, lod)
    out_real = D.head(h_real, lod, c).float()
    out_fake = D(fake, lod, c).float()
    d_real, d_fake = out_real[:, 0], out_fake[:, 0]
    logistic = cfg.kind == "logistic"
    if logistic:
        loss = F.softplus(d_fake) + F.softplus(-d_real)
    else:
        loss = d_fake - d_real + cfg.drift * d_real.square()
    stats = {"d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
    if penalty_scale > 0 and logistic:
        r1 = r1_penalty(D, real, lod, c)
        loss = loss + penalty_scale * (cfg.r1_gamma / 2) * r1
        stats["r1"] = r1.mean().detach()
    elif penalty_scale > 0:
        gp = gradient_penalty(D, real, fake, lod, mix, cfg.gp_gamma, c)
        loss = loss + penalty_scale * cfg.gp_lambda * gp
        stats["gp"] = gp.mean().detach()
    weight = condition_weight(D.cfg, lod)
    if D.num_classes:
        ce_real, ce_fake = soft_cross_entropy(out_real[:, 1:], cond), soft_cross_entropy(out_fake[:, 1:], cond)
        loss = loss + cfg.cond_weight * weight * (ce_real + ce_fake)
        stats.update(ce_real=ce_real.mean().detach(), ce_fake=ce_fake.mean().detach())
    if wrong_cond is not None and D.text_size and weight > 0 and cfg.mismatch_weight > 0:
        d_wrong = D.head(h_real, lod, wrong_cond).float()[:, 0]
        # WGAN: psi(h) cancels in d_wrong - d_real: this trains the projection alone, and the drift on d_wrong
        # keeps it from pushing mismatched scores down without bound. Logistic: a mismatched pair is a fake.
        term = F.softplus(d_wrong) if logistic else d_wrong - d_real + cfg.drift * d_wrong.square()
        if wrong_mask is not None:
            term = term * wrong_mask.to(term.dtype)
        loss = loss + cfg.mismatch_weight * term
        stats["d_wrong"] = d_wrong.mean().detach()
    return loss.mean(), stats


def generator_loss(D, fake: torch.Tensor, lod: float, cfg: LossConfig | None = None,
                   cond: torch.Tensor | None = None, ca: tuple[torch.Tensor, torch.Tensor] | None = None
                   ) -> torch.Tensor:
    """L_G = -D(G(z)), and for a conditional G (`cond`, the rows the fakes were generated from):
    - classes: + cond_weight * w * CE(fake logits, cond), w the transitional condition weight;
    - text: the score takes `cond`; with conditioning augmentation `ca` = (mu, log sigma) from
      G.condition_code(cond): + kl_weight * KL(N(mu, sigma^2) || N(0, I)).
    """
    cfg = cfg or LossConfig()
    out = D(fake, lod, _conditions(D, cond)).float()
    loss = F.softplus(-out[:, 0]) if cfg.kind == "logistic" else -out[:, 0]
    if D.num_classes:
        loss = loss + cfg.cond_weight * condition_weight(D.cfg, lod) * soft_cross_entropy(out[:, 1:], cond)
    if ca is not None:
        loss = loss + cfg.kl_weight * kl_divergence(*ca)
    return loss.mean()
