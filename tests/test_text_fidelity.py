"""benchmarks.text_fidelity: the held-out split, the subset the GAN trains on, the phrasings, the judge's arithmetic
and a whole evaluation on random generators at 16x16 (a stand-in encoder: the real one takes seconds to load)."""

import hashlib
import importlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from progan.config import ModelConfig
from progan.conditioning.encoder import TextEncoder
from progan.conditioning.rows import prompt_reading
from progan.conditioning.spec import export_conditioning
from progan.data.dataset import PreparedDataset
from progan.data.prepare import DatasetWriter
from progan.model_io import export_generator, load_generator
from progan.networks import Generator


@pytest.fixture(scope="module")
def tf():
    return importlib.import_module("benchmarks.text_fidelity")  # the repository root is on pytest's path


class HashVectors:
    """A stand-in sentence model: a fixed unit vector per text."""

    def encode(self, texts, **_):
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).standard_normal(8)
                for t in texts]
        v = torch.tensor(np.array(rows), dtype=torch.float32)
        return v / v.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(name="hash-encoder", folder="/nowhere", dimension=8, sha256="cd" * 32, model=HashVectors())


def emoji_like(groups: list[str]) -> tuple[list, list, list]:
    """(groups, variant_of, captions) shaped like the emoji: many one-image emoji, and in People & Body a third of
    them with five skin-tone variants beside the plain one."""
    g, keys, captions = [], [], []
    for group in groups:
        for k in range(30):
            key = f"{group} thing {k}"
            tones = 5 if group == "People & Body" and k % 3 == 0 else 0
            for t in range(tones + 1):
                g.append(group)
                keys.append(key)
                captions.append(key + (f": tone {t}" if t else ""))
    return g, keys, captions


@pytest.fixture(scope="module")
def full(tf, encoder, tmp_path_factory) -> PreparedDataset:
    """The nine groups at 16x16: each image a group's colour plus its own noise, so every image differs."""
    groups, keys, captions = emoji_like(tf.GROUPS)
    groups.append(None)  # an image without a group, as the real set has one
    keys.append("loose thing")
    captions.append("loose thing")
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "emoji16"
    with DatasetWriter(path, 16, len(captions)) as w:
        for group, caption in zip(groups, captions):
            colour = np.array([40 + 20 * (tf.GROUPS.index(group) if group else 9), 120, 200])
            w.add(np.clip(colour + rng.integers(-30, 30, (16, 16, 3)), 0, 255), caption=caption)
        w.finish(source="test", text_encoder=encoder,
                 columns={"groups": groups, "variant_of": keys, "keywords": [["thing"]] * len(captions),
                          "caption_variants": [[c, f"a {c}", (g or "none").lower()] for c, g in zip(captions, groups)]})
    return PreparedDataset(path)


def test_split_keeps_variants_together_and_holds_out_the_share_of_each_group(tf):
    big = ["People & Body", "Objects", "Flags"] * 3  # larger groups, as in the emoji: shares land closer
    groups, keys, _ = emoji_like(tf.GROUPS + big)
    groups = groups + [None, None]
    keys = keys + ["no group", "no group either"]
    held = tf.held_out_split(groups, keys)
    assert held == tf.held_out_split(groups, keys)  # fixed
    assert held != tf.held_out_split(groups, keys, seed=tf.SPLIT_SEED + 1)  # by the seed
    held_set = set(held)
    for key in set(keys):
        sides = {i in held_set for i, k in enumerate(keys) if k == key}
        assert len(sides) == 1, f"the variants of {key!r} straddle the split"
    total, out = Counter(groups), Counter(groups[i] for i in held)
    for group in tf.GROUPS:
        assert abs(out[group] / total[group] - 0.1) <= 0.025, (group, out[group], total[group])
    assert None not in out
    half = tf.held_out_split(groups, keys, share=0.5)
    assert abs(len(half) / (len(groups) - 2) - 0.5) < 0.03


def test_the_subset_lacks_the_held_out_images(tf, full):
    held = tf.held_out_split(full.column("groups"), tf.key_column(full))
    subset = tf.ensure_subset(full, held, full.path.with_name("emoji16-fidelity-train"))
    assert subset.count == full.count - len(held) and len(held) > 0
    pixels = lambda ds, idx: {ds.images(16, [i]).numpy().tobytes() for i in idx}  # noqa: E731
    assert not pixels(full, held) & pixels(subset, range(subset.count))
    assert not {full.captions[i] for i in held} & set(subset.captions)
    kept = [i for i in range(full.count) if i not in set(held)]
    assert torch.equal(subset.caption_embeddings, full.caption_embeddings[kept])
    assert subset.variant_embeddings.shape == (3 * len(kept), 8)
    assert subset.column("variant_of") == [full.column("variant_of")[i] for i in kept]
    assert tf.ensure_subset(full, held, subset.path).count == subset.count  # found again, not rewritten


