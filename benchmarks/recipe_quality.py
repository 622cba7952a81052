"""What a training recipe buys in a fixed CPU wall time: images shown, resolution reached, SWD, MS-SSIM, the grid;
and, for a text-conditional run, whether the images follow their captions (docs/demo-recipe.md,
docs/text-conditioning.md).

    python -m benchmarks.recipe_quality --recipe demo --minutes 20 --seed 1 --data data/emoji32
    python -m benchmarks.recipe_quality --recipe demo --condition text --minutes 20 --seed 1 --data data/emoji32
    python -m benchmarks.recipe_quality --table benchmarks/results     # the markdown table of every result there

A recipe is a preset plus `progan train` flags (RECIPES below); the run goes through the CLI's own argument
parsing and progan.train.loop.train with cfg.minutes, so it is exactly what a user's command would train.
Then, on the exported model (progan.model_io.load_generator):
- SWD (per level and average) and MS-SSIM with progan.metrics.evaluate, EVAL_IMAGES images and EVAL_SEED, the
  same for every recipe and training seed. A text model's fakes are conditioned on the caption vectors of randomly
  drawn dataset images (the data's own mix, as the reals they are compared with), a class model's on their classes.
  `--truncation PSI` evaluates (and draws the grid) at that truncation instead.
- Conditional fidelity: a small conv classifier is trained on real images to predict the emoji group (the
  manifest's "groups"), on the images of a split of the captions; it classifies images generated from the held-out
  captions. Reported beside its accuracy on the held-out real images and chance (the largest group's share of the
  held-out images). Skin-tone variants of one emoji share a caption key, so they never straddle the split. An
  unconditional model gets the same test (its images ignore the caption): the baseline a condition must beat. A
  class model (`--condition auto` on a dataset from `--labels-from-groups`) is given the held-out images' groups.
- Grids: the final one (fixed seeds; a class model's is a row per class) and, for a text model, one per prompt of
  PROMPTS, with how each was read.

The dataset is `progan dataset --builtin emoji --resolution 32 --out DIR` (built here when --data does not exist;
with the text extra installed it stores the caption embeddings a text run needs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from progan import cli
from progan.data.dataset import PreparedDataset, to_float
from progan.fileio import atomic_write_bytes, atomic_write_json
from progan.conditioning.rows import one_hot_rows
from progan.generate import grid_image, latents_from_seeds, render
from progan.seeds import unit_hash

# name -> (condition when --condition is not given, `progan train` flags). The data is always --data.
RECIPES = {
    "demo": ("none", ["--preset", "demo", "--resolution", "32", "--mirror"]),
    # transitional conditioning: the condition fades in over the 8x8 -> 16x16 fade-ins
    "demo-cond-fade": ("text", ["--preset", "demo", "--resolution", "32", "--mirror", "--cond-fade", "8:16"]),
    # the demo preset until 2026-12-02 (batch 32 from 16x16, G_ema 0.99), spelled out: the "old" side of the
    # batch-16 comparison (docs/demo-recipe.md)
    "demo-v1": ("none", ["--preset", "demo", "--resolution", "32", "--mirror", "--latent-size", "64",
                         "--fmap-base", "512", "--fmap-max", "64", "--stabilize-kimg", "20", "--fade-kimg", "20",
                         "--batch", "4:64,16:32", "--lr", "0.002", "--ema-beta", "0.99"]),
    # the demo preset of 2026-12-02 to 12-04 (fmap_base 512), spelled out: the "old" side of the widths comparison
    "demo-v2": ("none", ["--preset", "demo", "--resolution", "32", "--mirror", "--latent-size", "64",
                         "--fmap-base", "512", "--fmap-max", "64", "--stabilize-kimg", "20", "--fade-kimg", "20",
                         "--batch", "4:64,16:16", "--lr", "0.002", "--ema-beta", "0.995"]),
}
PROMPTS = ["monkeys surfing on the moon", "a red heart", "a smiling face", "a cat", "a flag", "fruit"]
EVAL_IMAGES = 2048
EVAL_SEED = 0
GRID_SEEDS = list(range(64))      # the final grid: 8 x 8
PROMPT_SEEDS = list(range(16))    # each prompt's grid: 4 x 4
FAKES_PER_CAPTION = 2
HELD_OUT_SHARE = 0.2
# Label smoothing 0.1 caps a four-group classifier near 0.93: 0.8 is "clearly one group".
CONFIDENT = 0.8


class LoadSampler:
    """The 1-minute load average every few seconds on a thread: the machine is shared, so numbers come with it."""

    def __init__(self, every: float = 15.0):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        s = self.samples or [os.getloadavg()[0]]
        return {"mean": round(sum(s) / len(s), 2), "min": round(min(s), 2), "max": round(max(s), 2),
                "samples": len(s)}


def ensure_dataset(path: Path) -> PreparedDataset:
    if not (path / "manifest.json").is_file():
        print(f"building the built-in emoji dataset in {path} (a few minutes)", flush=True)
        cli.main(["dataset", "--builtin", "emoji", "--resolution", "32", "--out", str(path)])
    return PreparedDataset(path)


def train_argv(recipe: str, condition: str, data: Path, run_dir: Path, minutes: float, seed: int,
               extra: list[str]) -> list[str]:
    """The `progan train` command line of a recipe (plus a screen's extra flags, which come last and win)."""
    return ["train", "--data", str(data), "--run", str(run_dir), "--minutes", str(minutes), "--seed", str(seed),
            "--condition", condition, "--device", "cpu", "--quiet", *RECIPES[recipe][1], *extra]


def train_recipe(recipe: str, condition: str, data: Path, run_dir: Path, minutes: float, seed: int,
                 extra: list[str]) -> dict:
    from progan.train.loop import train
    argv = train_argv(recipe, condition, data, run_dir, minutes, seed, extra)
    print("progan " + " ".join(argv), flush=True)
    cfg = cli.train_config_from_args(cli.build_parser().parse_args(argv))
    state = train(cfg, run_dir, device="cpu", progress=False)
    return {"command": "progan " + " ".join(argv), "images_shown": state.progress.cur_nimg,
            "train_seconds": round(state.progress.train_seconds, 1), "lod": state.progress.lod}


def text_rows(dataset: PreparedDataset) -> torch.Tensor:
    """Indices of the images with a caption vector (zero rows have none)."""
    return torch.nonzero(dataset.caption_embeddings.norm(dim=1) > 0.5).flatten()


def conditions_of(G, dataset: PreparedDataset, idx: torch.Tensor) -> torch.Tensor | None:
    """The condition rows of dataset images `idx` for G: caption vectors, one-hot classes, or None."""
    if G.cfg.text_size:
        return dataset.caption_embeddings[idx].float()
    if G.num_classes:
        return one_hot_rows(dataset.labels[idx], G.num_classes)
    return None


@torch.inference_mode()
def make_fakes(G, dataset: PreparedDataset, num: int, seed: int, truncation: float = 1.0,
               condition_noise: bool = False) -> torch.Tensor | None:
    """The evaluation images: latent i with the condition of a randomly drawn dataset image (a text model's from
    the captioned ones), truncated by `truncation` (progan.generate.truncate). None when untruncated and not
    text-conditional: evaluate makes its own, in the data's class mix for a class model. condition_noise: a text
    model samples its conditioning augmentation's noise per image, as `--condition-noise` does (drawn after the
    latents and conditions, which stay the same)."""
    if condition_noise and not G.cfg.ca_size:
        raise ValueError("condition_noise is for text models with conditioning augmentation (ca_size > 0)")
    if not G.cfg.text_size and truncation == 1.0:
        return None
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, G.latent_size, generator=gen)
    pool = text_rows(dataset) if G.cfg.text_size else torch.arange(dataset.count)
    idx = pool[torch.randint(len(pool), (num,), generator=gen)]
    noise = torch.randn(num, G.cfg.ca_size, generator=gen) if condition_noise else None
    return render(G, z, truncation, cond=conditions_of(G, dataset, idx), noise=noise)


