"""benchmarks.recipe_quality's recipes are what docs/demo-recipe.md's old-against-new tables say they are."""

import importlib

import pytest
import torch

from progan import cli


@pytest.fixture(scope="module")
def recipe_quality():
    return importlib.import_module("benchmarks.recipe_quality")  # the repository root is on pytest's path


def config_of(recipe_quality, recipe: str, data: str, extra: tuple[str, ...] = ()) -> dict:
    """The TrainConfig the benchmark trains for a recipe, from its own command line."""
    argv = recipe_quality.train_argv(recipe, recipe_quality.RECIPES[recipe][0], data, "unused", 20, 1, list(extra))
    return cli.train_config_from_args(cli.build_parser().parse_args(argv)).to_dict()


def differences(a: dict, b: dict, prefix: str = "") -> dict:
    """{dotted key: (a's value, b's value)} wherever two nested config dicts differ."""
    out = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict) and key not in ("batch", "lr"):
            out.update(differences(x, y, f"{prefix}{key}."))
        elif x != y:
            out[f"{prefix}{key}"] = (x, y)
    return out


def test_old_demos_spelled_out_differ_from_the_next_in_what_the_readme_says(recipe_quality, tiny_dataset):
    v1 = config_of(recipe_quality, "demo-v1", tiny_dataset)
    v2 = config_of(recipe_quality, "demo-v2", tiny_dataset)
    new = config_of(recipe_quality, "demo", tiny_dataset)
    # the second demo recipe: batch 16 from 16x16 and a longer G_ema; the third: half the widths
    assert differences(v1, v2) == {"schedule.batch": ({4: 64, 16: 32}, {4: 64, 16: 16}), "ema_beta": (0.99, 0.995)}
    assert differences(v2, new) == {"model.fmap_base": (512, 256)}
    model = v1["model"]
    assert (model["resolution"], model["latent_size"], model["fmap_base"], model["fmap_max"]) == (32, 64, 512, 64)
    assert (v1["schedule"]["stabilize_kimg"], v1["schedule"]["fade_kimg"], v1["mirror"]) == (20, 20, True)


def test_screen_flags_override_the_recipe(recipe_quality, tiny_dataset):
    screened = config_of(recipe_quality, "demo-v1", tiny_dataset, ("--batch", "4:64,16:8"))
    assert screened["schedule"]["batch"] == {4: 64, 16: 8}


def test_class_model_grid_has_a_row_per_class_and_fakes_take_the_images_classes(recipe_quality, tmp_path):
    import torch
    from PIL import Image

    from progan.config import ModelConfig
    from progan.model_io import export_generator, load_generator
    from progan.networks import Generator

    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=8, latent_size=8, fmap_base=16, fmap_max=8, num_classes=3))
    G = load_generator(export_generator(tmp_path / "model", G, lod=0.0, kimg=1.0))
    out = recipe_quality.grids(G, None, tmp_path / "grids", tmp_path)
    grid = Image.open(tmp_path / "grids" / "final.png")
    assert grid.size == (8 * 32, 3 * 32)  # 8 seeds a row, one row per class, 8 px cells drawn at 32 px
    assert out["final"] == "grids/final.png"

    class Labelled:  # what conditions_of reads of a dataset
        labels = torch.tensor([2, 0, 1, 2])
    rows = recipe_quality.conditions_of(G, Labelled(), torch.tensor([3, 1]))
    assert rows.tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def test_the_table_names_each_runs_data_with_its_own_floor(recipe_quality, tmp_path):
    import json

    run = {"recipe": "demo", "flags": "", "condition": "none", "seed": 2, "minutes": 28.0, "cpu_threads": 1,
           "lod_final": 0.0, "resolution_reached": 32, "truncation": 1.0, "load_average": {"mean": 2.0},
           "train": {"command": "progan train --data data/emoji32-demo --run runs/x --minutes 28.0",
                     "images_shown": 128800},
           "quality": {"swd": 21.7, "swd_levels": {"16": 23.7, "32": 19.7}, "swd_real_floor": 3.83,
                       "msssim": 0.1176, "msssim_reals": 0.1151},
           "grids": {"final": "benchmarks/results/recipe_quality/x/final.png"}}
    (tmp_path / "recipe_quality-x.json").write_text(json.dumps(run))
    head, rule, row = recipe_quality.table(tmp_path).splitlines()
    cells = dict(zip(head.strip("|").split(" | "), (c.strip() for c in row.strip("|").split(" | "))))
    assert cells["data"] == "data/emoji32-demo" and cells["seed"] == "2" and cells["kimg"] == "128.8"
    assert cells["SWD real-vs-real"] == "3.8" and cells["MS-SSIM"] == "0.118" and cells["MS-SSIM reals"] == "0.115"
    assert len(head.split("|")) == len(rule.split("|")) == len(row.split("|"))

    # the same run measured against other data (--eval-only --data): the row names both
    (tmp_path / "recipe_quality-x.json").write_text(json.dumps({**run, "data": "data/emoji32-iconic"}))
    row = recipe_quality.table(tmp_path).splitlines()[2]
    cells = dict(zip(head.strip("|").split(" | "), (c.strip() for c in row.strip("|").split(" | "))))
    assert cells["data"] == "data/emoji32-iconic (trained on data/emoji32-demo)"


def test_confident_share_counts_images_one_group_claims(recipe_quality):
    probs = torch.tensor([[0.85, 0.05, 0.05, 0.05],   # clearly the first group
                          [0.80, 0.10, 0.05, 0.05],   # exactly at the threshold
                          [0.40, 0.40, 0.10, 0.10],   # a blob between two groups
                          [0.25, 0.25, 0.25, 0.25]])  # nothing
    assert recipe_quality.confident_share(probs, 0.8) == 0.5
    assert recipe_quality.confident_share(probs, 0.3) == 0.75
    assert recipe_quality.confident_share(probs[2:], 0.8) == 0.0