def test_the_subset_without_skin_tones_keeps_one_image_per_emoji(tf, full, tmp_path):
    held = tf.held_out_split(full.column("groups"), tf.key_column(full))
    recoloured = tf.skin_tone_variants(full)
    assert recoloured and all(full.column("variant_of")[i] != full.captions[i] for i in recoloured)
    subset = tf.ensure_subset(full, held, tmp_path / "no-tones", recoloured)
    kept = set(subset.captions)
    assert not kept & {full.captions[i] for i in [*held, *recoloured]}
    assert len(kept) == full.count - len(set(held) | set(recoloured))


def test_phrasings_are_neither_names_nor_keywords(tf):
    import emoji

    from progan.data import emoji as builder

    # Every text the built-in dataset can hold, whatever the font draws: CLDR names (its captions), the emoji
    # package's aliases, emojilib's keywords (raw: its "keywords" column, cleaned: in the caption variants), and
    # the caption variants with the Unicode subgroup and group names when Debian's unicode-data is installed.
    keywords = builder.load_emoji_keywords()
    groups = builder.load_emoji_groups() if Path(builder.DEFAULT_EMOJI_TEST).is_file() else None
    names, variants = [], []
    for seq, data in emoji.EMOJI_DATA.items():
        name = builder.cldr_name(seq, data["en"])
        others = builder.aliases(name, data.get("alias", ()))
        words = builder.clean_keywords(builder.keywords_of(seq, name, keywords), (name, *others))
        group, subgroup = builder.group_of(seq, groups) if groups else (None, None)
        names.append(name)
        variants.append(builder.Emoji(seq, name, 0.0, others, group, subgroup, words).caption_variants() + [*words])
    assert len(names) > 3000
    assert tf.phrasing_collisions(names, list(keywords.values()), variants) == []
    assert set(tf.PHRASINGS) == set(tf.GROUPS)
    assert all(len(ps) >= 5 for ps in tf.PHRASINGS.values())
    # and the check does catch one, whatever the case and article
    assert tf.phrasing_collisions(["Happy Face"], []) == ["a happy face"]
    assert tf.phrasing_collisions([], [["book_to_read"]]) == ["a book to read"]


def test_balanced_accuracy_and_groups_on_a_hand_made_case(tf):
    names = ["a", "b", "c", "d"]
    truth = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 1, 1, 1, 2])
    got = tf.per_group(pred, truth, names)
    # a: 3 of 4, b: 1 of 2, c: 1 of 4, d: no images, left out of the mean
    assert got["groups"] == {"a": 0.75, "b": 0.5, "c": 0.25, "d": None}
    assert got["balanced"] == 0.5 and got["images"] == 10
    f = {"chance": 0.3, "x": got, "u": {"groups": {"a": 0.8, "b": 0.1, "c": 0.1, "d": None}}}
    assert tf.above(f, "x") == "2/3"  # a and b above 0.3
    assert tf.above(f, "x", "u") == "2/3"  # b and c above the baseline's, a below it
    assert tf.above(f, "missing") == "-"
    # shares count predictions, whatever the truth: d is never predicted
    assert tf.group_shares(pred, names) == {"a": 0.4, "b": 0.5, "c": 0.1, "d": 0.0}


def random_model(tmp_path, name: str, subset, text: bool, ca_size: int = 0):
    cfg = ModelConfig(resolution=16, latent_size=8, fmap_base=32, fmap_max=16, text_size=8 if text else 0,
                      ca_size=ca_size)
    torch.manual_seed(1 if text else 2)
    conditioning, tensors = export_conditioning(subset, cfg)
    folder = export_generator(tmp_path / name / "model", Generator(cfg), lod=0.0, kimg=1.0,
                              extra={"conditioning": conditioning, "dataset": str(subset.path)}, tensors=tensors)
    return load_generator(folder)


