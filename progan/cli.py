"""The `progan` command: parses arguments and calls the modules that do the work."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from progan.config import ConfigError, TrainConfig
from progan.presets import PRESETS, preset


def parse_table(text: str, cast, what: str, bare_as_table: bool = True):
    """'4:64,32:32' -> {4: 64, 32: 32}; a bare value '0.002' -> {4: 0.002} (the same everywhere), or the bare
    value itself when not `bare_as_table`."""
    try:
        if ":" not in text:
            return {4: cast(text)} if bare_as_table else cast(text)
        table = {}
        for item in text.split(","):
            res, value = item.split(":")
            table[int(res)] = cast(value)
        return table
    except ValueError:
        raise ConfigError(f"bad {what} {text!r}: expected VALUE or RES:VALUE,RES:VALUE (e.g. 4:64,32:32)") from None


# ---------------------------------------------------------------------------------------------------------------
# progan dataset

def add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="prepare a dataset once: square crop, resize, every level 4..R as uint8 arrays")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", type=Path, help="folder or .zip of images")
    src.add_argument("--builtin", choices=["emoji"], help="a built-in dataset")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--crop", choices=["center", "pad"], default="center",
                   help="center: crop the central square; pad: letterbox onto the background")
    p.add_argument("--upscale", action="store_true", help="keep images smaller than the resolution (upscaled)")
    p.add_argument("--labels-from-folders", action="store_true", help="one subfolder per class")
    p.add_argument("--labels-from-groups", action="store_true",
                   help="--builtin emoji: class labels from the Unicode groups (Smileys & Emotion, ..., Flags)")
    p.add_argument("--no-skin-tones", action="store_true",
                   help="--builtin emoji: leave out the skin-tone variants, keeping the default yellow one of each")
    p.add_argument("--groups", metavar="GROUP,GROUP,..",
                   help="--builtin emoji: keep only these Unicode groups or subgroups, e.g. "
                   "'Smileys & Emotion,food-fruit,country-flag'")
    p.add_argument("--background", default="255,255,255", help="R,G,B for transparent pixels and padding")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--text-encoder", default="auto", metavar="auto|none|NAME|FOLDER",
                   help="encode the captions for text-conditional training: auto (the bundled all-MiniLM-L6-v2 when "
                   "the text extra is installed), none, or a local sentence-transformers model folder")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_dataset)


def cmd_dataset(args) -> None:
    try:
        background = tuple(int(c) for c in args.background.split(","))
        assert len(background) == 3 and all(0 <= c <= 255 for c in background)
    except (ValueError, AssertionError):
        raise ConfigError(f"--background must be R,G,B with values 0..255, got {args.background!r}") from None
    only_for = {"--labels-from-groups": args.labels_from_groups, "--no-skin-tones": args.no_skin_tones,
                "--groups": args.groups is not None}
    if args.builtin != "emoji" and any(only_for.values()):
        raise ConfigError(f"{', '.join(k for k, v in only_for.items() if v)}: only for --builtin emoji")
    if args.builtin == "emoji" and args.labels_from_folders:
        raise ConfigError("--labels-from-folders is for --source folders; the emoji's classes are "
                          "--labels-from-groups")
    if args.builtin == "emoji":
        from progan.data.emoji import build_emoji_dataset
        manifest = build_emoji_dataset(args.out, resolution=args.resolution, background=background,
                                       overwrite=args.overwrite, limit=args.max_images,
                                       skin_tones=not args.no_skin_tones, labels_from_groups=args.labels_from_groups,
                                       only_groups=None if args.groups is None else
                                       [g.strip() for g in args.groups.split(",") if g.strip()],
                                       text_encoder=args.text_encoder)
    else:
        from progan.data.prepare import prepare_dataset
        manifest = prepare_dataset(args.source, args.out, args.resolution, crop=args.crop, upscale=args.upscale,
                                   background=background, labels_from_folders=args.labels_from_folders,
                                   text_encoder=args.text_encoder, overwrite=args.overwrite,
                                   max_images=args.max_images)
    print(f"{args.out}: {manifest['count']} images at {manifest['resolution']}x{manifest['resolution']}"
          f", {manifest.get('skipped', 0)} skipped (see {args.out / 'report.json'})")


# ---------------------------------------------------------------------------------------------------------------
# progan train

# Config fields no flag of their own sets. --preset picks the config that the flags change and --data is stored
# resolved; what a new run is conditioned on comes from the dataset and --condition, --ca-size and --cond-fade
# (set_conditioning). Every other field is a flag named after it (tests/test_cli_flags.py holds this).
INTERNAL_FIELDS = ("preset", "data", "model.num_classes", "model.text_size", "model.ca_size", "model.cond_fade_start",
                   "model.cond_fade_end")

# Flags whose name is not their field's.
FLAG_NAMES = {"schedule.total_kimg": "--kimg", "metrics_kimg": "--metrics-every", "model.fused_scale": "--fused",
              "loss.kind": "--loss"}


def read_augment(text: str, flag: str) -> str:
    return "" if text.strip() == "none" else text


def read_metrics(text: str, flag: str) -> list[str]:
    from progan.metrics import parse_metric_list
    return parse_metric_list(text)


# Per field type: the argparse keywords of its flag, and how the flag's value becomes the field's (None: as it is).
# Tables are read after argparse, so that a bad one is a ConfigError like any other bad value.
FIELD_TYPES = {
    bool: ({"action": argparse.BooleanOptionalAction}, None),
    int: ({"type": int}, None),
    float: ({"type": float}, None),
    float | None: ({"type": float}, None),
    str: ({}, None),
    tuple[float, float]: ({"type": float, "nargs": 2}, lambda values, flag: tuple(values)),
    list[str]: ({}, lambda text, flag: [item.strip() for item in text.split(",") if item.strip()]),
    dict[int, int]: ({}, lambda text, flag: parse_table(text, int, flag)),
    dict[int, float]: ({}, lambda text, flag: parse_table(text, float, flag)),
    float | dict[int, float]: ({}, lambda text, flag: parse_table(text, float, flag, bare_as_table=False)),
}
FIELD_READERS = {"augment": read_augment, "metrics": read_metrics}  # fields read by more than their type says


@dataclasses.dataclass(frozen=True)
class ConfigFlag:
    """The flag of one config field."""
    path: str                  # "model.fmap_base"; a TrainConfig field has no section: "seed"
    field: dataclasses.Field
    kind: typing.Any           # the field's type

    @property
    def name(self) -> str:
        return FLAG_NAMES.get(self.path, "--" + self.field.name.replace("_", "-"))

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")

    def add_to(self, group) -> None:
        keywords, _ = FIELD_TYPES[self.kind]
        group.add_argument(self.name, default=None, **keywords, **self.field.metadata)

    def read(self, value):
        read = FIELD_READERS.get(self.path) or FIELD_TYPES[self.kind][1]
        return value if read is None else read(value, self.name)

    def set(self, cfg: TrainConfig, value) -> None:
        section, _, name = self.path.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, name, value)


def config_fields() -> list[tuple[str, dataclasses.Field, typing.Any]]:
    """(path, field, type) of every field of TrainConfig and of its sections (model, schedule, loss)."""
    fields, hints = [], typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            section = typing.get_type_hints(kind)
            fields += [(f"{f.name}.{g.name}", g, section[g.name]) for g in dataclasses.fields(kind)]
        else:
            fields.append((f.name, f, kind))
    return fields


def config_flags() -> list[ConfigFlag]:
    return [ConfigFlag(path, f, kind) for path, f, kind in config_fields() if path not in INTERNAL_FIELDS]


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a progressive GAN into a run folder (or continue one with --resume)")
    p.add_argument("--data", help="prepared dataset folder (progan dataset)")
    p.add_argument("--run", type=Path, help="run folder to create")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue this run folder exactly where it stopped")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="the config the other flags change (default: paper)")
    p.add_argument("--condition", choices=["auto", "none", "class", "text"], default="auto",
                   help="auto: on the dataset's classes when it has labels (--labels-from-folders), else none; "
                   "text: on its caption embeddings")
    p.add_argument("--ca-size", type=int, help="text: conditioning augmentation code size (default 32; 0: off)")
    p.add_argument("--cond-fade", metavar="START:END",
                   help="transitional conditioning: fade the condition in from START's fade-in to END's, e.g. 8:16")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--quiet", action="store_true", help="no progress bar (stats.jsonl is still written)")
    groups = {"model": p.add_argument_group("model"), "schedule": p.add_argument_group("schedule"),
              "loss": p.add_argument_group("loss"), "": p.add_argument_group("run")}
    for flag in config_flags():
        flag.add_to(groups[flag.path.rpartition(".")[0]])
    # The flags from before --precision, kept for the commands people already have
    groups[""].add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                            help="the same as --precision bf16")
    groups[""].add_argument("--no-bf16", dest="precision", action="store_const", const="fp32", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train)


def train_config_from_args(args) -> TrainConfig:
    if args.resume:
        from progan.fileio import read_json
        cfg = TrainConfig.from_dict(read_json(args.resume / "config.json", "run config"))
    else:
        if not args.data or not args.run:
            raise ConfigError("a new run needs --data DATASET and --run FOLDER (or --resume RUN)")
        cfg = preset(args.preset or "paper", args.resolution)
    for flag in config_flags():
        value = getattr(args, flag.dest)
        if value is not None:
            flag.set(cfg, flag.read(value))
    if args.data:
        cfg.data = str(Path(args.data).resolve())
    if args.resume and args.minutes is None:
        cfg.minutes = None  # a time bound belongs to one invocation, not to the run
    if not args.resume:
        set_conditioning(cfg, args)
    return cfg


def set_conditioning(cfg: TrainConfig, args) -> None:
    """What a new run is conditioned on, from --condition and the dataset (a model's class count or caption size
    is the dataset's: nothing to get wrong by hand)."""
    from progan.data.dataset import PreparedDataset
    data = PreparedDataset(cfg.data)
    choice = args.condition
    if choice == "auto":
        choice = "class" if data.labels is not None else "none"
    if choice == "class":
        if data.labels is None:
            raise ConfigError(f"--condition class: {cfg.data} has no class labels (prepare it with "
                              "--labels-from-folders)")
        cfg.model.num_classes = data.num_classes
    elif choice == "text":
        if data.caption_embeddings is None:
            raise ConfigError(f"--condition text: {cfg.data} has no caption embeddings (prepare it with captions "
                              "and the text encoder: pip install -e '.[text]', then progan dataset ...)")
        cfg.model.text_size = int(data.caption_embeddings.shape[1])
        cfg.model.ca_size = 32 if args.ca_size is None else args.ca_size
    elif args.ca_size is not None:
        raise ConfigError("--ca-size is for text-conditional models (--condition text)")
    if args.cond_fade:
        try:
            start, end = (int(v) for v in args.cond_fade.split(":"))
        except ValueError:
            raise ConfigError(f"--cond-fade must be START:END resolutions, e.g. 8:16, got {args.cond_fade!r}") from None
        cfg.model.cond_fade_start, cfg.model.cond_fade_end = start, end


def cmd_train(args) -> None:
    from progan.train.loop import train
    cfg = train_config_from_args(args)
    run_dir = args.resume or args.run
    state = train(cfg, run_dir, resume=args.resume is not None, device=args.device, progress=not args.quiet)
    from progan.train.distributed import shutdown
    shutdown()
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        run = state.progress
        print(f"{run_dir}: {run.cur_nimg / 1000:.1f} kimg in {run.train_seconds / 60:.1f} min of training; "
              f"generator in {Path(run_dir) / 'model'}, samples in {Path(run_dir) / 'samples'}")


def device_arg(value: str) -> str:
    """--device of generate, eval and studio: 'auto' (the default) is CUDA where torch sees a GPU, else the CPU."""
    import torch
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(value)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"--device {value}: torch sees no CUDA GPU here (--device cpu)")
    return value


