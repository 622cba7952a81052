"""What a user of a text model gets: do prompts it never trained on turn its images toward the right thing?

    python -m benchmarks.text_fidelity --train --minutes 20 --seed 1            # a text and an unconditional model
    python -m benchmarks.text_fidelity --eval-only runs/text_fidelity/demo-text-s1-20min \\
        --baseline runs/text_fidelity/uncond-s1-20min                           # evaluate existing runs again
    python -m benchmarks.text_fidelity --table                                  # markdown tables of every result

The data is the built-in emoji (--data, default data/emoji32: built when missing). A fixed split (SPLIT_SEED, in
each Unicode group about HELD_OUT_SHARE of its images, all skin-tone variants of one emoji on the same side, ranked
by progan.seeds.unit_hash) holds emoji out of the GAN: both models train on a subset dataset written without them
(progan.data.prepare.write_subset: DIR-fidelity-train-no-skin-tones beside --data, without the skin-tone variants
as the text demo trains; --skin-tones keeps them: DIR-fidelity-train), so the held-out names are prompts the text
model never saw. `--train` trains the text model (the text demo's recipe, scripts/demo.sh with CONDITION=text, plus
--flags) and the unconditional one (the same networks, no condition; reused when its folder exists) for --minutes
each through `progan train`'s own argument parsing (benchmarks.recipe_quality.train_recipe), then evaluates.

Prompts, SEEDS samples each, latents and draws fixed per (prompt, seed):
- held-out names: the name of each held-out emoji (its variants' shared name, `variant_of`). Their images are new
  to the model; a few names are also texts it trained on (another emoji's keyword or alias, with caption
  variants): the result counts them (held_out_names_among_its_texts);
- everyday phrasings: PHRASINGS below, several per group, none a CLDR name, alias, emojilib keyword or caption
  variant (checked against the dataset's captions, "keywords" and "caption_variants" before a run, and against
  every text the emoji builder can make in tests/test_text_fidelity.py).
A prompt is read as the model reads it (progan.conditioning.rows.prompt_reading): "cond" conditions every seed on
the reading's condition (the weighted mean of its captions' vectors: what `progan generate --prompt` does); "draw"
lets each seed draw one caption of the reading with probability its weight.

The judge: benchmarks.recipe_quality's GroupClassifier, trained on the real images outside the held-out split
(at the model's output resolution, a fixed seed and step count), predicts the Unicode group of
- the text model's samples (target: the prompt's group), for both prompt sets and both readings;
- the held-out real images: the ceiling;
- the unconditional model's samples, scored against the same targets with the same latents: what a model that
  ignores the words gets (chance in practice).
Also: within-prompt diversity, the mean MS-SSIM over all pairs of one phrasing's SEEDS samples (lower: more
diverse), beside the same over SEEDS real images of one group; SWD of each model against the data it trained
on (benchmarks.recipe_quality.quality, EVAL_IMAGES images); and the share of each group among the training images
beside the share the judge puts in each group among each model's samples (SWD's, on random training captions):
which groups a model draws at all, whatever it is asked.

Results: benchmarks/results/text_fidelity-RUN.json (--out); grids in the text run's folder (not committed).
The table (--table [DIR]), one row per result:
    run, seed, min, kimg, res       the text run, its seed, training minutes, images shown, output resolution
    names cond / draw               balanced accuracy (mean over groups of the share put in the prompt's group) on
                                    the held-out names, reading's condition / a caption drawn per seed
    phrasings cond / draw           the same on the everyday phrasings
    real held-out                   the classifier on the held-out real images: the ceiling
    uncond names / phrasings        the unconditional model's samples against the same targets
    names / ceiling, phr. / ceiling balanced accuracy (draw) over the ceiling's (the goal: >= 0.8)
    groups > chance                 groups whose accuracy (draw) is above 1 / groups, names / phrasings (of 9)
    groups > uncond                 groups whose accuracy (draw) is above the unconditional model's on that group
    MS-SSIM prompt cond / draw      within-prompt diversity of the phrasings' samples
    MS-SSIM data prompt / group     the same for the data's own take on each phrasing (per seed, one training
                                    image of the caption the draw drew) and for SEEDS real images of one group
    MS-SSIM draw other captions /   like for like (the goal: within 20%): the model (draw) and the data on the
      data's / same caption         pairs of seeds that drew different captions; then the model on the pairs
                                    that drew the same caption, which the data cannot match (it holds one image
                                    per caption): below 1, each seed is its own take on the caption
    SWD, SWD uncond, SWD ratio      x1e3 against each model's training data; text over unconditional (goal <= 1.3),
                                    the unconditional model at the end of its run and at the text model's images
                                    shown (its nearest checkpoint): the fair one, the same resolution and fade
    load                            mean 1-minute load average while the models trained
A second table gives every group's accuracy per run, prompt set and reading.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmarks.recipe_quality import (
    EVAL_IMAGES,
    EVAL_SEED,
    GroupClassifier,
    LoadSampler,
    ensure_dataset,
    make_fakes,
    probabilities,
    quality,
    save_small_png,
    train_classifier,
    train_recipe,
)
from progan.data.dataset import PreparedDataset
from progan.data.prepare import write_subset
from progan.fileio import atomic_write_json
from progan.generate import render
from progan.metrics.msssim import ms_ssim
from progan.seeds import generator, unit_hash

SPLIT_SEED = 0
HELD_OUT_SHARE = 0.1
SEEDS = 8  # samples per prompt
GROUPS = ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places", "Activities",
          "Objects", "Symbols", "Flags"]
# The text demo's recipe (scripts/demo.sh, CONDITION=text): recipe_quality's "demo" recipe plus these flags. The
# unconditional model gets the same networks.
RECIPE = "demo"
TEXT_FLAGS = ["--cond-fade", "8:16", "--fmap-base", "512", "--cond-blocks", "--mismatch-weight", "0.25",
              "--ca-size", "128", "--lr", "0.003"]
# The unconditional model keeps every checkpoint: its SWD is compared with the text model's at equal images shown, and
# the text model may stop far before the unconditional one (it steps slower).
UNCOND_FLAGS = ["--fmap-base", "512", "--keep-checkpoints", "1000"]
# How a person asks, several per group. None may be a CLDR name or an emojilib keyword, even without its article
# ("a pirate flag" would be the name "pirate flag").
PHRASINGS = {
    "Smileys & Emotion": ["a happy face", "a face falling asleep", "a face in tears", "an angry red face",
                          "a laughing smiley", "a big red love heart"],
    "People & Body": ["a hand waving hello", "a hand giving a thumbs up", "a person running fast",
                      "a lady dancing in a red dress", "a man with a beard", "hands clapping together"],
    "Animals & Nature": ["a happy dog", "a cute little kitten", "a cheeky monkey", "a pink flower in bloom",
                         "a tall green tree", "a snake on the ground"],
    "Food & Drink": ["a cake with candles", "a slice of pizza", "a juicy apple", "a cup of hot coffee",
                     "a bowl of noodles", "a glass of wine"],
    "Travel & Places": ["a fast red car", "an airplane in the sky", "a big city at night", "a small house",
                        "a train on the tracks", "a rain cloud"],
    "Activities": ["a ball for playing football", "a present wrapped with a bow", "fireworks in the night sky",
                   "a trophy for the winner", "a game of bowling", "a decorated tree for christmas"],
    "Objects": ["a phone to call someone", "a pair of glasses", "a book to read", "a pair of scissors",
                "a glowing light bulb", "a guitar to play music"],
    "Symbols": ["a sign saying do not enter", "a recycling sign", "the number one", "an arrow pointing right",
                "a big red cross mark", "a warning sign"],
    "Flags": ["the flag of a country", "the flag of Japan", "the American flag", "a black pirate flag",
              "a rainbow pride flag", "a checkered racing flag"],
}
# How a prompt's seeds are conditioned: (draw, noise). cond: every seed takes the reading's condition, the weighted
# mean of its captions' vectors; draw: each seed draws one caption of the reading with probability its weight; noise:
# each seed also samples the conditioning augmentation's noise around the code, as training does.
MODES = {"cond": (False, False), "noise": (False, True), "draw": (True, False), "draw_noise": (True, True)}
USER_MODE = "draw"  # what `progan generate --prompt` and the studio do by default: the headline
CLASSIFIER_STEPS = 1200  # batches of 128, the groups drawn equally often
CLASSIFIER_SECONDS = 1800.0  # only a guard: the step count decides, so that every evaluation has the same judge
DATA_BLOCKS = 8  # blocks of SEEDS real images per group for the data's within-group MS-SSIM


# --- the split and the subset the GAN trains on ------------------------------------------------------------------

def held_out_split(groups: list, keys: list, share: float = HELD_OUT_SHARE, seed: int = SPLIT_SEED) -> list[int]:
    """Sorted indices of the held-out images. An emoji is the images of one key (variant_of: a skin-tone variant's
    key is the emoji it recolours), held out or kept whole. In each group, emoji are taken in the order of
    unit_hash(seed, key) while taking one brings the group's held-out images closer to `share` of its images.
    Images without a group are never held out."""
    emoji: dict[str, list[int]] = {}
    group_of: dict[str, str] = {}
    for i, (group, key) in enumerate(zip(groups, keys)):
        if group:
            emoji.setdefault(key, []).append(i)
            group_of.setdefault(key, group)
    held = []
    for group in sorted(set(group_of.values())):
        members = sorted((k for k in emoji if group_of[k] == group), key=lambda k: unit_hash(seed, "held-out", k))
        want = share * sum(len(emoji[k]) for k in members)
        taken = 0
        for key in members:
            if taken + len(emoji[key]) / 2 <= want:
                held += emoji[key]
                taken += len(emoji[key])
    return sorted(held)


def skin_tone_variants(full: PreparedDataset) -> list[int]:
    """The images that recolour another emoji (their variant_of is not their own caption)."""
    return [i for i, (key, caption) in enumerate(zip(key_column(full), full.captions)) if key != caption]


def ensure_subset(full: PreparedDataset, held: list[int], path: Path, leave_out: list[int] = ()) -> PreparedDataset:
    """The GAN's training data: `full` without the held-out images and `leave_out` (written once; checked when it
    exists)."""
    held_set = set(held) | set(leave_out)
    keep = [i for i in range(full.count) if i not in held_set]
    if not (path / "manifest.json").is_file():
        print(f"writing the training subset {path} ({len(keep)} of {full.count} images)", flush=True)
        write_subset(full, keep, path)
    subset = PreparedDataset(path)
    same = (subset.captions == [full.captions[i] for i in keep] and subset.columns.keys() == full.columns.keys()
            and (subset.caption_embeddings is None) == (full.caption_embeddings is None)
            and (subset.caption_embeddings is None or torch.equal(subset.caption_embeddings,
                                                                  full.caption_embeddings[keep])))
    if not same:
        sys.exit(f"{path} is not {full.path} without the held-out split (another split, or {full.path} was built "
                 "again since): remove it to write it again")
    return subset


def key_column(dataset: PreparedDataset) -> list:
    return dataset.column("variant_of") or dataset.captions


# --- prompts ------------------------------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """How two phrasings are compared: case, underscores, spacing and a leading article do not count."""
    words = text.casefold().replace("_", " ").split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def phrasing_collisions(captions: list, *word_lists: list) -> list[str]:
    """The phrasings that are a caption or one of the words in a per-image list of words (the dataset's "keywords",
    "caption_variants"), after normalise."""
    taken = {normalise(c) for c in captions if c}
    taken |= {normalise(w) for words_of_all in word_lists for words in words_of_all if words for w in words}
    return [p for phrasings in PHRASINGS.values() for p in phrasings if normalise(p) in taken]


def held_out_names(full: PreparedDataset, held: list[int]) -> dict[str, str]:
    """prompt -> group: the name of each held-out emoji."""
    keys, groups = key_column(full), full.column("groups")
    return {keys[i]: groups[i] for i in held if groups[i] in GROUPS}


def check_unseen(G, full: PreparedDataset, held: list[int]) -> None:
    """Refuse a text model whose training data (the folder its model records) held any held-out emoji."""
    data = G.meta.get("dataset")
    if not data or not (Path(data) / "manifest.json").is_file():
        print(f"note: the text model's data {data!r} is not here: cannot check it never saw the held-out emoji")
        return
    seen = set(PreparedDataset(data).captions or []) & {full.captions[i] for i in held}
    if seen:
        raise SystemExit(f"the text model trained on {len(seen)} of the held-out emoji (e.g. {sorted(seen)[0]!r}), "
                         f"in {data}: train it on the subset without them (python -m benchmarks.text_fidelity --train)")


def latents(G, prompt: str, seeds: int) -> torch.Tensor:
    return torch.stack([torch.randn(G.latent_size, generator=generator(s, "text-fidelity", prompt))
                        for s in range(seeds)])


def draws(reading, prompt: str, seeds: int) -> torch.Tensor:
    """Per seed, the index (into the model's caption vectors) of one caption of the reading, drawn by weight."""
    picks = [int(torch.multinomial(reading.weights, 1, generator=generator(s, "text-fidelity-draw", prompt)))
             for s in range(seeds)]
    return reading.indices[picks]


def prompt_samples(G, prompts: list[str], readings: dict | None, draw: bool = False,
                   seeds: int = SEEDS, noise: bool = False, truncation: float = 1.0) -> torch.Tensor:
    """uint8 [len(prompts) * seeds, 3, r, r], each prompt's seeds together. readings: prompt -> PromptReading for a
    text model, None for an unconditional one (the same latents, no condition). noise: sample the conditioning
    augmentation's noise per seed, as training does, instead of taking its mean. truncation: as `progan generate
    --truncation`, each seed pulled toward the centre of its own condition row."""
    z = torch.cat([latents(G, p, seeds) for p in prompts])
    cond, ca = None, None
    if noise and readings is not None and G.cfg.ca_size:
        ca = torch.stack([torch.randn(G.cfg.ca_size, generator=generator(s, "text-fidelity-noise", p))
                          for p in prompts for s in range(seeds)])
    if readings is not None:
        vectors = G.meta["conditioning"]["caption_vectors"]
        cond = torch.cat([vectors[draws(readings[p], p, seeds)] if draw else
                          readings[p].condition.view(1, -1).expand(seeds, -1) for p in prompts]).float()
    return render(G, z, truncation, cond=cond, noise=ca)


def images_of_texts(dataset: PreparedDataset) -> dict[str, list[int]]:
    """text -> the images of `dataset` it captions: their own caption, or one of their caption variants."""
    images: dict[str, list[int]] = {}
    variants = dataset.column("caption_variants") or [[]] * dataset.count
    for i, (caption, more) in enumerate(zip(dataset.captions, variants)):
        for text in {caption, *(more or [])} - {None, ""}:
            images.setdefault(text, []).append(i)
    return images


def reading_reals(G, images_of: dict[str, list[int]], reading, prompt: str, seeds: int = SEEDS) -> list[int]:
    """The data's own take on a prompt: per seed, the caption the model's "draw" reading draws (the same draw), then
    one of the training images that text captions, uniformly (fixed per prompt and seed)."""
    captions = G.meta["conditioning"]["captions"]
    out = []
    for s, index in enumerate(draws(reading, prompt, seeds).tolist()):
        members = images_of[captions[index]]
        out.append(members[int(torch.randint(len(members), (1,), generator=generator(s, "text-fidelity-real",
                                                                                        prompt)))])
    return out


# --- the judge ----------------------------------------------------------------------------------------------------

def judge(images: torch.Tensor, labels: torch.Tensor, steps: int, seconds: float, cache: Path | None = None
          ) -> tuple[GroupClassifier, dict]:
    """The group classifier trained on real images (uint8 [N, 3, r, r], their group indices), balanced over the
    groups, SPLIT_SEED its seed: loaded from `cache` when one was trained on exactly these images and labels with
    these steps (safetensors, no code), else trained and saved there."""
    digest = hashlib.sha256()
    for part in (images.numpy().tobytes(), labels.numpy().tobytes(), f"{steps} {SPLIT_SEED} balanced".encode()):
        digest.update(part)
    path = None if cache is None else cache / f"judge-{digest.hexdigest()[:24]}.safetensors"
    if path is not None and path.is_file():
        net = GroupClassifier(len(GROUPS))
        net.load_state_dict(load_file(path))
        return net, json.loads(path.with_suffix(".json").read_text())
    net, how = train_classifier(images, labels, len(GROUPS), SPLIT_SEED, steps, seconds, balanced=True)
    if path is not None and how["classifier_steps"] == steps:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path.with_suffix(".json"), how)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return net, how