def test_swd_fakes_with_condition_noise_keep_their_latents_and_captions(tf, full, tmp_path):
    from benchmarks.recipe_quality import make_fakes
    G = random_model(tmp_path, "ca", full, True, ca_size=4)
    plain, noisy = make_fakes(G, full, 16, 0), make_fakes(G, full, 16, 0, condition_noise=True)
    assert not torch.equal(plain, noisy)
    # with sigma ~ e^-30 the noise moves no code: the same images, so the latents and captions are drawn as without
    # noise and the noise comes after them
    with torch.no_grad():
        G.ca.bias[4:] = -30.0
    assert torch.equal(make_fakes(G, full, 16, 0, condition_noise=True), plain)
    with pytest.raises(ValueError, match="conditioning augmentation"):
        make_fakes(random_model(tmp_path, "no-ca", full, True), full, 16, 0, condition_noise=True)


def test_a_whole_evaluation_and_its_tables(tf, full, encoder, tmp_path, monkeypatch):
    held = tf.held_out_split(full.column("groups"), tf.key_column(full))
    subset = tf.ensure_subset(full, held, full.path.with_name("emoji16-fidelity-train"))
    G, U = random_model(tmp_path, "text", subset, True), random_model(tmp_path, "uncond", subset, False)
    got = tf.evaluate(G, U, full, held, encoder=encoder, steps=3, grids=tmp_path / "grids", cache=tmp_path / "cache",
                      train_data=subset)
    f, d = got["fidelity"], got["diversity"]
    # the training set's own share of each group, beside the judge's shares among each model's samples
    groups = [g for g in subset.column("groups") if g is not None]  # the image without a group is no group's
    assert f["shares"]["data"] == {g: round(groups.count(g) / len(groups), 4) for g in tf.GROUPS}
    assert set(f["shares"]) == {"data", "text", "uncond"}
    assert all(abs(sum(s.values()) - 1) < 1e-3 and set(s) == set(tf.GROUPS) for s in f["shares"].values())
    assert f["classifier_steps"] == 3 and f["held_out_images"] == len(held)
    assert f["held_out_names"] == len({full.column("variant_of")[i] for i in held})
    modes = [f"{s}_{m}" for s in ("names", "phrasings") for m in tf.MODES]
    for key in [*modes, "names_data_take", "phrasings_data_take", "real_held_out", "uncond_names", "uncond_phrasings"]:
        assert 0 <= f[key]["balanced"] <= 1 and set(f[key]["groups"]) == set(tf.GROUPS), key
        assert all(v is not None for v in f[key]["groups"].values()), key  # every group has prompts and reals
    assert f["phrasings_cond"]["images"] == f["phrasings_data_take"]["images"] == tf.SEEDS * sum(
        len(p) for p in tf.PHRASINGS.values())
    assert f["names_data_take"]["images"] == tf.SEEDS * f["held_out_names"]
    assert set(d) == {*modes, "uncond_names", "uncond_phrasings", "data_within_group", "data_within_prompt",
                      "phrasings_draw_same_caption", "phrasings_draw_other_captions",
                      "data_within_prompt_other_captions"}
    assert all(v is None or 0 <= v <= 1 for v in d.values())
    assert (tmp_path / "grids" / "phrasings-cond.png").is_file()
    read = json.loads((tmp_path / "grids" / "readings.json").read_text())
    assert set(read) == {p for ps in tf.PHRASINGS.values() for p in ps} and "readings" not in f

    # the text model's samples follow its conditions (the same latents, other conditions, other images) and the
    # unconditional model's do not
    prompts = ["a happy dog", "a cup of hot coffee"]
    readings = {p: prompt_reading(G, p, encoder) for p in prompts}
    same_latents = {"a happy dog": readings["a happy dog"], "a cup of hot coffee": readings["a happy dog"]}
    x, y = tf.prompt_samples(G, prompts, readings), tf.prompt_samples(G, prompts, same_latents)
    assert torch.equal(x[:tf.SEEDS], y[:tf.SEEDS]) and not torch.equal(x[tf.SEEDS:], y[tf.SEEDS:])
    u = tf.prompt_samples(U, prompts, None)
    assert not torch.equal(u[:tf.SEEDS], u[tf.SEEDS:])  # latents differ per prompt: chance is measured, not built in
    # truncation pulls each seed toward the centre of its own condition row: at 0 one prompt's seeds are one image
    # (up to rounding), another prompt's another
    t0 = tf.prompt_samples(G, prompts, readings, truncation=0.0)
    assert (t0[:tf.SEEDS].int() - t0[0].int()).abs().max() <= 1 and (x[:tf.SEEDS].int() - x[0].int()).abs().max() > 8
    assert (t0[tf.SEEDS:].int() - t0[0].int()).abs().max() > 8

    # the judge is trained once: a second evaluation loads it from the cache (the same weights, no training)
    with monkeypatch.context() as m:
        m.setattr(tf, "train_classifier", lambda *a, **k: pytest.fail("trained the cached judge again"))
        again = tf.evaluate(G, U, full, held, encoder=encoder, steps=3, cache=tmp_path / "cache")
    assert again["fidelity"]["real_held_out"] == f["real_held_out"]

    # the data's own take on a prompt: the images of the captions the model's "draw" reading draws
    texts = tf.images_of_texts(subset)
    reading = readings["a happy dog"]
    reals = tf.reading_reals(G, texts, reading, "a happy dog")
    drawn = [G.meta["conditioning"]["captions"][i] for i in tf.draws(reading, "a happy dog", tf.SEEDS).tolist()]
    assert len(reals) == tf.SEEDS and all(i in texts[t] for i, t in zip(reals, drawn))
    assert all(subset.captions[i] in texts and i in texts[subset.captions[i]] for i in range(subset.count))

    # a text model that trained on the held-out emoji is refused
    seen = random_model(tmp_path, "seen", full, True)
    with pytest.raises(SystemExit, match="held-out emoji"):
        tf.evaluate(seen, None, full, held, encoder=encoder, steps=1)
    # ... but gets the headline (the text demo's: its phrasings are unseen whatever it trained on), judged by the
    # same cached judge, in the mode a user gets
    h = tf.headline(seen, full, held, steps=3, cache=tmp_path / "cache", encoder=encoder)
    assert h["mode"] == tf.USER_MODE and h["real_held_out"] == f["real_held_out"]["balanced"]
    assert 0 <= h["phrasings"] <= 1 and h["share_of_real"] == round(h["phrasings"] / h["real_held_out"], 3)
    assert tf.headline(seen, full, held, steps=3, cache=tmp_path / "cache", encoder=encoder,
                       truncation=0.5)["truncation"] == 0.5

    result = {"name": "demo-text", "seed": 1, "minutes": 5.0, "load_average": {"mean": 1.5}, **got,
              "text": {"kimg": 12.3, "resolution": 16, "lod": 0.0, "quality": {"swd": 40.0},
                       "quality_noise": {"swd": 30.0}},
              "uncond": {"kimg": 20.0, "resolution": 16, "lod": 0.0, "quality": {"swd": 32.0}},
              "uncond_at_equal_images": {"kimg": 12.0, "lod": 0.0, "quality": {"swd": 50.0}}}
    no_baseline = {**result, "name": "other", "uncond": None, "uncond_at_equal_images": None}
    lines = tf.table([result, no_baseline]).splitlines()
    head, rule, row = lines[:3]
    assert len(head.split("|")) == len(rule.split("|")) == len(row.split("|"))
    cells = dict(zip(head.strip("| ").split(" | "), (c.strip() for c in row.strip("| ").split(" | "))))
    assert cells["run"] == "demo-text" and cells["kimg"] == "12.3"
    assert cells["SWD uncond end / equal images (its kimg)"] == "32.0 / 50.0 (12.0)"
    assert cells["SWD / with condition noise"] == "40.0 / 30.0"
    assert cells["SWD ratio end / equal images / equal, noise"] == "1.25 / 0.80 / 0.60"
    assert cells["real held-out"] == f"{f['real_held_out']['balanced']:.3f}"
    takes = [f[f"{s}_data_take"]["balanced"] / f["real_held_out"]["balanced"] for s in ("names", "phrasings")]
    assert cells["the data's take / ceiling (names / phr.)"] == f"{takes[0]:.2f} / {takes[1]:.2f}"
    assert re.fullmatch(r"\d/9 / \d/9", cells["groups > chance"]) and re.fullmatch(r"\d/9 / \d/9",
                                                                                   cells["groups > uncond"])
    other = dict(zip(head.strip("| ").split(" | "), (c.strip() for c in lines[3].strip("| ").split(" | "))))
    assert other["SWD uncond end / equal images (its kimg)"] == "- / -"
    assert other["SWD ratio end / equal images / equal, noise"] == "- / - / -"
    per_group = lines[[i for i, line in enumerate(lines) if line.startswith("Accuracy per group")][0] + 2:]
    assert len(per_group) == 2 + 2 * (len(modes) + 5 + 3)  # and each result's three rows of shares
    assert all(len(r.split("|")) == len(tf.GROUPS) + 4 for r in per_group)
    assert [r.split(" | ")[1] for r in per_group if "share" in r][:3] == [
        "share of data", "share of text samples", "share of uncond samples"]