# ---------------------------------------------------------------------------------------------------------------
# progan generate

def add_condition_noise(p: argparse.ArgumentParser, what: str) -> None:
    """--condition-noise / --no-condition-noise, the same for generate and studio."""
    p.add_argument("--condition-noise", action=argparse.BooleanOptionalAction, default=False,
                   help=f"text-conditional models: {what} (default: the code's mean, which followed prompts better "
                   "with --reading draw)")


def add_reading(p: argparse.ArgumentParser, who: str) -> None:
    """--reading draw|mean, the same for generate and studio."""
    p.add_argument("--reading", choices=["draw", "mean"], default="draw", help=f"text-conditional models: how each "
                   f"{who} takes a prompt's reading (a mixture of training captions): draw, its own caption of it, "
                   "drawn by weight; mean, the mixture's weighted mean")


def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="sample grids and interpolation videos from a run or exported generator")
    p.add_argument("model", type=Path, help="run folder, exported model folder or checkpoint folder")
    p.add_argument("--out", type=Path, help="output folder (required unless --pattern)")
    p.add_argument("--seeds", default="0-63", help="e.g. 0-63 or 1,5,9")
    p.add_argument("--grid", action=argparse.BooleanOptionalAction, default=True, help="one grid image of all seeds")
    p.add_argument("--images", action="store_true", help="also one PNG per seed")
    p.add_argument("--video", help="interpolation video file name (.gif, or .mp4 with imageio-ffmpeg)")
    p.add_argument("--video-seeds", default="0-7", help="keyframe seeds of the video, slerped in a loop")
    p.add_argument("--frames-per-seed", type=int, default=24)
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--truncation", type=float, default=1.0, help="psi in (0, 1]: pull toward the mean feature map")
    p.add_argument("--class", dest="classes", action="append", metavar="NAME[=WEIGHT]",
                   help="class-conditional models: this class; repeat to blend, e.g. --class cat=0.7 --class dog=0.3")
    p.add_argument("--per-class", type=int, metavar="N", help="class-conditional models: a grid with N seeds per class")
    p.add_argument("--prompt", help="text-conditional models: what to show, e.g. 'monkeys surfing on the moon'")
    add_condition_noise(p, "each seed samples the conditioning augmentation's noise around the prompt's code, as "
                        "training did (varied takes on the prompt)")
    add_reading(p, "seed")
    p.add_argument("--text-encoder", metavar="FOLDER", help="text-conditional models: the folder of the model's "
                   "sentence encoder, when it is no longer where training found it")
    p.add_argument("--device", type=device_arg, default="auto", help="default: cuda when available, else cpu")
    show = p.add_argument_group("the show", "--pattern, --setlist or --audio renders the studio's show to --video "
                                "(frame for frame what the studio shows for the same seed and settings) instead of "
                                "grids; see docs/studio.md")
    show.add_argument("--pattern", help="walk, field, loop, a layout (mirror, kaleidoscope, kaleidoscope6, tile) or "
                      "motion+layout, e.g. loop+kaleidoscope6")
    show.add_argument("--seconds", type=float, help="length of the show (default: one period of a loop, else 8)")
    show.add_argument("--size", default="512x512", help="WIDTHxHEIGHT of the video (default 512x512)")
    show.add_argument("--cells", type=int, default=None, help="an NxN grid of samples (default: 4 for a field, else 1)")
    show.add_argument("--seed", type=int, default=0, help="the show's seed (the studio's seed box)")
    show.add_argument("--speed", type=float, default=0.25, help="keyframes a second of a walk or field")
    show.add_argument("--coupling", type=float, help="field: how alike neighbouring cells are, in [0, 0.95]")
    show.add_argument("--period", type=float, help="loop: seconds per turn (default 8)")
    show.add_argument("--taste", type=Path, help="a taste profile saved from the studio, to steer the show with")
    show.add_argument("--setlist", type=Path, help="a setlist file: one entry a line, SECONDS KIND WHAT (e.g. "
                      "'8 prompt a red heart', '12 class cat=0.7, dog=0.3', '6 seed 42'), played in a loop with morphs")
    show.add_argument("--audio", type=Path, help="a song (WAV, FLAC, OGG, MP3): the show moves with its loudness and "
                      "reacts to its onsets, and the song is muxed into the MP4 (needs progan[audio])")
    show.add_argument("--audio-motion", type=float, help="how strongly the motion's speed follows the loudness, in "
                      "[0, 1] (1: still in silence, twice --speed at the loudest; default 0.5, as the page's)")
    show.add_argument("--on-hit", help="what an onset does: pulse (a jolt of the latents), jump (ahead along the "
                      "motion), coupling (a pulse of a field's coupling), next (the next setlist entry) or none "
                      "(default pulse)")
    show.add_argument("--hit-strength", type=float, help="how strongly, in [0, 1] (default 0.6)")
    p.set_defaults(func=cmd_generate)


