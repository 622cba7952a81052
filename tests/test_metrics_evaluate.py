"""evaluate(): result format, determinism, global RNG untouched, caching, errors; sharded fakes; format_table;
registry."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from progan.data.dataset import PreparedDataset
from progan.metrics import (
    METRICS, MetricInputError, MissingInceptionWeights, UnknownMetric, generate_fakes, metrics_available_at,
    parse_metric_list, shard_range,
)
from progan.metrics.context import real_indices
from progan.metrics.evaluate import append_results, evaluate, format_table

FAST = {"swd": {"nhoods_per_image": 16, "dir_repeats": 2, "dirs_per_repeat": 16}}
COMMON = {"metric", "value", "images", "dataset", "snapshot_kimg", "seconds", "seed", "resolution", "generate_seconds"}


class TinyGenerator(nn.Module):
    """Stand-in for the progan Generator: z [B, latent] -> images [B, 3, R, R] in [-1, 1]."""

    def __init__(self, resolution=16, latent_size=8, seed=0, output_resolution=None):
        super().__init__()
        self.latent_size, self.resolution = latent_size, resolution
        out = output_resolution or resolution
        if output_resolution is not None:
            self.output_resolution = output_resolution
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(latent_size, 3 * out * out, generator=g) / latent_size**0.5)
        self.out = out
        self.calls = 0

    def forward(self, z):
        self.calls += 1
        return torch.tanh(z @ self.w).view(-1, 3, self.out, self.out)


class TinyConditionalGenerator(TinyGenerator):
    """Adds a per-class offset: images depend on the labels, as a conditional progan Generator's do."""

    def __init__(self, num_classes=5, **kw):
        super().__init__(**kw)
        self.num_classes = num_classes
        self.register_buffer("offset", torch.linspace(-1, 1, num_classes))

    def forward(self, z, cond):
        offset = cond @ self.offset  # one-hot rows pick their class's offset
        return (super().forward(z) * 0.5 + offset.view(-1, 1, 1, 1)).clamp(-1, 1)