def quality(G, dataset: PreparedDataset, cache: Path, truncation: float = 1.0, condition_noise: bool = False) -> dict:
    from progan.metrics import evaluate, format_table
    if G.output_resolution < 16:  # SWD's smallest level is 16x16: a run this short has no numbers
        return {"skipped": f"the model renders {G.output_resolution}x{G.output_resolution}; SWD needs 16x16"}
    fakes = make_fakes(G, dataset, EVAL_IMAGES, EVAL_SEED, truncation, condition_noise)
    conditions = None
    if G.num_classes:  # the fakes follow the dataset's own mix of classes, as the reals do
        from progan.conditioning.training import condition_table
        conditions = condition_table(G.cfg, dataset.labels, dataset.num_classes, None, source=str(dataset.path))
    results = evaluate(G, dataset, ["swd", "msssim"], EVAL_IMAGES, EVAL_SEED, device="cpu",
                       snapshot_kimg=G.meta["kimg"], cache_dir=cache, fakes=fakes, conditions=conditions)
    print(format_table(results), flush=True)
    swd, ms = results
    return {"swd": swd["value"], "swd_levels": swd.get("levels"), "swd_real_floor": swd.get("real_floor"),
            "msssim": ms["value"], "msssim_reals": ms.get("reals"), "eval_images": EVAL_IMAGES,
            "eval_seed": EVAL_SEED, "eval_seconds": round(swd["seconds"] + ms["seconds"] + swd["generate_seconds"], 1)}


