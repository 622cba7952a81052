"""The metrics evaluate() knows, by name: one Metric record each, defined beside the metric's maths.

Adding a metric = a function taking an EvalContext (progan.metrics.context) and returning a plain JSON-able dict
with at least "value", its Metric record in the same module, and the record's entry below.
"""

from __future__ import annotations

from types import MappingProxyType

from .context import Metric
from .fid import FID, KID
from .msssim import MSSSIM
from .swd import SWD

METRICS: MappingProxyType[str, Metric] = MappingProxyType({m.name: m for m in (SWD, MSSSIM, FID, KID)})


class UnknownMetric(ValueError):
    """A metric name that is not in METRICS."""


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownMetric(f"unknown metric {name!r}; available: {', '.join(METRICS)}") from None


def parse_metric_list(text: str) -> list[str]:
    """'swd, fid' -> ['swd', 'fid'] (checked against METRICS)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownMetric(f"no metrics given in {text!r}; available: {', '.join(METRICS)}")
    for name in names:
        get_metric(name)
    return names


def metrics_available_at(names: list[str], resolution: int) -> list[str]:
    """The metrics of `names` that can measure images of side `resolution` (in the given order)."""
    return [name for name in names if resolution >= get_metric(name).min_resolution]