def generation_condition(G, args, n: int, seeds: list[int] | None = None):
    """(condition rows [n, C] or None, a line saying what was asked) for generate's --class / --prompt; with
    `seeds` (n of them) and --reading draw, each seed draws its own caption of the prompt's reading."""
    from progan.conditioning import rows
    from progan.conditioning.spec import conditioning_kind
    from progan.seeds import generator
    kind = conditioning_kind(G)
    if args.classes and args.prompt:
        raise ConfigError("give --class or --prompt, not both")
    if args.prompt is not None:
        reading = rows.prompt_reading(G, args.prompt, encoder_folder=args.text_encoder)
        if seeds is not None and args.reading == "draw":
            return rows.drawn_rows(G, reading, seeds), f"prompt read as: {reading.describe()} (a caption per seed)"
        return reading.condition.expand(n, -1).clone(), f"prompt read as: {reading.describe()}"
    if args.classes:
        names, weights = [], []
        for item in args.classes:
            name, _, weight = item.rpartition("=") if "=" in item else (item, "", "1")
            try:
                weights.append(float(weight))
            except ValueError:
                raise ConfigError(f"--class {item!r}: the weight after '=' must be a number") from None
            names.append(name)
        return rows.class_blend_rows(G, names, n, weights), "class " + ", ".join(args.classes)
    if kind == "class":
        return rows.random_class_rows(G, n, generator(0, "generate", "classes")), "random classes"
    if kind == "text":
        return rows.random_caption_rows(G, n, generator(0, "generate", "captions")), "random training captions"
    return None, ""