def per_group(pred: torch.Tensor, truth: torch.Tensor, names: list[str] = GROUPS) -> dict:
    """Accuracy per group (the share of its images predicted as it; None for a group without images) and balanced
    accuracy, their mean over the groups present."""
    groups = {name: (round(float((pred[truth == c] == c).float().mean()), 4) if (truth == c).any() else None)
              for c, name in enumerate(names)}
    present = [v for v in groups.values() if v is not None]
    return {"balanced": round(sum(present) / len(present), 4), "groups": groups, "images": len(truth)}


def group_shares(pred: torch.Tensor, names: list[str] = GROUPS) -> dict[str, float]:
    """The share of images put in each group."""
    return {name: round(float((pred == c).float().mean()), 4) for c, name in enumerate(names)}


def judged(net, images: torch.Tensor, targets: list[str], seeds: int = SEEDS) -> dict:
    """per_group of the classifier's predictions; targets: the group of each prompt (seeds images each)."""
    truth = torch.tensor([GROUPS.index(g) for g in targets]).repeat_interleave(seeds)
    return per_group(probabilities(net, images).argmax(1), truth)


# --- diversity ----------------------------------------------------------------------------------------------------

def within_block_msssim(images: torch.Tensor, block: int) -> float:
    """Mean MS-SSIM over all pairs within each consecutive block of `block` images (a last, shorter block is left
    out)."""
    pairs = block * (block - 1) // 2
    return pairs_msssim(images, block, torch.ones(len(images) // block, pairs, dtype=torch.bool))


def same_caption_pairs(readings: dict, prompts: list[str], seeds: int = SEEDS) -> torch.Tensor:
    """[len(prompts), pairs] bool, the pairs of each prompt's seeds in torch.triu_indices order: did both seeds draw
    the same caption of the reading?"""
    i, j = torch.triu_indices(seeds, seeds, 1)
    return torch.stack([(d[i] == d[j]) for d in (draws(readings[p], p, seeds) for p in prompts)])


def pairs_msssim(images: torch.Tensor, block: int, chosen: torch.Tensor) -> float | None:
    """Mean MS-SSIM over the pairs `chosen` ([blocks, pairs] bool, triu order) of each block of `block` images."""
    i, j = torch.triu_indices(block, block, 1)
    values = [ms_ssim(b[i][c], b[j][c]) for b, c in zip(images.float().split(block), chosen) if c.any()]
    return round(float(torch.cat(values).mean()), 4) if values else None


def data_msssim(dataset: PreparedDataset, res: int, exclude: list[int], seed: int = SPLIT_SEED,
                block: int = SEEDS) -> float:
    """within_block_msssim of DATA_BLOCKS blocks of `block` distinct real images per group, averaged over groups."""
    groups, skip = dataset.column("groups"), set(exclude)
    values = []
    for group in GROUPS:
        members = torch.tensor([i for i, g in enumerate(groups) if g == group and i not in skip])
        if len(members) < block:
            continue
        gen = generator(seed, "text-fidelity", "data-blocks", group)
        idx = torch.cat([members[torch.randperm(len(members), generator=gen)[:block]] for _ in range(DATA_BLOCKS)])
        values.append(within_block_msssim(dataset.images(res, idx), block))
    return round(sum(values) / len(values), 4) if values else None


# --- a whole evaluation ---------------------------------------------------------------------------------------

def judge_split(full: PreparedDataset, held: list[int]) -> tuple[list[int], list[int], torch.Tensor]:
    """(the images the judge trains on: in GROUPS and not held out; the held-out images in GROUPS, which it scores
    as the ceiling; every image's group index or -1)."""
    groups, held_set = full.column("groups"), set(held)
    labels = torch.tensor([GROUPS.index(g) if g in GROUPS else -1 for g in groups])
    train_idx = [i for i, g in enumerate(groups) if g in GROUPS and i not in held_set]
    return train_idx, [i for i in held if groups[i] in GROUPS], labels


def headline(G, full: PreparedDataset, held: list[int], steps: int = CLASSIFIER_STEPS,
             seconds: float = CLASSIFIER_SECONDS, cache: Path | None = None, encoder=None,
             truncation: float = 1.0) -> dict:
    """The benchmark's headline for any text model, one trained on every emoji included (the text demo's): the
    everyday phrasings (never a caption, so unseen whatever it trained on) sampled as a user gets them (USER_MODE,
    at `truncation`), put in their group by the benchmark's judge, beside the judge on the held-out real images."""
    from progan.conditioning.encoder import encoder_for
    from progan.conditioning.rows import prompt_reading

    encoder = encoder or encoder_for(G.meta["conditioning"]["encoder"])
    phrasings = {p: g for g, ps in PHRASINGS.items() for p in ps}
    readings = {p: prompt_reading(G, p, encoder) for p in phrasings}
    res = int(G.output_resolution)
    train_idx, judged_held, labels = judge_split(full, held)
    net, _ = judge(full.images(res, train_idx), labels[train_idx], steps, seconds, cache)
    draw, noise = MODES[USER_MODE]
    fakes = judged(net, prompt_samples(G, list(phrasings), readings, draw=draw, noise=noise, truncation=truncation),
                   list(phrasings.values()))
    reals = per_group(probabilities(net, full.images(res, judged_held)).argmax(1), labels[judged_held])
    return {"mode": USER_MODE, "truncation": truncation, "phrasings": fakes["balanced"], "real_held_out": reals["balanced"],
            "share_of_real": round(fakes["balanced"] / reals["balanced"], 3), "chance": round(1 / len(GROUPS), 4),
            "groups_above_chance": sum(v > 1 / len(GROUPS) for v in fakes["groups"].values() if v is not None)}


def evaluate(G, U, full: PreparedDataset, held: list[int], encoder=None, steps: int = CLASSIFIER_STEPS,
             seconds: float = CLASSIFIER_SECONDS, grids: Path | None = None, cache: Path | None = None,
             truncation: float = 1.0, train_data: PreparedDataset | None = None) -> dict:
    """Fidelity and diversity of text model G beside unconditional model U (or None); `held` the held-out split of
    the full dataset `full`. encoder: the loaded text encoder (default: G's, found by its record); cache: a folder
    for the judge (trained once per resolution and training images); truncation: G's samples pulled toward each
    condition row's centre (`progan generate --truncation`; U's are not truncated). train_data: the models'
    training set; given, the result also holds the share of each group among its images and the share the judge
    puts in each group among both models' samples (SWD's: EVAL_IMAGES, each on a random training caption)."""
    from progan.conditioning.rows import prompt_reading

    check_unseen(G, full, held)
    if encoder is None:
        from progan.conditioning.encoder import encoder_for
        encoder = encoder_for(G.meta["conditioning"]["encoder"])
    if grids is not None:
        grids.mkdir(parents=True, exist_ok=True)
    names = held_out_names(full, held)
    phrasings = {p: g for g, ps in PHRASINGS.items() for p in ps}
    sets = {"names": names, "phrasings": phrasings}
    readings = {p: prompt_reading(G, p, encoder) for s in sets.values() for p in s}

    held_set = set(held)
    train_idx, judged_held, labels = judge_split(full, held)
    classifiers = {}

    def classifier(res):  # one per resolution: the same judge for every model that renders at it
        if res not in classifiers:
            classifiers[res] = judge(full.images(res, train_idx), labels[train_idx], steps, seconds, cache)
        return classifiers[res]

    res = int(G.output_resolution)
    net, how = classifier(res)
    out = {"groups": GROUPS, "resolution": res, "truncation": truncation, **how, "train_images": len(train_idx),
           "held_out_images": len(judged_held), "held_out_names": len(names),
           "phrasings": len(phrasings), "seeds": SEEDS, "chance": round(1 / len(GROUPS), 4),
           # the held-out emoji's images are new to the model, but a name may be a text it trained on (another
           # emoji's keyword, e.g.): how many are
           "held_out_names_among_its_texts": len(set(names) & set(G.meta["conditioning"]["captions"])),
           "real_held_out": per_group(probabilities(net, full.images(res, judged_held)).argmax(1),
                                      labels[judged_held])}
    diversity = {}
    same_drawn = same_caption_pairs(readings, list(phrasings))  # the phrasings' pairs of seeds that drew one caption
    for set_name, targets in sets.items():
        prompts = list(targets)
        for mode, (draw, noise) in MODES.items():
            images = prompt_samples(G, prompts, readings, draw=draw, noise=noise, truncation=truncation)
            out[f"{set_name}_{mode}"] = judged(net, images, [targets[p] for p in prompts])
            if res >= 16:
                diversity[f"{set_name}_{mode}"] = within_block_msssim(images, SEEDS)
            if res >= 16 and set_name == "phrasings" and mode == "draw":
                diversity["phrasings_draw_same_caption"] = pairs_msssim(images, SEEDS, same_drawn)
                diversity["phrasings_draw_other_captions"] = pairs_msssim(images, SEEDS, ~same_drawn)
            if grids is not None and set_name == "phrasings":  # the first phrasing of each group, a row of seeds
                rows = [prompts.index(ps[0]) for ps in PHRASINGS.values()]
                grid = torch.cat([images[r * SEEDS:(r + 1) * SEEDS] for r in rows])
                save_small_png(grid, grids / f"phrasings-{mode}.png", SEEDS, min_cell=32)
        if U is not None:
            images = prompt_samples(U, prompts, None)
            out[f"uncond_{set_name}"] = judged(classifier(int(U.output_resolution))[0], images,
                                               [targets[p] for p in prompts])
            if U.output_resolution >= 16:
                diversity[f"uncond_{set_name}"] = within_block_msssim(images, SEEDS)
    if U is not None:
        out["uncond_resolution"] = int(U.output_resolution)
    # The data's own take on each prompt (per seed, a training image of the caption the model's draw took), judged:
    # what a model that drew every caption it trained on as the data does would score. Below it, the drawing is
    # what falls short; it is itself below the ceiling where the reading draws captions of other groups.
    texts = {t: [i for i in idx if i not in held_set] for t, idx in images_of_texts(full).items()}
    takes = {}
    for set_name, targets in sets.items():
        reals = [i for p in targets for i in reading_reals(G, texts, readings[p], p)]
        takes[set_name] = full.images(res, torch.tensor(reals))
        out[f"{set_name}_data_take"] = judged(net, takes[set_name], list(targets.values()))
    if res >= 16:
        diversity["data_within_group"] = data_msssim(full, res, held)
        diversity["data_within_prompt"] = within_block_msssim(takes["phrasings"], SEEDS)
        # the data holds one image per caption: where two seeds drew one caption, its "take" is twice the same
        # image. Those pairs say nothing about the data's variety, so the like-for-like comparison is on the
        # pairs that drew different captions; the model's same-caption pairs show whether it varies one caption
        diversity["data_within_prompt_other_captions"] = pairs_msssim(
            takes["phrasings"], SEEDS, ~same_drawn)
    if train_data is not None:  # which groups the models draw at all, whatever they are asked
        truth = [g for g in train_data.column("groups") if g in GROUPS]
        out["shares"] = {"data": {g: round(truth.count(g) / len(truth), 4) for g in GROUPS},
                         "text": group_shares(probabilities(net, make_fakes(G, train_data, EVAL_IMAGES, EVAL_SEED))
                                              .argmax(1))}
        if U is not None:  # judged as its prompts' samples are: by the judge at its own resolution
            z = torch.randn(EVAL_IMAGES, U.latent_size, generator=torch.Generator().manual_seed(EVAL_SEED))
            u_net = classifier(int(U.output_resolution))[0]
            out["shares"]["uncond"] = group_shares(probabilities(u_net, render(U, z)).argmax(1))
    if grids is not None:  # how each phrasing was read: the same for every model of one data set, so beside the grids
        atomic_write_json(grids / "readings.json", {p: readings[p].describe() for p in phrasings})
    return {"fidelity": out, "diversity": diversity}


# --- the tables ---------------------------------------------------------------------------------------------------

def num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a, b) -> float | None:
    return None if a is None or not b else a / b


def above(f: dict, key: str, than: str | None = None) -> str:
    """'k/n': of the n groups judged in fidelity `f`'s `key`, those whose accuracy is above chance, or above the
    accuracy in `than` (the unconditional model's) on that group."""
    if key not in f or (than is not None and than not in f):
        return "-"
    mine = {g: v for g, v in f[key]["groups"].items() if v is not None}
    bar = (lambda g: f["chance"]) if than is None else (lambda g: f[than]["groups"][g])
    return f"{sum(v > bar(g) for g, v in mine.items())}/{len(mine)}"


def read_results(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("text_fidelity-*.json"))]