class NoRealsDataset:
    """Wraps a dataset but refuses to hand out images: proves results came from the cache."""

    def __init__(self, ds):
        self.path, self.count, self.manifest, self.resolution = ds.path, ds.count, ds.manifest, ds.resolution

    def images(self, res, indices):
        raise AssertionError("real images were loaded although they should come from the cache")


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return PreparedDataset(tiny_dataset)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Random weights with the FID Inception layout (the real file is not available offline)."""
    from test_metrics_fid import reference_state_dict
    path = tmp_path_factory.mktemp("inception") / "w.safetensors"
    save_file(reference_state_dict(), str(path))
    return path


def test_swd_and_msssim_results_are_plain_json(dataset):
    G = TinyGenerator()
    res = evaluate(G, dataset, ["swd", "msssim"], num_images=16, seed=3, batch_size=5, snapshot_kimg=12.5, options=FAST)
    json.loads(json.dumps(res))  # plain JSON types only
    swd, ms = res
    assert COMMON <= set(swd) and COMMON <= set(ms)
    assert swd["metric"] == "swd" and swd["images"] == 16 and swd["snapshot_kimg"] == 12.5
    assert swd["dataset"] == str(dataset.path) and swd["resolution"] == 16
    assert set(swd["levels"]) == {"16"} and swd["value"] == pytest.approx(swd["levels"]["16"])
    assert swd["value"] > 0 and swd["real_floor"] > 0
    # A noise-like generator is much further from the shapes than the shapes are from each other.
    assert swd["value"] > 2 * swd["real_floor"]
    assert ms["pairs"] == 8 and 0 <= ms["value"] <= 1 and 0 <= ms["reals"] <= 1


def test_deterministic_batch_size_independent_and_seeded(dataset):
    a = evaluate(TinyGenerator(), dataset, ["swd", "msssim"], num_images=12, seed=7, batch_size=4, options=FAST)
    b = evaluate(TinyGenerator(), dataset, ["swd", "msssim"], num_images=12, seed=7, batch_size=64, options=FAST)
    c = evaluate(TinyGenerator(), dataset, ["swd", "msssim"], num_images=12, seed=8, batch_size=4, options=FAST)
    assert a[0]["value"] == b[0]["value"] and a[0]["real_floor"] == b[0]["real_floor"]   # SWD: exactly
    assert a[1]["value"] == pytest.approx(b[1]["value"], rel=1e-6)                         # MS-SSIM: rounding
    assert a[0]["value"] != c[0]["value"] and a[1]["value"] != c[1]["value"]


def test_global_rng_untouched_with_all_metrics_and_cache(dataset, weights_file, tmp_path):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    G = TinyGenerator()
    kw = dict(num_images=2, seed=0, batch_size=4, cache_dir=tmp_path / "cache", inception_weights=weights_file,
              options={**FAST, "kid": {"num_subsets": 5}})
    first = evaluate(G, dataset, ["swd", "msssim", "fid", "kid"], **kw)
    assert torch.equal(before, torch.get_rng_state())
    fid, kid = first[2], first[3]
    assert fid["value"] >= 0 and len(fid["inception_sha256"]) == 64
    assert kid["subsets"] == 5 and kid["subset_size"] == 2
    cached = sorted(p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in (tmp_path / "cache").iterdir())
    assert cached == ["fid-reals", "kid-reals", "msssim-reals", "swd-floor"]
    # Second run: real statistics come from the cache (the dataset refuses to give images) and agree.
    again = evaluate(G, NoRealsDataset(dataset), ["fid", "kid", "msssim"], **kw)
    assert again[0]["value"] == pytest.approx(fid["value"], rel=1e-6)
    assert again[1]["value"] == pytest.approx(kid["value"], rel=1e-6)
    assert again[2]["reals"] == pytest.approx(first[1]["reals"])
    assert torch.equal(before, torch.get_rng_state())


def test_damaged_cache_is_recomputed(dataset, tmp_path):
    kw = dict(num_images=8, seed=0, cache_dir=tmp_path)
    first = evaluate(TinyGenerator(), dataset, ["msssim"], **kw)
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_text("{ truncated")
    second = evaluate(TinyGenerator(), dataset, ["msssim"], **kw)
    assert second[0]["reals"] == pytest.approx(first[0]["reals"])
    assert json.loads(cache_file.read_text())["result"]["value"] == pytest.approx(first[0]["reals"])


def test_mid_training_generator_is_compared_at_its_output_resolution(dataset):
    G = TinyGenerator(resolution=64, output_resolution=16)
    (r,) = evaluate(G, dataset, ["msssim"], num_images=4, seed=0)
    assert r["resolution"] == 16


def test_missing_inception_weights_fail_before_generating(dataset, monkeypatch):
    monkeypatch.delenv("PROGAN_INCEPTION_WEIGHTS", raising=False)
    G = TinyGenerator()
    with pytest.raises(MissingInceptionWeights, match="pt_inception-2015-12-05-6726825d.pth"):
        evaluate(G, dataset, ["swd", "fid"], num_images=4, seed=0)
    assert G.calls == 0


def test_bad_requests_are_clear_errors(dataset):
    G = TinyGenerator()
    with pytest.raises(UnknownMetric, match="available: swd, msssim, fid, kid"):
        evaluate(G, dataset, ["swd", "inception_score"], num_images=4, seed=0)
    with pytest.raises(MetricInputError, match="num_images"):
        evaluate(G, dataset, ["swd"], num_images=1, seed=0)
    with pytest.raises(MetricInputError, match="unknown swd option"):
        evaluate(G, dataset, ["swd"], num_images=4, seed=0, options={"swd": {"dirs": 3}})
    with pytest.raises(MetricInputError, match="at least 16x16"):
        evaluate(TinyGenerator(resolution=8), dataset, ["msssim"], num_images=4, seed=0)
    with pytest.raises(MetricInputError, match="shape"):
        bad = TinyGenerator(resolution=32, output_resolution=None)
        bad.out = 16  # claims 32 px but renders 16 px
        evaluate(bad, dataset, ["msssim"], num_images=4, seed=0)
    assert G.calls == 0


def test_real_indices_fixed_disjoint_and_cycling():
    a, b = real_indices(100, 30, 0), real_indices(100, 30, 1)
    assert len(set(a.tolist())) == 30 and not set(a.tolist()) & set(b.tolist())
    assert torch.equal(a, real_indices(100, 30, 0))
    many = real_indices(10, 25, 0)
    assert len(many) == 25 and set(many.tolist()) == set(range(10))


def test_format_table_and_jsonl(tmp_path):
    results = [
        {"metric": "swd", "value": 12.345678, "images": 16, "snapshot_kimg": 100.0, "seconds": 3.21,
         "levels": {"32": 10.0, "16": 14.69}, "real_floor": 2.5},
        {"metric": "kid", "value": 0.0123456, "std": 0.001, "images": 16, "snapshot_kimg": None, "seconds": 1.0,
         "subsets": 100, "subset_size": 16},
    ]
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["metric", "value", "reference"]
    assert set(lines[1]) <= {"-", " "}
    assert "12.3457" in lines[2] and "floor 2.5000" in lines[2] and "32px:10.00" in lines[2]
    assert "0.012346" in lines[3] and "100 subsets of 16" in lines[3]
    assert lines[2].index("12.3457") == lines[3].index("0.012346")  # aligned columns
    path = tmp_path / "run" / "metrics.jsonl"
    append_results(path, results[:1])
    append_results(path, results[1:])
    assert [json.loads(line)["metric"] for line in path.read_text().splitlines()] == ["swd", "kid"]


def test_registry():
    assert list(METRICS) == ["swd", "msssim", "fid", "kid"]
    assert [METRICS[m].min_resolution for m in METRICS] == [16, 16, 1, 1]
    assert [m for m in METRICS if METRICS[m].needs_inception] == ["fid", "kid"]
    assert metrics_available_at(["fid", "swd", "msssim", "kid"], 8) == ["fid", "kid"]
    assert metrics_available_at(["fid", "swd"], 16) == ["fid", "swd"]
    with pytest.raises(UnknownMetric, match="available"):
        metrics_available_at(["swd", "is"], 64)
    assert parse_metric_list("swd, FID") == ["swd", "fid"]
    with pytest.raises(UnknownMetric):
        parse_metric_list("swd,is")


@pytest.mark.parametrize("world_size", [2, 3, 8])
@pytest.mark.parametrize("conditional", [False, True])
def test_sharded_fakes_concatenate_to_the_single_process_images(world_size, conditional):
    G = TinyConditionalGenerator() if conditional else TinyGenerator()
    whole = generate_fakes(G, 21, seed=5, batch_size=4)
    assert whole.shape == (21, 3, 16, 16) and whole.dtype == torch.uint8
    bounds = [shard_range(21, rank, world_size, 4) for rank in range(world_size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == 21
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))                # contiguous, in rank order
    assert all(start % 4 == 0 for start, _ in bounds)                              # on batch boundaries
    shards = [generate_fakes(G, 21, seed=5, batch_size=4, start=start, stop=stop) for start, stop in bounds]
    assert torch.equal(torch.cat(shards), whole)
    # Any [start, stop) is the same images, batched or not.
    assert torch.equal(generate_fakes(G, 21, seed=5, batch_size=3, start=5, stop=13), whole[5:13])
    assert not torch.equal(generate_fakes(G, 21, seed=6, batch_size=4), whole)


def test_conditional_fakes_depend_on_their_labels():
    G = TinyConditionalGenerator()
    fakes = generate_fakes(G, 40, seed=1, batch_size=8).float()
    plain = generate_fakes(TinyGenerator(), 40, seed=1, batch_size=8).float()
    # Per-image mean brightness spreads with the class offsets (labels drawn per image, not one per batch).
    assert fakes.mean(dim=(1, 2, 3)).std() > 2 * plain.mean(dim=(1, 2, 3)).std()


def test_evaluate_with_precomputed_fakes_is_the_same_evaluation(dataset):
    G = TinyGenerator()
    kw = dict(num_images=12, seed=7, batch_size=4, options=FAST)
    made_here = evaluate(G, dataset, ["swd", "msssim"], **kw)
    calls = G.calls
    fakes = torch.cat([generate_fakes(G, 12, 7, 4, start=a, stop=b) for a, b in (shard_range(12, r, 2, 4) for r in (0, 1))])
    G.calls = 0
    given = evaluate(G, dataset, ["swd", "msssim"], fakes=fakes, **kw)
    assert G.calls == 0 and calls > 0
    for a, b in zip(made_here, given):
        assert a["value"] == b["value"] and a["metric"] == b["metric"]
    assert given[0]["generate_seconds"] == 0
    with pytest.raises(MetricInputError, match=r"fakes: expected shape \[12, 3, 16, 16\]"):
        evaluate(G, dataset, ["swd"], fakes=fakes[:10], **kw)
    with pytest.raises(MetricInputError, match="uint8"):
        evaluate(G, dataset, ["swd"], fakes=fakes.float(), **kw)


def test_generate_fakes_rejects_bad_ranges():
    with pytest.raises(MetricInputError, match="start"):
        generate_fakes(TinyGenerator(), 8, 0, start=5, stop=3)
    with pytest.raises(MetricInputError, match="num_images"):
        generate_fakes(TinyGenerator(), 8, 0, stop=9)
    with pytest.raises(MetricInputError, match="rank"):
        shard_range(8, 2, 2, 4)
