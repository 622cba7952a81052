"""What a conditional generator is conditioned on, as recorded in its exported model.

Training records it in model/ (model_io): the class names, or the text encoder and the distinct captions with
their vectors. Everything downstream (generate, the studio) asks a loaded generator through these functions.
"""

from __future__ import annotations

import torch


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


def conditioning_kind(G) -> str:
    """'class', 'text' or 'none'."""
    return G.meta.get("conditioning", {}).get("kind", "none") if hasattr(G, "meta") else "none"


def describe_conditioning(G) -> str:
    k = conditioning_kind(G)
    if k == "class":
        return f"class-conditional ({len(G.meta['conditioning']['label_names'])} classes)"
    if k == "text":
        return f"text-conditional ({G.meta['conditioning']['encoder']['name']})"
    return "unconditional"
