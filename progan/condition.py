"""What a conditional generator is conditioned on, and the condition rows that generate and the studio feed it.

Training records it in the exported model (model_io): the class names, or the text encoder's name and the distinct
captions with their vectors. Downstream, a class name, a blend of classes or a prompt becomes rows [B, cond_size]
for G; a prompt is read as a mixture of the training captions (progan.text.read_prompt), so the model is asked
for something between what it has seen, never for an embedding it was not trained near.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ConditionError(ValueError):
    """A class name, blend or prompt that this model cannot take."""


def export_conditioning(dataset, model_cfg) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON for the model's config.json, tensors for its conditions.safetensors) for a model trained on `dataset`.

    Text models keep one vector per distinct caption: what reading a prompt needs, and far smaller than the
    dataset's per-image table when images share captions."""
    if model_cfg.num_classes:
        return {"kind": "class", "label_names": list(dataset.label_names)}, {}
    if model_cfg.text_size:
        vectors, captions = dataset.caption_embeddings, dataset.captions
        first = {}
        for i, caption in enumerate(captions):
            if caption and float(vectors[i].norm()) > 0.5:
                first.setdefault(caption, i)
        idx = torch.tensor(list(first.values()), dtype=torch.long)
        return ({"kind": "text", "encoder": dict(dataset.text_encoder), "captions": list(first)},
                {"caption_vectors": vectors[idx].float().contiguous()})
    return {"kind": "none"}, {}


def kind(G) -> str:
    return G.meta.get("conditioning", {}).get("kind", "none") if hasattr(G, "meta") else "none"


def class_rows(G, names: list[str] | str, n: int, weights: list[float] | None = None) -> torch.Tensor:
    """[n, C] rows for one class name, or a weighted blend of several (soft rows: AC-GAN conditioning is linear in
    them before the pixel norm)."""
    if kind(G) != "class":
        raise ConditionError(f"this model is {describe_kind(G)}: it takes no class")
    label_names = G.meta["conditioning"]["label_names"]
    names = [names] if isinstance(names, str) else list(names)
    weights = [1.0] * len(names) if weights is None else list(weights)
    if len(weights) != len(names) or not names or any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ConditionError(f"a blend needs one non-negative weight per class and a positive sum, got {weights}")
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


def caption_rows(G, n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, E] the vectors of uniformly drawn training captions (grids of a text model without --prompt)."""
    vectors = G.meta["conditioning"]["caption_vectors"]
    return vectors[torch.randint(len(vectors), (n,), generator=generator)]


def prompt_reading(G, prompt: str, encoder=None):
    """Read `prompt` for this text model -> progan.text.PromptReading (its .condition is the row, .describe() how
    it was read). `encoder`: a loaded progan.text.TextEncoder to reuse (the studio keeps one)."""
    from progan.text import load_text_encoder, read_prompt
    if kind(G) != "text":
        raise ConditionError(f"this model is {describe_kind(G)}: it takes no prompt")
    cond = G.meta["conditioning"]
    if encoder is None:
        encoder = load_text_encoder(cond["encoder"]["name"])
    trained_with = cond["encoder"]
    if encoder.dimension != G.cfg.text_size or trained_with.get("sha256", encoder.sha256) != encoder.sha256:
        raise ConditionError(f"the text encoder {encoder.name!r} ({encoder.dimension}-d, sha256 "
                             f"{encoder.sha256[:12]}) is not the one this model was trained with "
                             f"({trained_with['name']!r}, {G.cfg.text_size}-d, sha256 "
                             f"{str(trained_with.get('sha256'))[:12]})")
    return read_prompt(encoder.encode_prompt(prompt), cond["caption_vectors"], cond["captions"])


def describe_kind(G) -> str:
    k = kind(G)
    if k == "class":
        return f"class-conditional ({len(G.meta['conditioning']['label_names'])} classes)"
    if k == "text":
        return f"text-conditional ({G.meta['conditioning']['encoder']['name']})"
    return "unconditional"
