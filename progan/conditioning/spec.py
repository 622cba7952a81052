"""What a conditional generator is conditioned on, as recorded in its exported model.

Training records it in model/ (model_io): the class names, or the text encoder and the distinct captions with
their vectors. Everything downstream (generate, the studio) asks a loaded generator through these functions.
"""

from __future__ import annotations

import torch


class ConditionError(ValueError):
    """A class name, blend or prompt that this model cannot take."""


def export_conditioning(dataset, model_cfg, with_variants: bool = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON for the model's config.json, tensors for its conditions.safetensors) for a model trained on `dataset`.

    Text models keep one vector per distinct caption, and per distinct caption variant when training drew from
    them (`with_variants`): the texts a prompt is read as a mixture of, all of them texts the model trained on."""
    if model_cfg.num_classes:
        return {"kind": "class", "label_names": list(dataset.label_names)}, {}
    if model_cfg.text_size:
        texts, vectors = list(dataset.captions), [dataset.caption_embeddings]
        if with_variants and dataset.variant_embeddings is not None:
            texts += [t for variants in dataset.column("caption_variants") for t in variants]
            vectors.append(dataset.variant_embeddings)
        vectors = torch.cat(vectors)
        first = {}
        for i, text in enumerate(texts):
            if text and float(vectors[i].norm()) > 0.5:
                first.setdefault(text, i)
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
