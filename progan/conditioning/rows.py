"""Condition rows [B, cond_size] for a loaded generator: what generate, the studio and the benchmarks feed G.

A class name or a blend of classes becomes soft one-hot rows; a prompt is read as a mixture of the training
captions (progan.conditioning.prompts.read_prompt), so the model is asked for something between what it has seen,
never for an embedding it was not trained near.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from progan.conditioning.encoder import EncoderMismatch, check_same_encoder, encoder_for
from progan.conditioning.prompts import check_prompt, read_prompt
from progan.conditioning.spec import ConditionError, conditioning_kind, describe_conditioning


def one_hot_rows(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[n, C] one-hot rows of class indices [n]."""
    return F.one_hot(labels.long(), num_classes).float()


def class_blend_rows(G, names: list[str] | str, n: int, weights: list[float] | None = None) -> torch.Tensor:
    """[n, C] rows for one class name, or a weighted blend of several (soft rows: AC-GAN conditioning is linear in
    them before the pixel norm)."""
    if conditioning_kind(G) != "class":
        raise ConditionError(f"this model is {describe_conditioning(G)}: it takes no class")
    label_names = G.meta["conditioning"]["label_names"]
    names = [names] if isinstance(names, str) else list(names)
    weights = [1.0] * len(names) if weights is None else list(weights)
    if len(weights) != len(names) or not names or any(not (0 <= w < math.inf) for w in weights) or sum(weights) <= 0:
        raise ConditionError(f"a blend needs one finite, non-negative weight per class and a positive sum, got "
                             f"{weights}")
    row = torch.zeros(len(label_names))
    for name, w in zip(names, weights):
        if name not in label_names:
            close = [c for c in label_names if name.lower() in c.lower()][:5]
            raise ConditionError(f"unknown class {name!r}; this model's classes: "
                                 f"{', '.join(close or label_names[:20])}{' ...' if len(label_names) > 20 else ''}")
        row[label_names.index(name)] += w
    return (row / row.sum()).expand(n, -1).clone()


def random_class_rows(G, n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, C] one-hot rows of uniformly drawn classes (grids of a class model without --class)."""
    num = len(G.meta["conditioning"]["label_names"])
    return F.one_hot(torch.randint(num, (n,), generator=generator), num).float()


def caption_rows(G, captions: torch.Tensor, picks: torch.Tensor | None = None) -> torch.Tensor:
    """[n, cond_size]: the condition rows of training captions (indices [n] into the model's caption vectors).

    A model that takes thumbnails (progan.conditioning.thumbnails) gets, beside each caption's vector, the
    thumbnail of one image the caption names: the one that uniform numbers `picks` [n] in [0, 1) choose, or with
    `picks` None the mean of all of them (a caption's centre)."""
    cond = G.meta["conditioning"]
    captions = torch.as_tensor(captions, dtype=torch.long).reshape(-1)
    vectors = cond["caption_vectors"][captions].float()
    if not G.cfg.thumbnail_size:
        return vectors
    offsets, images, thumbs = cond["caption_image_offsets"], cond["caption_images"], cond["thumbnails"].float()
    start, count = offsets[captions], offsets[captions + 1] - offsets[captions]
    if picks is None:
        chosen = torch.stack([thumbs[images[a:a + c]].mean(0) for a, c in zip(start.tolist(), count.tolist())])
    else:
        k = torch.minimum((picks.reshape(-1) * count).long(), count - 1)
        chosen = thumbs[images[start + k]]
    return torch.cat([vectors, chosen], dim=1)


def image_picks(seeds: list[int], *key) -> torch.Tensor:
    """[len(seeds)] uniform numbers in [0, 1), one per seed: which image of its caption a seed takes (caption_rows),
    the same for a seed everywhere."""
    from progan.seeds import generator

    return torch.cat([torch.rand(1, generator=generator(s, "caption-image", *key)) for s in seeds])


def reading_mean_row(G, reading) -> torch.Tensor:
    """[cond_size]: the weighted mean of a reading's caption rows (each at its centre), one blend for every seed."""
    return reading.weights.float() @ caption_rows(G, reading.indices)


def random_caption_rows(G, n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, cond_size] the rows of uniformly drawn training captions (grids of a text model without --prompt)."""
    count = len(G.meta["conditioning"]["caption_vectors"])
    captions = torch.randint(count, (n,), generator=generator)
    return caption_rows(G, captions, torch.rand(n, generator=generator) if G.cfg.thumbnail_size else None)


def prompt_reading(G, prompt: str, encoder=None, encoder_folder=None):
    """Read `prompt` for this text model -> a PromptReading (its .condition is the row, .describe() how it was
    read). The prompt is checked before the encoder loads (seconds). `encoder`: a loaded TextEncoder to reuse (the
    studio keeps one); `encoder_folder`: where the model's encoder is, when it has moved since training."""
    if conditioning_kind(G) != "text":
        raise ConditionError(f"this model is {describe_conditioning(G)}: it takes no prompt")
    prompt = check_prompt(prompt)
    cond = G.meta["conditioning"]
    try:
        if encoder is None:
            encoder = encoder_for(cond["encoder"], encoder_folder)
        else:
            check_same_encoder(encoder, cond["encoder"])
    except EncoderMismatch as e:
        raise ConditionError(f"{e} (this model was trained with it)") from None
    return read_prompt(encoder.encode_prompt(prompt), cond["caption_vectors"], cond["captions"])


def seed_draws(weights: torch.Tensor, seeds: list[int]) -> list[int]:
    """Per seed, the index of one part of a reading (weights [m]), drawn with probability its weight: the same
    draw for a seed everywhere (`progan generate`, the studio's seed box)."""
    from progan.seeds import generator

    return [int(torch.multinomial(weights, 1, generator=generator(s, "reading-draw"))) for s in seeds]


def drawn_rows(G, reading, seeds: list[int]) -> torch.Tensor:
    """[len(seeds), C]: each seed's own caption of a prompt's reading, drawn with probability its weight (seed_draws).
    A reading is a distribution: seeds that each draw from it show its parts (a monkey, a moon, a surfer), where
    the weighted mean of their vectors is one blend the model never saw."""
    return caption_rows(G, reading.indices[seed_draws(reading.weights, seeds)], image_picks(seeds))
