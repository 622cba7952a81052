"""Which captions name the same thing: what makes a (real image, caption) pair a true mismatch.

A dataset may say which of its images are variants of one thing (its `variant_of` column: the built-in emoji's
skin-tone variants carry their base emoji's name); otherwise two captions name the same thing when they are equal
up to case and spacing, or, given their vectors, when they are paraphrases.
"""

from __future__ import annotations

import torch

# Two captions this similar (cosine) are the same thing said twice, not a mismatch (paraphrases in user data).
SAME_MEANING_SIMILARITY = 0.9


def caption_kinds(captions: list[str | None], variant_of: list[str | None] | None = None) -> torch.Tensor:
    """LongTensor [N]: equal ids for images that show the same thing; -1 for an image without a caption.

    variant_of: per image, the name of the thing it is a variant of (None: its caption names it)."""
    ids: dict[str, int] = {}
    out = []
    for i, caption in enumerate(captions):
        name = (variant_of[i] if variant_of is not None else None) or caption or ""
        key = " ".join(name.casefold().split()) if caption else ""
        out.append(ids.setdefault(key, len(ids)) if key else -1)
    return torch.tensor(out, dtype=torch.long)


def captions_differ(
    kinds: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    caption_vectors: torch.Tensor | None = None,
    max_similarity: float = SAME_MEANING_SIMILARITY,
) -> torch.BoolTensor:
    """BoolTensor like i: True where image j's caption may serve as a mismatched caption for image i.

    Not different: the same kind (caption_kinds), either image uncaptioned, or (with caption vectors) captions at
    least max_similarity alike, i.e. paraphrases.
    """
    ki, kj = kinds[i], kinds[j]
    out = (ki != kj) & (ki >= 0) & (kj >= 0)
    if caption_vectors is not None:
        out &= (caption_vectors[i] * caption_vectors[j]).sum(-1) < max_similarity
    return out