def cmd_generate(args) -> None:
    import math

    import torch
    from progan import generate as gen
    from progan.model_io import load_generator
    if not 0 < args.truncation <= 1 or not math.isfinite(args.truncation):
        raise ConfigError(f"--truncation must be in (0, 1], got {args.truncation}")
    if args.pattern is not None or args.setlist is not None or args.audio is not None:
        return cmd_show(args)
    if args.out is None:
        raise ConfigError("--out FOLDER is required (or --pattern NAME --video FILE for a show)")
    G = load_generator(args.model, args.device)
    seeds = gen.parse_seeds(args.seeds)
    cond, asked = generation_condition(G, args, len(seeds), seeds)
    if asked:
        print(asked)
    noise = None
    if cond is not None and G.cfg.ca_size and args.condition_noise:
        noise = gen.condition_noise_from_seeds(seeds, G.cfg.ca_size)
    images = gen.render(G, gen.latents_from_seeds(seeds, G.latent_size), args.truncation, cond=cond, noise=noise)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    if args.grid:
        gen.save_grid(images, args.out / "grid.png", nrow=math.ceil(math.sqrt(len(seeds))), min_cell=64)
        written.append(args.out / "grid.png")
    if args.per_class:
        from progan.conditioning.rows import class_blend_rows
        from progan.conditioning.spec import conditioning_kind, describe_conditioning
        names = G.meta.get("conditioning", {}).get("label_names") if conditioning_kind(G) == "class" else None
        if not names:
            raise ConfigError(f"--per-class: {args.model} is {describe_conditioning(G)}")
        z = gen.latents_from_seeds(list(range(args.per_class)), G.latent_size).repeat(len(names), 1)
        class_rows = torch.cat([class_blend_rows(G, name, args.per_class) for name in names])
        per_class = gen.render(G, z, args.truncation, cond=class_rows)
        gen.save_grid(per_class, args.out / "per_class.png", nrow=args.per_class, min_cell=64)
        written.append(f"{args.out / 'per_class.png'} (one row per class: {', '.join(names[:8])}"
                       f"{' ...' if len(names) > 8 else ''})")
    if args.images:
        from PIL import Image
        for seed, img in zip(seeds, images):
            gen.save_png(Image.fromarray(img.permute(1, 2, 0).numpy()), args.out / f"seed{seed:06d}.png")
        written.append(args.out / "seed*.png")
    if args.video:
        frames = gen.interpolation_frames(G, gen.parse_seeds(args.video_seeds), args.frames_per_seed, args.truncation,
                                          cond=cond)
        gen.save_video(frames, args.out / args.video, fps=args.fps)
        written.append(args.out / args.video)
    print(f"{G.output_resolution}x{G.output_resolution} generator at {G.meta['kimg']:.1f} kimg -> "
          + ", ".join(map(str, written)))