def table(results: list[dict]) -> str:
    """The markdown table of results (one row each), then every group's accuracy."""
    rows, group_rows = [], []
    for r in results:
        f, d = r["fidelity"], r.get("diversity", {})
        bal = lambda key: f[key]["balanced"] if key in f else None  # noqa: E731
        ceiling = bal("real_held_out")
        text_q, uncond_q = r["text"].get("quality", {}), (r.get("uncond") or {}).get("quality", {})
        noise_q = r["text"].get("quality_noise", {})
        equal = r.get("uncond_at_equal_images") or {}
        equal_q = equal.get("quality", {})
        fading = r["text"]["lod"] != int(r["text"]["lod"])
        every_mode = lambda get, prefix: " / ".join(num(get(f"{prefix}_{m}")) for m in MODES)  # noqa: E731
        rows.append("| " + " | ".join([
            r["name"], str(r["seed"]), f"{r['minutes']:g}" if r.get("minutes") else "-",
            f"{r['text']['kimg']:.1f}",
            f"{r['text']['resolution']}" + (f" (lod {r['text']['lod']:.2f})" if fading else ""),
            every_mode(bal, "names"), every_mode(bal, "phrasings"),
            num(ceiling), f"{num(bal('uncond_names'))} / {num(bal('uncond_phrasings'))}",
            num(ratio(bal(f"names_{USER_MODE}"), ceiling), 2), num(ratio(bal(f"phrasings_{USER_MODE}"), ceiling), 2),
            f"{num(ratio(bal('names_data_take'), ceiling), 2)} / {num(ratio(bal('phrasings_data_take'), ceiling), 2)}",
            f"{above(f, f'names_{USER_MODE}')} / {above(f, f'phrasings_{USER_MODE}')}",
            f"{above(f, f'names_{USER_MODE}', 'uncond_names')} / "
            f"{above(f, f'phrasings_{USER_MODE}', 'uncond_phrasings')}",
            every_mode(d.get, "phrasings"),
            f"{num(d.get('data_within_prompt'))} / {num(d.get('data_within_group'))}",
            f"{num(d.get('phrasings_draw_other_captions'))} / {num(d.get('data_within_prompt_other_captions'))} / "
            f"{num(d.get('phrasings_draw_same_caption'))}",
            f"{num(text_q.get('swd'), 1)} / {num(noise_q.get('swd'), 1)}",
            f"{num(uncond_q.get('swd'), 1)} / {num(equal_q.get('swd'), 1)}"
            + (f" ({equal['kimg']:.1f})" if equal else ""),
            f"{num(ratio(text_q.get('swd'), uncond_q.get('swd')), 2)} / "
            f"{num(ratio(text_q.get('swd'), equal_q.get('swd')), 2)} / "
            f"{num(ratio(noise_q.get('swd'), equal_q.get('swd')), 2)}",
            num((r.get("load_average") or {}).get("mean"), 1),
        ]) + " |")
        for key in [f"{s}_{m}" for s in ("names", "phrasings") for m in MODES] + [
                "names_data_take", "phrasings_data_take", "real_held_out", "uncond_names", "uncond_phrasings"]:
            if key in f:
                group_rows.append(f"| {r['name']} s{r['seed']} | {key.replace('_', ' ')} | "
                                  + " | ".join(num(f[key]["groups"].get(g), 2) for g in GROUPS) + " |")
        for key, shares in f.get("shares", {}).items():  # not accuracies: how often each group is drawn at all
            group_rows.append(f"| {r['name']} s{r['seed']} | share of {key if key == 'data' else key + ' samples'} "
                              "| " + " | ".join(num(shares.get(g), 2) for g in GROUPS) + " |")
    modes = " / ".join(MODES).replace("_", "+")
    head = (f"| run | seed | min | kimg | res | names {modes} | phrasings {modes} | real held-out "
            f"| uncond names / phrasings | names / ceiling ({USER_MODE}) | phr. / ceiling "
            "| the data's take / ceiling (names / phr.) | groups > chance "
            f"| groups > uncond | MS-SSIM prompt {modes} | MS-SSIM data prompt / group "
            "| MS-SSIM draw other captions / data's / same caption | SWD / with condition noise "
            "| SWD uncond end / equal images (its kimg) | SWD ratio end / equal images / equal, noise | load |\n"
            "| --- | --: | --: | --: | --- | --- | --- | --: | --- | --: | --: | --: | --- | --- | --- | --- | --- "
            "| --: | --: | --: | --: |")
    group_head = ("| run | prompts | " + " | ".join(GROUPS) + " |\n| --- | --- | " + " | ".join("--:" for _ in GROUPS)
                  + " |")
    return "\n".join([head, *rows, "", "Accuracy per group (and the share of each group among the training images "
                      "and, by the judge, among each model's samples on random training captions):", "", group_head,
                      *group_rows])


