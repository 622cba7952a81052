"""Metrics: SWD and MS-SSIM as in the ProGAN paper, FID and KID with pytorch-fid's Inception, a registry,
and evaluate() / format_table() for running them on a generator.

Under DDP, make the generated images on every process with generate_fakes(..., *shard_range(...)), gather them
in rank order and pass them to evaluate(fakes=...): the result is the single-process one (see metrics.context).

The SWD function is progan.metrics.swd.swd (not re-exported here: it would shadow the submodule)."""

from .common import MetricInputError
from .context import Metric, generate_fakes, shard_range
from .evaluate import append_results, evaluate, format_table
from .fid import fid_from_features, frechet_distance, kid_from_features
from .inception import BadInceptionWeights, MissingInceptionWeights, load_inception
from .msssim import ms_ssim, pairwise_msssim
from .registry import METRICS, UnknownMetric, metrics_available_at, parse_metric_list

__all__ = [
    "METRICS", "BadInceptionWeights", "Metric", "MetricInputError", "MissingInceptionWeights", "UnknownMetric",
    "append_results", "evaluate", "fid_from_features", "format_table", "frechet_distance", "generate_fakes",
    "kid_from_features", "load_inception", "metrics_available_at", "ms_ssim", "pairwise_msssim",
    "parse_metric_list", "shard_range",
]