# --- conditional fidelity ---------------------------------------------------------------------------------------

def caption_split(dataset: PreparedDataset, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) image indices: captioned images with a group, split by what they show (the variants of
    one emoji, its skin tones, fall on the same side)."""
    train, held = [], []
    variant_of = dataset.column("variant_of") or dataset.captions
    for i, (caption, group) in enumerate(zip(dataset.captions, dataset.column("groups"))):
        if not caption or not group:
            continue
        (held if unit_hash(seed, "held-out", variant_of[i] or caption) < HELD_OUT_SHARE else train).append(i)
    return torch.tensor(train), torch.tensor(held)


class GroupClassifier(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.blocks, ch = nn.ModuleList(), 3
        for out in (32, 64, 128):
            self.blocks.append(nn.Sequential(
                nn.Conv2d(ch, out, 3, padding=1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2),
                nn.Conv2d(out, out, 3, padding=1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)))
            ch = out
        self.head = nn.Linear(ch, classes)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
            if x.shape[-1] > 1:  # a short run's 4x4 or 8x8 images pool down to one pixel, no further
                x = F.max_pool2d(x, 2)
        return self.head(x.mean((2, 3)))


@torch.inference_mode()
def probabilities(net: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    net.eval()
    return torch.cat([net(to_float(images[i:i + batch])).softmax(1) for i in range(0, len(images), batch)])


def predict(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return probabilities(net, images).argmax(1)


def confident_share(probs: torch.Tensor, threshold: float = CONFIDENT) -> float:
    """The share of images the classifier puts in one group with probability >= threshold: for an unconditional
    model, how many of its images read clearly as a face, an animal, a food or a flag (against the reals' share)."""
    return round(float((probs.max(1).values >= threshold).float().mean()), 4)


def balanced_accuracy(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> float:
    """Mean over the groups present of the share of their images predicted as the group."""
    recalls = [float((pred[truth == c] == c).float().mean()) for c in range(classes) if (truth == c).any()]
    return round(sum(recalls) / len(recalls), 4)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, classes: int, seed: int,
                     steps: int, seconds: float, balanced: bool = False
                     ) -> tuple[GroupClassifier, dict]:
    """The group classifier and its training (AdamW, weight decay, label smoothing, flips and small
    shifts, so that it does not memorise the training emoji), on uint8 images [N, 3, r, r]; (net, steps and
    seconds taken). A fixed step count: the same judge whatever the machine's load (`seconds` only caps it).
    balanced: every batch draws the groups equally often (with replacement), so that a large group (the emoji's
    People & Body, 60% of the images with its skin tones) does not become the answer for every unclear image."""
    torch.manual_seed(seed)  # a benchmark script: the classifier's initial weights
    gen = torch.Generator().manual_seed(seed)
    net = GroupClassifier(classes)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)
    shift = max(1, images.shape[-1] // 16)
    start, done = time.perf_counter(), 0
    weights = (1.0 / torch.bincount(labels, minlength=classes).clamp_min(1).float())[labels] if balanced else None
    while done < steps and time.perf_counter() - start < seconds:
        net.train()
        idx = (torch.multinomial(weights, 128, replacement=True, generator=gen) if balanced
               else torch.randint(len(images), (128,), generator=gen))
        x = to_float(images[idx])
        x = torch.where(torch.rand(len(x), 1, 1, 1, generator=gen) < 0.5, x.flip(3), x)  # G saw mirrored reals
        x = torch.roll(x, torch.randint(-shift, shift + 1, (2,), generator=gen).tolist(), (2, 3))
        loss = F.cross_entropy(net(x), labels[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
    return net, {"classifier_steps": done, "classifier_seconds": round(time.perf_counter() - start, 1)}


def fidelity(G, dataset: PreparedDataset, seed: int, steps_wanted: int, seconds: float) -> dict:
    """Train the group classifier at G's output resolution for `steps_wanted` steps (a fixed count and seed: the same
    classifier for every model at one resolution, whatever the machine's load; `seconds` caps it), then score reals
    and fakes."""
    res = int(G.output_resolution)
    names = sorted({g for g in dataset.column("groups") if g})
    labels = torch.tensor([names.index(g) if g else -1 for g in dataset.column("groups")])
    train_idx, held_idx = caption_split(dataset, seed)
    x_train, y_train = dataset.images(res, train_idx), labels[train_idx]
    x_held, y_held = dataset.images(res, held_idx), labels[held_idx]

    start = time.perf_counter()
    net, trained = train_classifier(x_train, y_train, len(names), seed, steps_wanted, seconds)
    steps = trained["classifier_steps"]

    # Fakes: FAKES_PER_CAPTION latents for each held-out image's condition (its caption vector or class; an
    # unconditional G has none).
    gen = torch.Generator().manual_seed(seed + 1)
    reps = held_idx.repeat_interleave(FAKES_PER_CAPTION)
    z = torch.randn(len(reps), G.latent_size, generator=gen)
    fakes = render(G, z, cond=conditions_of(G, dataset, reps))
    fake_probs = probabilities(net, fakes)
    fake_pred = fake_probs.argmax(1)
    real_probs = probabilities(net, x_held)
    # The same for captions the classifier trained on: does G follow captions it was trained on better?
    seen = train_idx[torch.randperm(len(train_idx), generator=gen)[:len(held_idx)]]
    seen_reps = seen.repeat_interleave(FAKES_PER_CAPTION)
    z2 = torch.randn(len(seen_reps), G.latent_size, generator=gen)
    seen_pred = predict(net, render(G, z2, cond=conditions_of(G, dataset, seen_reps)))

    counts = torch.bincount(y_held, minlength=len(names))
    out = {
        "groups": names, "resolution": res, "classifier_seconds": round(time.perf_counter() - start, 1),
        "classifier_steps": steps, "train_images": len(train_idx), "held_out_images": len(held_idx),
        "held_out_captions": len({dataset.captions[i] for i in held_idx.tolist()}),
        "acc_real_held_out": round(float((real_probs.argmax(1) == y_held).float().mean()), 4),
        "acc_fake_held_out_captions": round(float((fake_pred == labels[reps]).float().mean()), 4),
        "acc_fake_train_captions": round(float((seen_pred == labels[seen_reps]).float().mean()), 4),
        # People & Body is most of the data: the mean per-group recall (chance 1 / groups) weighs every group alike
        "balanced_acc_real_held_out": balanced_accuracy(real_probs.argmax(1), y_held, len(names)),
        "balanced_acc_fake_held_out_captions": balanced_accuracy(fake_pred, labels[reps], len(names)),
        "balanced_chance": round(1 / len(names), 4),
        "chance_largest_group": round(float(counts.max() / counts.sum()), 4),
        "largest_group": names[int(counts.argmax())],
        "confident_share_fake": confident_share(fake_probs),
        "confident_share_real_held_out": confident_share(real_probs),
        "fake_predicted_share": {names[c]: round(float(v), 3) for c, v in
                                 enumerate(torch.bincount(fake_pred, minlength=len(names)) / len(fake_pred))},
    }
    print(f"conditional fidelity at {res}x{res} ({steps} classifier steps): fakes from held-out captions "
          f"{out['acc_fake_held_out_captions']:.3f}, from training captions {out['acc_fake_train_captions']:.3f}; "
          f"real held-out {out['acc_real_held_out']:.3f}; chance {out['chance_largest_group']:.3f} "
          f"({out['largest_group']}); balanced: fakes {out['balanced_acc_fake_held_out_captions']:.3f}, real "
          f"{out['balanced_acc_real_held_out']:.3f}, chance {out['balanced_chance']:.3f}; one group with p >= "
          f"{CONFIDENT}: fakes {out['confident_share_fake']:.3f}, real held-out "
          f"{out['confident_share_real_held_out']:.3f}", flush=True)
    return out


# --- grids ------------------------------------------------------------------------------------------------------

def save_small_png(images: torch.Tensor, path: Path, nrow: int, min_cell: int) -> None:
    import io
    buf = io.BytesIO()
    grid_image(images, nrow, min_cell).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def grids(G, dataset: PreparedDataset, folder: Path, repo_root: Path, truncation: float = 1.0) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    z = latents_from_seeds(GRID_SEEDS, G.latent_size)
    cond = None
    if G.cfg.text_size:  # the final grid: the captions of fixed images, spread over the dataset
        rows = text_rows(dataset)
        cond = dataset.caption_embeddings[rows[torch.linspace(0, len(rows) - 1, len(z)).long()]].float()
    if G.num_classes:  # a row of 8 per class
        images = torch.cat([render(G, z[:8], truncation, cond=one_hot_rows(torch.full((8,), c), G.num_classes))
                            for c in range(G.num_classes)])
    else:
        images = render(G, z, truncation, cond=cond)
    save_small_png(images, folder / "final.png", 8, min_cell=32)
    out = {"final": os.path.relpath(folder / "final.png", repo_root), "prompts": {}}
    if not G.cfg.text_size:
        return out
    from progan.conditioning.rows import prompt_reading
    from progan.conditioning.encoder import load_text_encoder
    encoder = load_text_encoder(G.meta["conditioning"]["encoder"]["name"])
    zp = latents_from_seeds(PROMPT_SEEDS, G.latent_size)
    for prompt in PROMPTS:
        reading = prompt_reading(G, prompt, encoder)
        path = folder / f"prompt-{slug(prompt)}.png"
        save_small_png(render(G, zp, cond=reading.condition.view(1, -1).expand(len(zp), -1)), path, 4, min_cell=64)
        out["prompts"][prompt] = {"grid": os.path.relpath(path, repo_root), "reading": reading.describe(),
                                  "off_data": bool(reading.off_data)}
        print(f"  {prompt!r}: {reading.describe()}", flush=True)
    return out


# --- the table --------------------------------------------------------------------------------------------------

def data_of(result: dict) -> str:
    """The data the metrics are against (the SWD floor and MS-SSIM of reals are that data's), and the data the run
    trained on where it differs (`--eval-only --data` on another dataset)."""
    found = re.search(r"--data (\S+)", result["train"]["command"])
    trained_on = found.group(1) if found else "-"
    measured_on = result.get("data", trained_on)  # results from before 2026-12-04 lack "data": their own
    return measured_on if measured_on == trained_on else f"{measured_on} (trained on {trained_on})"


def grid_link(path: str) -> str:
    """A link to a run's final grid from benchmarks/, or '-' where the image is not here: result images are not
    committed (a few are kept under docs/images/), and the run's own command writes them again."""
    return f"[grid]({os.path.relpath(path, 'benchmarks')})" if Path(path).is_file() else "-"


def table(folder: Path) -> str:
    def num(value, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rows = []
    for path in sorted(folder.glob("recipe_quality-*.json")):
        r = json.loads(path.read_text())
        q, f = r["quality"], r.get("fidelity") or {}
        fading = r["lod_final"] != int(r["lod_final"])
        rows.append("| " + " | ".join([
            r["recipe"] + (f" (psi {r['truncation']:g})" if r.get("truncation", 1.0) != 1.0 else ""),
            f"`{r['flags']}`" if r.get("flags") else "", data_of(r), r["condition"], str(r["seed"]),
            f"{r['minutes']:g}" + (" (1 thread)" if r.get("cpu_threads") == 1 else ""),
            f"{r['train']['images_shown'] / 1000:.1f}",
            f"{r['resolution_reached']}" + (f" (lod {r['lod_final']:.2f})" if fading else ""),
            num(q.get("swd"), 1), " / ".join(f"{v:.1f}" for v in (q.get("swd_levels") or {}).values()) or "-",
            num(q.get("swd_real_floor"), 1), num(q.get("msssim"), 3), num(q.get("msssim_reals"), 3),
            num(f.get("acc_fake_held_out_captions"), 3), num(f.get("acc_real_held_out"), 3),
            num(f.get("chance_largest_group"), 3),
            num(f.get("balanced_acc_fake_held_out_captions"), 3), num(f.get("balanced_acc_real_held_out"), 3),
            num(f.get("balanced_chance"), 3),
            num(f.get("confident_share_fake"), 3), num(f.get("confident_share_real_held_out"), 3),
            f"{r['load_average']['mean']:.1f}", grid_link(r['grids']['final']),
        ]) + " |")
    head = ("| recipe | flags | data | condition | seed | min | kimg | res | SWD avg | SWD 16 px / 32 px "
            "| SWD real-vs-real | MS-SSIM | MS-SSIM reals "
            "| group acc. fakes (held-out captions) | real held-out | chance | balanced fakes | balanced real "
            "| balanced chance | one group, p >= 0.8: fakes | reals | load avg | final grid |\n"
            "| --- | --- | --- | --- | --: | --: | --: | --- | --: | --- | --: | --: | --: "
            "| --: | --: | --: | --: | --: | --: | --: | --: | --: | --- |")
    return "\n".join([head, *rows])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", choices=list(RECIPES))
    p.add_argument("--minutes", type=float)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--flags", default="", help="more `progan train` flags after the recipe's, to screen a lever "
                   "(e.g. \"--augment color,translation\"); the run is named with --name")
    p.add_argument("--name", help="the recipe's name in the results when --flags is given")
    p.add_argument("--condition", choices=["none", "auto", "text"],
                   help="default: the recipe's; auto: on the classes of a dataset with labels")
    p.add_argument("--data", type=Path, default=Path("data/emoji32"), help="built here when missing")
    p.add_argument("--runs", type=Path, default=Path("runs/recipe_quality"), help="where the run folders go")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--classifier-steps", type=int, default=400, help="batches of 128")
    p.add_argument("--classifier-seconds", type=float, default=240.0, help="cap on the classifier's training time")
    p.add_argument("--no-fidelity", action="store_true", help="skip the group classifier (screening runs)")
    p.add_argument("--eval-only", action="store_true", help="evaluate the run folder of an earlier invocation")
    p.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                   help="SWD, MS-SSIM and the grid at this truncation (results named ...-psiPSI; the group classifier's "
                   "test stays untruncated); default 1: none")
    p.add_argument("--table", type=Path, metavar="DIR", help="print the markdown table of DIR's results and exit")
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    if not args.recipe or not args.minutes:
        p.error("--recipe and --minutes are required (or --table DIR)")
    from progan.model_io import load_generator
    condition = args.condition or RECIPES[args.recipe][0]
    if args.flags and not args.name:
        p.error("--flags needs --name, the screened variant's name in the results")
    name = args.name or args.recipe
    tag = f"{name}-{condition}-s{args.seed}-{args.minutes:g}min"
    run_dir = args.runs / tag
    if not 0.0 <= args.truncation <= 1.0:
        p.error(f"--truncation must be in [0, 1], got {args.truncation}")
    result_tag = tag if args.truncation == 1.0 else f"{tag}-psi{args.truncation:g}"
    dataset = ensure_dataset(args.data)
    if condition == "text" and dataset.caption_embeddings is None:
        sys.exit(f"{args.data} has no caption embeddings: pip install -e '.[text]' and rebuild it")
    load_before = os.getloadavg()
    with LoadSampler() as load:
        if args.eval_only:
            info = json.loads((run_dir / "recipe_quality_train.json").read_text())
        else:
            if run_dir.exists():
                sys.exit(f"{run_dir} exists: remove it, or pass --eval-only to evaluate it again")
            info = train_recipe(args.recipe, condition, args.data, run_dir, args.minutes, args.seed,
                                args.flags.split())
    if not args.eval_only:
        info["load_average"] = {**load.summary(), "before": [round(v, 2) for v in load_before]}
        atomic_write_json(run_dir / "recipe_quality_train.json", info)
    train_load = info.get("load_average") or load.summary()  # the machine's load while it trained, not while it is evaluated
    G = load_generator(run_dir / "model")
    print(f"{tag}: {info['images_shown'] / 1000:.1f} kimg in {info['train_seconds'] / 60:.1f} min, "
          f"{G.output_resolution}x{G.output_resolution} (lod {G.lod:g}); load average during training "
          f"{train_load['mean']} (1-min, {train_load['min']}..{train_load['max']})", flush=True)
    result = {"recipe": name, "base_recipe": args.recipe, "flags": args.flags, "condition": condition,
              "seed": args.seed, "minutes": args.minutes, "data": str(args.data),
              "train": info, "resolution_reached": int(G.output_resolution), "lod_final": float(G.lod),
              "load_average": dict(train_load),
              "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__}
    result["truncation"] = args.truncation
    result["quality"] = quality(G, dataset, args.runs / "cache", args.truncation)
    if (not args.no_fidelity and dataset.column("groups") is not None and dataset.captions is not None
            and (dataset.caption_embeddings is not None or not G.cfg.text_size)):
        result["fidelity"] = fidelity(G, dataset, args.seed, args.classifier_steps, args.classifier_seconds)
    result["grids"] = grids(G, dataset, args.out / "recipe_quality" / result_tag, Path.cwd(), args.truncation)
    result["load_average"]["after"] = [round(v, 2) for v in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"recipe_quality-{result_tag}.json", result)
    print(f"wrote {args.out / f'recipe_quality-{result_tag}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