# --- main ---------------------------------------------------------------------------------------------------------

def model_summary(G, run: Path) -> dict:
    info_file = run / "text_fidelity_train.json"
    return {"run": str(run), "kimg": round(float(G.meta["kimg"]), 1), "resolution": int(G.output_resolution),
            "lod": float(G.lod), "trained_on": G.meta.get("dataset"),
            "train": json.loads(info_file.read_text()) if info_file.is_file() else None}


def snapshots(run: Path) -> list[tuple[float, Path]]:
    """(kimg, folder) of every generator a run holds: its exported model and each checkpoint."""
    from progan.model_io import exported_kimg
    from progan.train.checkpoint import list_checkpoints, read_state

    found = [(read_state(c)["cur_nimg"] / 1000, c) for c in list_checkpoints(run)]
    if (run / "model").exists():
        found.append((exported_kimg(run / "model"), run / "model"))
    return sorted(found, key=lambda kf: kf[0])


def at_images(run: Path, kimg: float) -> tuple[float, Path]:
    """The generator of `run` nearest to `kimg` images shown. The schedule is a function of images shown, so at equal
    images two runs of one preset are at the same resolution and fade: comparing at equal time instead flatters
    whichever model has finished a fade-in the other is in the middle of."""
    found = snapshots(run)
    if not found:
        sys.exit(f"{run} holds no model or checkpoint to compare with")
    return min(found, key=lambda kf: abs(kf[0] - kimg))