def cmd_show(args) -> None:
    """`progan generate RUN --pattern NAME [--setlist F] [--audio SONG] --video F`: the studio's show rendered
    offline."""
    import time

    from progan.model_io import load_generator
    from progan.studio.audio import Reactions, read_song, song_controls
    from progan.studio.patterns import parse_pattern
    from progan.studio.renderer import FrameRenderer
    from progan.studio.setlist import read_setlist, resolve, total_seconds
    from progan.studio.show import MAX_SECONDS, ShowError, ShowSettings, parse_size, show_frames, write_video
    from progan.studio.targets import Target
    from progan.studio.taste import Preferences, read_profile
    if not args.video:
        raise ConfigError("a show is rendered to a video: name the file with --video show.mp4 (or show.gif)")
    pattern = parse_pattern(args.pattern or "walk", coupling=args.coupling, period=args.period)
    given = {"motion": args.audio_motion, "hit": args.on_hit, "strength": args.hit_strength}
    reactions = Reactions(**{k: v for k, v in given.items() if v is not None}).check()
    entries = read_setlist(args.setlist) if args.setlist is not None else None
    song = read_song(args.audio) if args.audio is not None else None
    seconds = args.seconds
    if seconds is None:
        if song is not None and song.seconds > MAX_SECONDS:
            raise ShowError(f"--audio {args.audio} plays {song.seconds:g} s; a show is at most {MAX_SECONDS:g} s "
                            f"(--seconds S renders its first S seconds)")
        seconds = (song.seconds if song is not None else total_seconds(entries) if entries is not None
                   else pattern.period if pattern.motion == "loop" else 8.0)
    grid = args.cells if args.cells is not None else (4 if pattern.motion == "field" else 1)
    settings = ShowSettings(pattern, seed=args.seed, seconds=seconds, fps=args.fps, size=parse_size(args.size),
                            grid=grid, speed=args.speed, truncation=args.truncation).check()
    path = args.out / args.video if args.out else Path(args.video)
    G = load_generator(args.model, args.device)
    renderer = FrameRenderer(G, condition_noise=args.condition_noise, reading=args.reading)
    prefs = Preferences(renderer.pref_basis)
    if args.taste:
        prefs.load_profile(read_profile(args.taste), renderer.taste_model)
    target = None
    if G.cfg.cond_size:
        rows, asked = generation_condition(G, args, 1)
        target = Target(rows[0], "", "", "class")
        if args.prompt is not None:  # the lanes take the reading as the studio's do
            from progan.conditioning.rows import prompt_reading
            target = renderer.targets.prompt_target(args.prompt, prompt_reading(G, args.prompt,
                                                                                encoder_folder=args.text_encoder))
            asked += " (a caption per cell)" if args.reading == "draw" else ""
        print(asked)
    setlist = None
    if entries is not None:
        import functools

        from progan.conditioning.encoder import encoder_for
        from progan.conditioning.rows import prompt_reading

        @functools.cache
        def encoder():  # loaded at the first prompt entry (seconds), once
            return encoder_for(G.meta["conditioning"]["encoder"], args.text_encoder)
        setlist = resolve(entries, renderer.targets, lambda text: prompt_reading(G, text, encoder()),
                          where=args.setlist.name)
    controls = song_controls(song, reactions, settings.fps, settings.frames) if song is not None else None
    t0 = time.perf_counter()
    n = write_video(show_frames(renderer, settings, prefs, target, setlist, controls), path, settings.fps,
                    settings.size, audio=args.audio)
    extras = "".join([f", setlist of {len(setlist)} entries ({total_seconds(setlist):g} s a round)" if setlist else "",
                      f", moving with {args.audio.name} ({len(song.onsets)} onsets)" if song is not None else ""])
    print(f"{pattern.name}, seed {settings.seed}, {grid}x{grid} cells{extras}: {n} frames at {settings.fps} "
          f"frames/s, {settings.size[0]}x{settings.size[1]} -> {path} ({time.perf_counter() - t0:.1f} s)")


