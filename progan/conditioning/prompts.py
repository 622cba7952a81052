"""A prompt read as a mixture of the training captions.

    reading = read_prompt(enc.encode_prompt("monkeys surfing on the moon"), caption_vectors, captions)
    reading.describe()   # 'monkey 0.30, new moon 0.20, person surfing 0.16, man surfing 0.15, ...'
    reading.condition    # [D]: the vector the model is conditioned on; reading.off_data: nothing close in the data
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import torch

MAX_PROMPT_CHARS = 300  # a sentence or two; the encoder reads at most 256 word pieces anyway
# A prompt that the best non-negative mixture of its nearest captions explains less well than this (cosine between
# the prompt and the mixture) is "close to nothing in the data". Calibrated with benchmarks/text_encoders.py on the
# built-in emoji: prompts about things the set has (one thing or scenes of two or three) fit 0.61-1.00, prompts about
# things it lacks (tax law, databases, maths, gibberish) 0.33-0.60. The nearest caption's similarity alone does not
# separate them: scenes ("a dog playing in the snow" 0.46) score below word-overlap accidents ("SQL database index"
# 0.47 on "index pointing up").
MIN_FIT = 0.6


class PromptError(ValueError):
    """A prompt that cannot be read (empty, too long, control characters, not text)."""


def check_prompt(prompt) -> str:
    """The prompt as the encoder will read it (whitespace collapsed), or PromptError saying what is wrong."""
    if isinstance(prompt, (bytes, bytearray)):
        try:
            prompt = bytes(prompt).decode("utf-8")
        except UnicodeDecodeError as e:
            raise PromptError(f"prompt is not UTF-8 text (byte {e.start} cannot be decoded)") from None
    if not isinstance(prompt, str):
        raise PromptError(f"prompt must be text, got {type(prompt).__name__}")
    for i, c in enumerate(prompt):
        if c in "\t\n\r":
            continue  # pasted text: read as spaces
        if c == "\ufffd" or unicodedata.category(c) in ("Cc", "Cs"):
            raise PromptError(f"prompt contains a control or binary character (U+{ord(c):04X} at position {i})")
    text = " ".join(prompt.split())
    if not text:
        raise PromptError("prompt is empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(f"prompt is {len(text)} characters long; at most {MAX_PROMPT_CHARS}")
    return text


@dataclass(frozen=True)
class PromptReading:
    """How a prompt was read: a convex mixture of captions, best first."""

    indices: torch.Tensor  # LongTensor [m]: one image index per caption in the mixture
    weights: torch.Tensor  # float32 [m], positive, sum to 1
    captions: tuple[str, ...]  # the m captions
    condition: torch.Tensor  # float32 [D]: weights @ caption_vectors[indices], what the model is conditioned on
    similarity: float  # cosine between the prompt and its nearest caption
    fit: float  # cosine between the prompt and the best non-negative combination of its top-k captions
    off_data: bool  # fit < min_fit: nothing in the data is close to this prompt

    def describe(self, digits: int = 2) -> str:
        """'monkey 0.43, person surfing 0.41, full moon 0.16' (and a warning when the prompt is off the data)."""
        text = ", ".join(f"{c} {w:.{digits}f}" for c, w in zip(self.captions, self.weights.tolist()))
        if self.off_data:
            return f"nothing in the data is close to this prompt (fit {self.fit:.2f}: {text})"
        return text


def read_prompt(
    prompt_vector: torch.Tensor,
    caption_vectors: torch.Tensor,
    captions: list[str],
    *,
    top_k: int = 8,
    min_weight: float = 0.05,
    min_fit: float = MIN_FIT,
) -> PromptReading:
    """Read a prompt vector [D] as a non-negative mixture of caption vectors [N, D] (unit rows; zero rows are
    images without a caption and never chosen).

    Fits min ||sum_i w_i c_i - p||, w >= 0 (NNLS) over the top_k distinct captions nearest to p, drops weights
    under min_weight of the total, and normalises the rest to sum 1: the condition is then a convex combination of
    caption vectors, the kind of point that training on interpolated embeddings (GAN-INT) covers.
    """
    p = prompt_vector.detach().float().reshape(-1).cpu()
    C = caption_vectors.detach().float().cpu()
    if C.ndim != 2 or C.shape[1] != p.numel():
        raise ValueError(f"caption vectors must be [N, {p.numel()}], got {list(C.shape)}")
    if len(captions) != C.shape[0]:
        raise ValueError(f"{len(captions)} captions for {C.shape[0]} caption vectors")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    sims = C @ p
    has_caption = C.norm(dim=1) > 0.5
    if not has_caption.any():
        raise ValueError("no caption vectors to read the prompt with (the dataset has no captions)")
    sims = torch.where(has_caption, sims, torch.full_like(sims, -2.0))
    chosen, seen = [], set()
    for i in torch.argsort(sims, descending=True, stable=True).tolist():
        if not has_caption[i]:
            break
        if captions[i] not in seen:  # many images may share a caption: one column per distinct caption
            seen.add(captions[i])
            chosen.append(i)
            if len(chosen) == top_k:
                break
    idx = torch.tensor(chosen, dtype=torch.long)
    A = C[idx].T  # [D, k]
    w = nnls(A, p)
    fit = float(torch.nn.functional.cosine_similarity(A.double() @ w, p.double(), dim=0)) if w.sum() > 0 else 0.0
    if w.sum() <= 0:  # the prompt points away from every candidate: fall back on the nearest one
        w = torch.zeros(len(chosen), dtype=torch.float64)
        w[0] = 1.0
    w = w / w.sum()
    keep = w >= min_weight
    keep[torch.argmax(w)] = True
    w, idx = w[keep], idx[keep]
    order = torch.argsort(w, descending=True, stable=True)
    w, idx = (w[order] / w.sum()).float(), idx[order]
    best = float(sims[chosen[0]])
    return PromptReading(
        indices=idx,
        weights=w,
        captions=tuple(captions[i] for i in idx.tolist()),
        condition=w @ C[idx],
        similarity=best,
        fit=fit,
        off_data=fit < min_fit,
    )


def nnls(A: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> torch.Tensor:
    """argmin_w ||A w - b|| subject to w >= 0, for A [m, n], b [m] (Lawson and Hanson's active-set method).

    Exact for the small n of a prompt reading; float64 [n].
    """
    A, b = A.double(), b.double().reshape(-1)
    n = A.shape[1]
    w = torch.zeros(n, dtype=torch.float64)
    passive = torch.zeros(n, dtype=torch.bool)
    for _ in range(3 * n):
        grad = A.T @ (b - A @ w)
        free = ~passive & (grad > tol)
        if not free.any():
            break
        passive[torch.argmax(torch.where(free, grad, torch.full_like(grad, -torch.inf)))] = True
        while True:
            z = torch.zeros(n, dtype=torch.float64)
            cols = passive.nonzero().reshape(-1)
            z[cols] = torch.linalg.lstsq(A[:, cols], b.unsqueeze(1)).solution.reshape(-1)
            if (z[cols] > tol).all():
                w = z
                break
            # Step from w toward z until the first passive weight reaches zero, and release it.
            bad = passive & (z <= tol)
            alpha = torch.min(w[bad] / (w[bad] - z[bad]).clamp_min(1e-300))
            w = w + alpha * (z - w)
            passive &= w > tol
            w = torch.where(passive, w, torch.zeros_like(w))
    return w