def train_model(condition: str, flags: list[str], data: Path, run: Path, minutes: float, seed: int) -> None:
    with LoadSampler() as load:
        info = train_recipe(RECIPE, condition, data, run, minutes, seed, flags)
    info["load_average"] = load.summary()
    # the results' cpu_threads are the evaluation's; runs trained alone on every core show more images per minute
    info["cpu_threads"] = torch.get_num_threads()
    atomic_write_json(run / "text_fidelity_train.json", info)


def print_headline(args) -> int:
    from progan.model_io import load_generator

    G = load_generator(args.headline / "model" if (args.headline / "model").is_dir() else args.headline)
    full = ensure_dataset(args.data)
    held = held_out_split(full.column("groups"), key_column(full))
    h = headline(G, full, held, steps=args.classifier_steps, cache=args.runs / "cache", truncation=args.truncation)
    print(f"Words it never saw: {sum(map(len, PHRASINGS.values()))} everyday phrasings put in the right "
          f"emoji group {h['phrasings']:.2f} of the time (balanced over {len(GROUPS)} groups, chance "
          f"{h['chance']:.2f}; real images {h['real_held_out']:.2f}: {h['share_of_real']:.2f} of theirs; "
          f"{h['groups_above_chance']}/{len(GROUPS)} groups above chance"
          + (f"; truncation {args.truncation:g})" if args.truncation != 1 else ")"))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", action="store_true", help="train a text and an unconditional model, then evaluate")
    p.add_argument("--eval-only", type=Path, metavar="RUN", help="evaluate this text run")
    p.add_argument("--baseline", type=Path, metavar="RUN", help="the unconditional run (default with --train: "
                   "RUNS/uncond-no-skin-tones-sSEED-MINUTESmin, or uncond-sSEED-MINUTESmin with --skin-tones; trained "
                   "when missing)")
    p.add_argument("--no-baseline", action="store_true", help="with --train: no unconditional model (no SWD ratio): "
                   "a screen whose images are judged against another run's")
    p.add_argument("--minutes", type=float, help="training time per model")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--flags", default="", help="more `progan train` flags for the text model, after the text demo's "
                   "(a variant to measure; name it with --name)")
    p.add_argument("--name", help="the text model's name in the results (default demo-text)")
    p.add_argument("--data", type=Path, default=Path("data/emoji32"), help="the full emoji dataset (built when "
                   "missing); the models train on DATA-fidelity-train-no-skin-tones (--skin-tones: "
                   "DATA-fidelity-train)")
    p.add_argument("--skin-tones", action="store_true", help="both models train with the skin-tone variants too "
                   "(the text demo's data until it left them out: 60%% of the images are then People & Body); the "
                   "judge and the held-out split are those of the whole set either way")
    p.add_argument("--runs", type=Path, default=Path("runs/text_fidelity"), help="where --train's run folders go")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--classifier-steps", type=int, default=CLASSIFIER_STEPS)
    p.add_argument("--at-kimg", type=float, metavar="K", help="with --eval-only: evaluate the run's checkpoint "
                   "nearest to K kimg (the recipe at the images shown of a variant that stopped earlier); the result's "
                   "name and file get -atKkimg")
    p.add_argument("--truncation", type=float, default=1.0, metavar="PSI", help="sample the text model's prompts "
                   "as `progan generate --truncation PSI` does (default 1: none); the result's name and file get "
                   "-psiPSI")
    p.add_argument("--headline", type=Path, metavar="RUN", help="print the headline for any text run (one trained on "
                   "every emoji too: the text demo's): its everyday phrasings beside the real images, then exit")
    p.add_argument("--table", type=Path, nargs="?", const=Path("benchmarks/results"), metavar="DIR",
                   help="print the markdown tables of DIR's results (default benchmarks/results) and exit")
    args = p.parse_args()
    if args.table:
        print(table(read_results(args.table)))
        return 0
    if not 0 <= args.truncation <= 1:
        p.error(f"--truncation {args.truncation:g}: must be in [0, 1]")
    if args.headline:
        return print_headline(args)
    if args.train == bool(args.eval_only):
        p.error("give --train (with --minutes) or --eval-only RUN, or --table")
    if args.train and not args.minutes:
        p.error("--train needs --minutes")
    if args.no_baseline and (args.baseline or not args.train):
        p.error("--no-baseline is for --train, without --baseline")
    if args.at_kimg is not None and not args.eval_only:
        p.error("--at-kimg is for --eval-only")
    if args.flags and not args.name:
        p.error("--flags needs --name, the variant's name in the results")
    from progan.model_io import load_generator

    full = ensure_dataset(args.data)
    if full.column("groups") is None or full.caption_embeddings is None:
        sys.exit(f"{args.data} needs the Unicode groups and caption embeddings: pip install -e '.[text]', "
                 "apt-get install unicode-data, and build it again")
    clash = phrasing_collisions(full.captions, full.column("keywords") or [], full.column("caption_variants") or [])
    if clash:
        sys.exit(f"these phrasings are captions, keywords or caption variants of {args.data}: {clash}")
    held = held_out_split(full.column("groups"), key_column(full))
    skin_tones = args.skin_tones
    if args.eval_only:  # the data the run trained on decides, so that its SWD is against that data
        trained_on = json.loads((args.eval_only / "config.json").read_text())["data"]
        skin_tones = not trained_on.endswith("-no-skin-tones")
    variant = "" if skin_tones else "-no-skin-tones"
    subset_dir = args.data.with_name(args.data.name + "-fidelity-train" + variant)
    subset = ensure_subset(full, held, subset_dir, [] if skin_tones else skin_tone_variants(full))

    name = args.name or "demo-text"
    if args.train:
        text_run = args.runs / f"{name}-s{args.seed}-{args.minutes:g}min"
        baseline = args.baseline or args.runs / f"uncond{variant}-s{args.seed}-{args.minutes:g}min"
        if text_run.exists():
            sys.exit(f"{text_run} exists: remove it, or evaluate it with --eval-only {text_run}")
        train_model("text", TEXT_FLAGS + args.flags.split(), subset_dir, text_run, args.minutes, args.seed)
        if args.no_baseline:
            baseline = None
        elif (baseline / "model").exists():
            print(f"reusing the unconditional model {baseline}", flush=True)
        else:
            train_model("none", UNCOND_FLAGS, subset_dir, baseline, args.minutes, args.seed)
    else:
        text_run, baseline = args.eval_only, args.baseline
        name = args.name or text_run.name
    # --at-kimg: a checkpoint of the run, which load_generator gives the conditioning its exported model records
    G = load_generator(text_run / "model" if args.at_kimg is None else at_images(text_run, args.at_kimg)[1])
    U = load_generator(baseline / "model") if baseline else None
    if U is not None and U.meta.get("dataset") != G.meta.get("dataset"):
        print(f"note: the baseline trained on {U.meta.get('dataset')}, the text model on {G.meta.get('dataset')}",
              flush=True)
    config = json.loads((text_run / "config.json").read_text())
    suffix = ("" if args.at_kimg is None else f"-at{G.meta['kimg']:g}kimg") + (
        "" if args.truncation == 1.0 else f"-psi{args.truncation:g}")
    result = {"name": name + suffix, "seed": config.get("seed"), "minutes": config.get("minutes"), "data": str(args.data),
              "train_data": str(subset_dir), "split": {"seed": SPLIT_SEED, "share": HELD_OUT_SHARE},
              "text": model_summary(G, text_run), "uncond": model_summary(U, baseline) if U is not None else None,
              "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__}
    loads = [m["train"]["load_average"]["mean"] for m in (result["text"], result["uncond"])
             if m and m["train"] and "load_average" in m["train"]]
    result["load_average"] = {"mean": round(sum(loads) / len(loads), 2)} if loads else None
    print(f"{name}: {result['text']['kimg']} kimg, {G.output_resolution}x{G.output_resolution}; "
          f"{len(held)} held-out images", flush=True)
    result.update(evaluate(G, U, full, held, steps=args.classifier_steps, grids=text_run / f"text_fidelity{suffix}",
                           cache=args.runs / "cache", truncation=args.truncation, train_data=subset))
    # SWD of both against the data they trained on (the subset), with the same images and seed
    result["text"]["quality"] = quality(G, subset, args.runs / "cache")
    if G.cfg.ca_size:  # and as `--condition-noise` samples it: each image its own draw around its caption's code
        result["text"]["quality_noise"] = quality(G, subset, args.runs / "cache", condition_noise=True)
    if U is not None:
        result["uncond"]["quality"] = quality(U, subset, args.runs / "cache")
        kimg, folder = at_images(baseline, result["text"]["kimg"])
        same = load_generator(folder)
        result["uncond_at_equal_images"] = {
            "source": str(folder), "kimg": round(kimg, 1), "lod": float(same.lod),
            "quality": result["uncond"]["quality"] if folder == baseline / "model" else
            quality(same, subset, args.runs / "cache")}
    result["eval_images"] = EVAL_IMAGES
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"text_fidelity-{text_run.name}{suffix}.json"
    atomic_write_json(out, result, indent=None)  # one line: dozens of these are kept in the repository
    print(table([result]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
