"""The condition rows of one training step, a pure function of the dataset's per-image conditions, the real
batch's image indices and the step's random generator (so a resumed run draws exactly what it would have).

- Classes (the official AC-GAN): the reals' one-hot rows, which D's fakes are also generated from; G's step gets the
  rows of images drawn uniformly from the dataset, i.e. the dataset's own label distribution.
- Text: the same with caption embeddings, plus the conditioning augmentation's noise for both G calls, a mismatched
  caption per real (matching-aware negatives: the caption of an image that is really different, so that skin-tone
  variants of one emoji do not count as wrong) and GAN-INT mixes of two captions for a share of G's rows.

Everything is drawn for the global batch and this rank's slice taken, so N processes see exactly what one would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F

from progan.conditioning.captions import caption_kinds, captions_differ
from progan.config import ConfigError, ModelConfig, TrainConfig

# Which image pairs really differ: a [N, N] bool matrix, or f(a, b) -> bool per pair of index tensors.
Different = Union[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

MISMATCH_CANDIDATES = 8  # per real; with any sizeable dataset the first is nearly always really different


def condition_table(cfg: ModelConfig, labels=None, num_labels: int = 0, embeddings=None,
                    source: str = "the dataset") -> torch.Tensor | None:
    """The dataset's condition rows [N, cond_size] for a model of `cfg`: one-hot classes, or the caption embeddings
    L2-normalised (zero rows, images without a caption, kept); None for an unconditional model (which ignores any
    labels the dataset has).

    labels: per-image class indices (list or LongTensor) or None; num_labels: the dataset's class count
    (len(label_names)); embeddings: [N, E] caption embeddings or None. Refuses a dataset that does not fit the model.
    """
    if cfg.num_classes:
        if labels is None:
            raise ConfigError(f"the model is class-conditional ({cfg.num_classes} classes) but {source} has no "
                              "labels; prepare it with --labels-from-folders (the built-in emoji: "
                              "--labels-from-groups), or train without classes")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if num_labels != cfg.num_classes:
            raise ConfigError(f"the model has {cfg.num_classes} classes but {source} has {num_labels}; "
                              f"set the model's class count to {num_labels}")
        if labels.dim() != 1 or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_labels):
            raise ConfigError(f"{source}: labels must be one class index in [0, {num_labels}) per image")
        return F.one_hot(labels, cfg.num_classes).float()
    if cfg.text_size:
        if embeddings is None:
            raise ConfigError(f"the model is text-conditional but {source} has no caption embeddings; prepare it "
                              "with captions and a text encoder")
        embeddings = torch.as_tensor(embeddings).float()
        if embeddings.dim() != 2 or embeddings.shape[1] != cfg.text_size:
            raise ConfigError(f"the model takes caption embeddings of size {cfg.text_size} but {source} has "
                              f"{tuple(embeddings.shape)}; set the model's text size to the encoder's dimension")
        if not torch.isfinite(embeddings).all():
            raise ConfigError(f"{source}: caption embeddings must be finite")
        norms = embeddings.norm(dim=1, keepdim=True)
        if not (norms > 0).any():
            raise ConfigError(f"{source}: every caption embedding is zero (no image has a caption)")
        # Zero rows (images without a caption) stay zero: no projection term, and never a mismatched pair.
        return torch.where(norms > 0, embeddings / norms.clamp_min(1e-12), embeddings)
    return None


@dataclass
class CaptionVariants:
    """Each image's other captions (its dataset's "caption_variants"), one drawn per image and step."""

    rows: torch.Tensor   # [M, E] unit vectors, image after image
    start: torch.Tensor  # [N] long: each image's first row
    count: torch.Tensor  # [N] long: how many it has (0: its own caption's row stands in)

    @classmethod
    def of(cls, dataset, device: torch.device) -> "CaptionVariants | None":
        texts, rows = dataset.column("caption_variants"), getattr(dataset, "variant_embeddings", None)
        if texts is None or rows is None or not len(rows):
            return None
        count = torch.tensor([len(t) for t in texts], dtype=torch.long)
        start = torch.cumsum(count, 0) - count
        return cls(rows.float().to(device), start.to(device), count.to(device))

    def pick(self, table: torch.Tensor, idx: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """[n, E]: for images idx [n], the variant that uniform numbers u [n] in [0, 1) choose."""
        count = self.count[idx]
        k = torch.minimum((u * count).long(), (count - 1).clamp_min(0))
        rows = self.rows[(self.start[idx] + k).clamp_max(len(self.rows) - 1)]
        return torch.where((count > 0)[:, None], rows, table[idx])


def dataset_conditions(cfg: TrainConfig, dataset, device: torch.device
                       ) -> tuple[torch.Tensor | None, Different | None, CaptionVariants | None]:
    """(condition_table for `dataset` on `device`, which pairs are really different, the caption variants steps
    draw from) for a run: (None, None, None) for an unconditional model. For text, pairs are mismatched unless they
    name the same thing (progan.conditioning.captions: variants of one thing, paraphrases, uncaptioned images)."""
    model = cfg.model
    table = condition_table(model, dataset.labels, dataset.num_classes, getattr(dataset, "caption_embeddings", None),
                            source=str(dataset.path))
    if table is None:
        return None, None, None
    table = table.to(device)
    different, variants = None, None
    if model.text_size and getattr(dataset, "captions", None) is not None:
        kinds = caption_kinds(dataset.captions, dataset.column("variant_of")).to(device)
        different = lambda a, b: captions_differ(kinds, a, b, table)  # noqa: E731
        variants = CaptionVariants.of(dataset, device) if cfg.caption_variants else None
    return table, different, variants


def conditions_fingerprint(cfg: ModelConfig, dataset, table: torch.Tensor | None,
                           variants: CaptionVariants | None = None) -> dict:
    """What a run is conditioned on, for a resumed run to check it trains on the same: the class names or the text
    encoder, and a hash of the condition table (every image's label or caption vector, and caption variants)."""
    if table is None:
        return {"kind": "none"}
    tables = [table] if variants is None else [table, variants.rows, variants.count]
    digest = hashlib.sha256()
    for t in tables:
        digest.update(t.cpu().contiguous().numpy().tobytes())
    fingerprint = {"kind": "class" if cfg.num_classes else "text", "table_sha256": digest.hexdigest()}
    if cfg.num_classes:
        fingerprint["label_names"] = list(dataset.label_names)
    else:
        fingerprint["encoder"] = {key: dataset.text_encoder.get(key) for key in ("name", "dimension", "sha256")}
    return fingerprint


@dataclass
class StepConditions:
    real: torch.Tensor                   # [n, C] the reals' rows; D's fakes are generated from the same rows
    fake: torch.Tensor                   # [n, C] G's step: rows of random images (text: a gan_int share mixed)
    noise_d: torch.Tensor | None = None  # [n, ca_size] conditioning augmentation's noise for D's fakes
    noise_g: torch.Tensor | None = None  # ... and for G's step
    wrong: torch.Tensor | None = None    # [n, E] text: per real, the caption of a really different image
    wrong_mask: torch.Tensor | None = None  # [n] bool: False where no candidate was really different


def step_conditions(table: torch.Tensor, idx: torch.Tensor, gen: torch.Generator, cfg: TrainConfig,
                    world_size: int = 1, rank: int = 0, different: Different | None = None,
                    variants: CaptionVariants | None = None) -> StepConditions:
    """This rank's condition rows for one step.

    table: condition_table(...) on the step's device; idx: this rank's real images' dataset indices [n];
    gen: a generator on the table's device for this step's conditions alone (the order of draws is fixed per
    config); different: which pairs count as mismatched for text (default: pairs whose rows differ); variants:
    text: each image's row is then one of its caption variants, drawn anew each step (after every other draw, so
    a run without variants draws exactly what it always did).
    """
    device, count = table.device, table.shape[0]
    n = idx.shape[0]
    total = n * world_size
    mine = slice(rank * n, (rank + 1) * n)
    idx = idx.to(device)

    def draw_indices(*shape):
        return torch.randint(count, (total, *shape), generator=gen, device=device)[mine]

    g_idx = draw_indices()
    conds = StepConditions(real=table[idx], fake=table[g_idx])
    if not cfg.model.text_size:
        return conds

    other = draw_indices()
    beta = torch.rand(total, 1, generator=gen, device=device)[mine]
    mixed = torch.rand(total, generator=gen, device=device)[mine] < cfg.loss.gan_int
    beta = torch.where(mixed[:, None], beta, torch.ones_like(beta))
    # Convex mixes, not renormalised: a prompt is read as a mixture of captions, and fed as one too.
    conds.fake = beta * table[g_idx] + (1 - beta) * table[other]

    candidates = draw_indices(MISMATCH_CANDIDATES)
    diff = pairs_differ(table, idx[:, None].expand_as(candidates).reshape(-1), candidates.reshape(-1),
                            different).view_as(candidates)
    captioned = table.abs().amax(dim=1) > 0
    diff &= captioned[idx][:, None] & captioned[candidates]  # an image without a caption has no wrong one
    first = diff.to(torch.uint8).argmax(dim=1)  # the first really different candidate (0 if none)
    wrong_idx = candidates[torch.arange(n, device=device), first]
    conds.wrong = table[wrong_idx]
    conds.wrong_mask = diff.any(dim=1)

    if cfg.model.ca_size:
        conds.noise_d = torch.randn(total, cfg.model.ca_size, generator=gen, device=device)[mine]
        conds.noise_g = torch.randn(total, cfg.model.ca_size, generator=gen, device=device)[mine]
    if variants is not None:
        u = torch.rand(total, 4, generator=gen, device=device)[mine]
        conds.real = variants.pick(table, idx, u[:, 0])
        conds.fake = beta * variants.pick(table, g_idx, u[:, 1]) + (1 - beta) * variants.pick(table, other, u[:, 2])
        conds.wrong = variants.pick(table, wrong_idx, u[:, 3])
    return conds


def pairs_differ(table: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                     different: Different | None = None) -> torch.Tensor:
    """[len(a)] bool: whether images a[i] and b[i] count as a mismatched pair."""
    if different is None:
        return (table[a] - table[b]).abs().amax(dim=1) > 1e-6
    if isinstance(different, torch.Tensor):
        if different.dtype != torch.bool or different.shape != (table.shape[0], table.shape[0]):
            raise ValueError(f"the 'really different' matrix must be bool [{table.shape[0]}, {table.shape[0]}], "
                             f"got {different.dtype} {tuple(different.shape)}")
        return different.to(a.device)[a, b]
    result = torch.as_tensor(different(a, b), device=a.device)
    if result.dtype != torch.bool or result.shape != a.shape:
        raise ValueError(f"the 'really different' function must return bool [{len(a)}], got {result.dtype} "
                         f"{tuple(result.shape)}")
    return result
