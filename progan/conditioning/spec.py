"""What a conditional generator is conditioned on, as recorded in its exported model.

Training records it in model/ (model_io): the class names, or the text encoder and the distinct captions with
their vectors. Everything downstream (generate, the studio) asks a loaded generator through these functions.
"""

from __future__ import annotations

import itertools

import torch

from progan.conditioning.thumbnails import image_thumbnails


class ConditionError(ValueError):
    """A class name, blend or prompt that this model cannot take."""


def export_conditioning(dataset, model_cfg, with_variants: bool = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON for the model's config.json, tensors for its conditions.safetensors) for a model trained on `dataset`.

    Text models keep one vector per distinct caption, and per distinct caption variant when training drew from
    them (`with_variants`): the texts a prompt is read as a mixture of, all of them texts the model trained on.
    A model that takes thumbnails also keeps every image's thumbnail and which images each text captions
    (`caption_images` at `caption_image_offsets[i]:[i + 1]`), the thumbnails a drawn caption may come with."""
    if model_cfg.num_classes:
        return {"kind": "class", "label_names": list(dataset.label_names)}, {}
    if model_cfg.text_size:
        texts, vectors = list(dataset.captions), [dataset.caption_embeddings]
        owners = list(range(len(texts)))
        if with_variants and dataset.variant_embeddings is not None:
            for owner, variants in enumerate(dataset.column("caption_variants")):
                texts += variants
                owners += [owner] * len(variants)
            vectors.append(dataset.variant_embeddings)
        vectors = torch.cat(vectors)
        first, images = {}, {}
        for i, text in enumerate(texts):
            if text and float(vectors[i].norm()) > 0.5:
                first.setdefault(text, i)
                images.setdefault(text, set()).add(owners[i])
        idx = torch.tensor(list(first.values()), dtype=torch.long)
        tensors = {"caption_vectors": vectors[idx].float().contiguous()}
        if model_cfg.thumbnail_size:
            members = [sorted(images[text]) for text in first]
            tensors["thumbnails"] = image_thumbnails(dataset, model_cfg.thumbnail_size).contiguous()
            tensors["caption_images"] = torch.tensor([i for m in members for i in m], dtype=torch.long)
            tensors["caption_image_offsets"] = torch.tensor([0, *itertools.accumulate(map(len, members))],
                                                            dtype=torch.long)
        return {"kind": "text", "encoder": dict(dataset.text_encoder), "captions": list(first)}, tensors
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