def test_diversity_is_compared_on_the_chosen_pairs_of_seeds(tf):
    """The data's take on a prompt repeats an image where two seeds drew one caption: the comparison with the data
    keeps only the pairs chosen, here those that drew different captions."""
    seeds = 4
    block = torch.rand(seeds, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    block[1] = block[0]  # seeds 0 and 1 drew one caption: the data's take is one image twice
    i, j = torch.triu_indices(seeds, seeds, 1)
    same = ((i == 0) & (j == 1)).view(1, -1)
    assert tf.pairs_msssim(block, seeds, same) == pytest.approx(1.0, abs=1e-3)
    assert tf.pairs_msssim(block, seeds, ~same) < 0.5  # independent noise
    assert tf.pairs_msssim(block, seeds, torch.zeros_like(same)) is None
    from progan.metrics.msssim import ms_ssim
    by_hand = float(torch.stack([ms_ssim(block[a][None], block[b][None])[0] for a, b in zip(i, j)]).mean())
    assert tf.pairs_msssim(block, seeds, torch.ones_like(same)) == pytest.approx(by_hand, abs=1e-4)
    assert tf.within_block_msssim(torch.cat([block, block[:2]]), seeds) == pytest.approx(by_hand, abs=1e-4)

    class Reading:  # three captions, one of them almost always drawn
        weights, indices = torch.tensor([0.9, 0.05, 0.05]), torch.tensor([7, 8, 9])
    pairs = tf.same_caption_pairs({"p": Reading()}, ["p"], seeds=tf.SEEDS)[0]
    drawn = tf.draws(Reading(), "p", tf.SEEDS)
    i, j = torch.triu_indices(tf.SEEDS, tf.SEEDS, 1)
    assert torch.equal(pairs, drawn[i] == drawn[j]) and pairs.any()


def test_the_baseline_at_equal_images_is_its_nearest_snapshot(tf, tmp_path):
    """SWD is compared at the text model's images shown: the unconditional run's checkpoint or exported model
    nearest to them, whichever of its folders that is."""
    from progan.train.checkpoint import CHECKPOINT_FORMAT

    run = tmp_path / "uncond"
    for nimg in (140_000, 150_000, 160_000):
        (run / "checkpoints" / f"ckpt-{nimg:012d}").mkdir(parents=True)
        (run / "checkpoints" / f"ckpt-{nimg:012d}" / "state.json").write_text(
            f'{{"format": "{CHECKPOINT_FORMAT}", "cur_nimg": {nimg}}}')
    export_generator(run / "model", Generator(ModelConfig(resolution=8, latent_size=8, fmap_base=16, fmap_max=8)),
                     lod=0.0, kimg=179.2)
    assert [k for k, _ in tf.snapshots(run)] == [140.0, 150.0, 160.0, 179.2]
    assert tf.at_images(run, 152.0) == (150.0, run / "checkpoints" / "ckpt-000000150000")
    assert tf.at_images(run, 100.0)[0] == 140.0
    assert tf.at_images(run, 175.0) == (179.2, run / "model")
    with pytest.raises(SystemExit, match="no model or checkpoint"):
        tf.at_images(tmp_path / "empty", 10.0)


def test_the_benchmark_trains_the_text_demos_recipe(tf):
    """The words benchmark measures what `CONDITION=text bash scripts/demo.sh` trains: both hold the recipe's flags."""
    script = (Path(__file__).parent.parent / "scripts" / "demo.sh").read_text()
    match = re.search(r"^\s*TEXT_FLAGS=\((.+)\)\s*$", script, re.MULTILINE)
    assert match, "scripts/demo.sh no longer sets TEXT_FLAGS for the text demo"
    assert match.group(1).split() == tf.TEXT_FLAGS


@pytest.mark.parametrize("argv", [["--eval-only", "runs/x", "--no-baseline"],
                                  ["--train", "--minutes", "1", "--no-baseline", "--baseline", "runs/u"]])
def test_no_baseline_is_only_for_a_training_without_one(tf, argv, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["text_fidelity", *argv])
    with pytest.raises(SystemExit):
        tf.main()
    assert "--no-baseline is for --train, without --baseline" in capsys.readouterr().err