# ---------------------------------------------------------------------------------------------------------------
# progan eval / plot

def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="the paper's metrics (SWD, MS-SSIM) and FID/KID of a generator against a dataset")
    p.add_argument("model", type=Path, help="run folder, exported model folder or checkpoint folder")
    p.add_argument("--data", help="prepared dataset folder (default: the one the run trained on)")
    p.add_argument("--metrics", default="swd,msssim", help="comma list of: swd, msssim, fid, kid")
    p.add_argument("--num-images", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--inception-weights", help="pt_inception-2015-12-05-6726825d.pth (or $PROGAN_INCEPTION_WEIGHTS)")
    p.add_argument("--cache", type=Path, help="where to cache real-data statistics (default: <model>/cache)")
    p.add_argument("--json", type=Path, help="also append the results to this JSONL file")
    p.add_argument("--device", type=device_arg, default="auto", help="default: cuda when available, else cpu")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> None:
    from progan.data.dataset import PreparedDataset
    from progan.metrics import append_results, evaluate, format_table, parse_metric_list
    from progan.model_io import load_generator
    names = parse_metric_list(args.metrics)
    G = load_generator(args.model, args.device)
    data = args.data or G.meta.get("dataset") or G.meta.get("config", {}).get("data")
    if not data:
        raise ConfigError(f"{args.model} does not say which dataset it was trained on: pass --data DATASET")
    # beside the run, not inside run/model (a link to a version folder that a later export removes)
    holder = args.model.parent if args.model.is_symlink() or args.model.is_file() else args.model
    cache = args.cache or holder / "cache"
    dataset = PreparedDataset(data)
    conditions = None
    if G.cfg.cond_size:  # the fakes follow the dataset's own mix of classes or captions
        from progan.conditioning.training import condition_table
        conditions = condition_table(G.cfg, dataset.labels, dataset.num_classes, dataset.caption_embeddings,
                                     source=str(dataset.path))
    results = evaluate(G, dataset, names, args.num_images, args.seed, batch_size=args.batch,
                       device=args.device, snapshot_kimg=G.meta["kimg"], cache_dir=cache,
                       inception_weights=args.inception_weights, conditions=conditions)
    print(format_table(results))
    if args.json:
        append_results(args.json, results)


def add_plot(sub) -> None:
    p = sub.add_parser("plot", help="losses, images/s and metrics against kimg, resolution phases shaded, to a PNG")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, help="default: RUN/plot.png")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args) -> None:
    from progan.plot import plot_run
    print(plot_run(args.run, args.out or args.run / "plot.png"))


