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


def random_caption_rows(G, n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, E] the vectors of uniformly drawn training captions (grids of a text model without --prompt)."""
    vectors = G.meta["conditioning"]["caption_vectors"]
    return vectors[torch.randint(len(vectors), (n,), generator=generator)]


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
    vectors = G.meta["conditioning"]["caption_vectors"]
    return vectors[reading.indices[seed_draws(reading.weights, seeds)]].float()
