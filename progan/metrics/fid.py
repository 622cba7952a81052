"""FID and KID from Inception features.

FID (Heusel et al. 2017): ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with unbiased
covariances (N - 1), as pytorch-fid computes it. The trace of the matrix square root is computed
without scipy: S_a S_b is similar to the symmetric PSD matrix S_a^(1/2) S_b S_a^(1/2), so
Tr((S_a S_b)^(1/2)) is the sum of the square roots of that matrix's eigenvalues (float64 eigh).

KID (Binkowski et al. 2018): the unbiased MMD^2 estimate with the polynomial kernel
k(x, y) = (x.y / d + 1)^3, d = feature dimension, averaged over random subsets (default 100
subsets of 1000 features from each set, drawn without replacement), as torch-fidelity / clean-fid do.
"""

from __future__ import annotations

import torch

from progan.seeds import generator as seeded_generator

from .common import MetricInputError
from .context import EvalContext, Metric

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], covariance [D, D]) in float64; covariance normalised by N - 1."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise MetricInputError(f"FID statistics need at least 2 feature vectors [N, D], got {list(features.shape)}")
    x = features.double()
    mu = x.mean(dim=0)
    xc = x - mu
    return mu, (xc.T @ xc) / (x.shape[0] - 1)


def _psd_eigenvalues_clean(w: torch.Tensor) -> torch.Tensor:
    # Eigenvalues below the rounding level of the largest are zero in exact arithmetic (covariances
    # of fewer samples than dimensions are rank-deficient); their square roots would add noise.
    tol = w.abs().max() * w.numel() * torch.finfo(w.dtype).eps
    return torch.where(w > tol, w, torch.zeros_like(w))


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(m)
    return (v * _psd_eigenvalues_clean(w).sqrt()) @ v.T


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b) -> float:
    mu_a, mu_b, sigma_a, sigma_b = (t.double() for t in (mu_a, mu_b, sigma_a, sigma_b))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != (mu_a.numel(),) * 2:
        raise MetricInputError(
            f"FID statistics do not match: mu {list(mu_a.shape)} vs {list(mu_b.shape)}, sigma {list(sigma_a.shape)} vs {list(sigma_b.shape)}"
        )
    root_a = _sqrt_psd(sigma_a)
    inner = root_a @ sigma_b @ root_a
    inner = (inner + inner.T) / 2  # symmetric up to rounding; make it exact for eigvalsh
    tr_covmean = _psd_eigenvalues_clean(torch.linalg.eigvalsh(inner)).sqrt().sum()
    diff = mu_a - mu_b
    return float(diff @ diff + torch.trace(sigma_a) + torch.trace(sigma_b) - 2.0 * tr_covmean)


def fid_from_features(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def mmd2_polynomial_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 (within-set sums exclude the diagonal) with k(a, b) = (a.b / d + 1)^3."""
    m, d = x.shape
    if y.shape != (m, d) or m < 2:
        raise MetricInputError(f"KID needs two feature sets of equal shape with >= 2 rows, got {list(x.shape)} and {list(y.shape)}")
    x, y = x.double(), y.double()
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid_subsets(n_a: int, n_b: int, num_subsets: int, subset_size: int, generator: torch.Generator):
    """[(indices into a, indices into b)] * num_subsets, each drawn without replacement."""
    return [
        (torch.randperm(n_a, generator=generator)[:subset_size], torch.randperm(n_b, generator=generator)[:subset_size])
        for _ in range(num_subsets)
    ]


def kid_from_features(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    *,
    num_subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    generator: torch.Generator | None = None,
) -> dict:
    """{"value": mean MMD^2 over subsets, "std": its std, "subsets", "subset_size"}.

    The subset size is capped at the smaller set's size (recorded in the result).
    """
    if num_subsets < 1:
        raise MetricInputError(f"KID needs num_subsets >= 1, got {num_subsets}")
    size = min(subset_size, features_a.shape[0], features_b.shape[0])
    if size < 2:
        raise MetricInputError(f"KID needs at least 2 feature vectors per set, got {features_a.shape[0]} and {features_b.shape[0]}")
    if generator is None:
        generator = seeded_generator(0, "kid")
    values = torch.tensor([
        mmd2_polynomial_unbiased(features_a[ia], features_b[ib])
        for ia, ib in kid_subsets(features_a.shape[0], features_b.shape[0], num_subsets, size, generator)
    ], dtype=torch.float64)
    std = values.std(correction=0).item() if num_subsets > 1 else 0.0
    return {"value": values.mean().item(), "std": std, "subsets": num_subsets, "subset_size": size}


def fid_metric(ctx: EvalContext) -> dict:
    """FID between generated and real images (pytorch-fid's Inception weights)."""
    sha = ctx.inception_sha256()

    def real_stats() -> dict[str, torch.Tensor]:
        mu, sigma = feature_statistics(ctx.features("reals"))
        return {"mu": mu, "sigma": sigma}

    real = ctx.cached_tensors("fid-reals", {"inception_sha256": sha}, real_stats)
    mu, sigma = feature_statistics(ctx.features("fakes"))
    return {"value": frechet_distance(mu, sigma, real["mu"], real["sigma"]), "inception_sha256": sha}


def kid_metric(ctx: EvalContext) -> dict:
    """KID (unbiased MMD^2, cubic polynomial kernel) averaged over random subsets; "std" over subsets."""
    s = ctx.settings("kid", {"num_subsets": KID_SUBSETS, "subset_size": KID_SUBSET_SIZE})
    sha = ctx.inception_sha256()
    real = ctx.cached_tensors("kid-reals", {"inception_sha256": sha},
                              lambda: {"features": ctx.features("reals").float()})
    out = kid_from_features(ctx.features("fakes"), real["features"], num_subsets=s["num_subsets"],
                            subset_size=s["subset_size"], generator=seeded_generator(ctx.seed, "kid"))
    return {**out, "inception_sha256": sha}


FID = Metric("fid", fid_metric, needs_inception=True)
KID = Metric("kid", kid_metric, needs_inception=True)
