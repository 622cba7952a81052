"""Metrics: SWD and MS-SSIM as in the ProGAN paper, FID and KID with pytorch-fid's Inception, a registry,
and evaluate() / format_table() for running them on a generator.

The SWD function is progan.metrics.swd.swd (not re-exported here: it would shadow the submodule)."""

from .common import MetricInputError
from .evaluate import append_results, evaluate, format_table
from .fid import fid_from_features, frechet_distance, kid_from_features
from .inception import BadInceptionWeights, MissingInceptionWeights, load_inception
from .msssim import ms_ssim, pairwise_msssim
from .registry import METRICS, UnknownMetric, parse_metric_list

__all__ = [
    "METRICS", "BadInceptionWeights", "MetricInputError", "MissingInceptionWeights", "UnknownMetric",
    "append_results", "evaluate", "fid_from_features", "format_table", "frechet_distance", "kid_from_features",
    "load_inception", "ms_ssim", "pairwise_msssim", "parse_metric_list",
]