# ---------------------------------------------------------------------------------------------------------------
# progan studio

def add_studio(sub) -> None:
    p = sub.add_parser("studio", help="live, steerable stream of samples in the browser")
    p.add_argument("model", help="exported model folder, run folder or checkpoint folder")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback requires an access token (printed in the URL)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--device", type=device_arg, default="auto", help="default: cuda when available, else cpu")
    p.add_argument("--token", default=None, help="access token (default: a random one when --host is not loopback)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for rendering (default: cores - 1)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.add_argument("--text-encoder", metavar="FOLDER", help="text-conditional models: the folder of the model's "
                   "sentence encoder, when it is no longer where training found it")
    p.add_argument("--pattern", default="walk", help="what every viewer starts with: walk, field, loop, a layout "
                   "(mirror, kaleidoscope, kaleidoscope6, tile) or motion+layout, e.g. field+kaleidoscope")
    p.add_argument("--coupling", type=float, help="field: how alike neighbouring cells are, in [0, 0.95]")
    p.add_argument("--period", type=float, help="loop: seconds per turn (default 8)")
    p.add_argument("--seed", type=int, help="the first viewer's seed (later viewers count on from it)")
    p.add_argument("--taste", type=Path, help="a taste profile saved from the studio: every viewer starts with it")
    p.add_argument("--setlist", type=Path, help="a setlist every viewer starts playing in a loop: one entry a line, "
                   "SECONDS KIND WHAT (e.g. '8 prompt a red heart', '12 class cat=0.7, dog=0.3', '6 seed 42')")
    add_condition_noise(p, "each lane samples the conditioning augmentation's noise around the prompt's code, as "
                        "training did (a different take on the prompt in every lane)")
    add_reading(p, "lane")
    p.set_defaults(func=cmd_studio)


def cmd_studio(args) -> None:
    from progan.studio import run_studio
    from progan.studio.patterns import parse_pattern
    from progan.studio.taste import read_profile
    from progan.studio.setlist import read_setlist
    pattern = parse_pattern(args.pattern, coupling=args.coupling, period=args.period)
    taste = read_profile(args.taste) if args.taste else None
    setlist = read_setlist(args.setlist) if args.setlist else None
    run_studio(args.model, host=args.host, port=args.port, device=args.device, token=args.token,
               open_browser=args.open, threads=args.threads, text_encoder=args.text_encoder, pattern=pattern,
               taste=taste, seed=args.seed, setlist=setlist, setlist_name=args.setlist.name if args.setlist else "",
               condition_noise=args.condition_noise, reading=args.reading)


# ---------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="progan", description="Progressive Growing of GANs: train, evaluate, "
                                     "generate and steer live.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_dataset, add_train, add_generate, add_eval, add_plot, add_studio):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:  # our errors are ValueError / FileNotFoundError with a clear message
        print(f"progan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"progan {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
