"""What a conditional model's stream can be asked to show: the model's conditioning as the controls see it
(`Conditioning`), and the condition rows (`Target`s) of a class blend, a prompt's reading or a caption of the data.

The studio's one reader of what a model records about its conditioning (class names, captions and their vectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from progan.conditioning.spec import conditioning_kind, describe_conditioning
from progan.networks import Generator


@dataclass(frozen=True)
class Conditioning:
    """What a model can be steered with, as the control table needs it (conditioning_of(G) makes one)."""

    kind: str = "none"                   # "none" | "class" | "text"
    describe: str = "unconditional"      # progan.conditioning.spec.describe_conditioning
    class_names: tuple[str, ...] = ()    # class models
    no_prompt: str | None = None         # text models: why prompts cannot be read (None: they can)

    @property
    def class_unavailable(self) -> str | None:
        return None if self.kind == "class" else f"this model is {self.describe}: it takes no class"

    @property
    def prompt_unavailable(self) -> str | None:
        if self.kind != "text":
            return f"this model is {self.describe}: it takes no prompt"
        return self.no_prompt


def conditioning_of(G: Generator) -> Conditioning:
    """What the studio can steer G with: classes (named as in the exported model, else by number), prompts (a
    text model that records its captions, to read prompts against), or nothing."""
    kind = conditioning_kind(G)
    if G.num_classes:
        named = kind == "class"
        names = G.meta["conditioning"]["label_names"] if named else [str(i) for i in range(G.num_classes)]
        describe = describe_conditioning(G) if named else f"class-conditional ({G.num_classes} classes)"
        return Conditioning("class", describe, tuple(names))
    if G.text_size:
        if kind == "text":
            return Conditioning("text", describe_conditioning(G))
        return Conditioning("text", f"text-conditional ({G.text_size}-d caption vectors)",
                            no_prompt="this text-conditional model records no captions to read a prompt against "
                                      "(a model exported by progan train does)")
    return Conditioning()


@dataclass(frozen=True)
class Target:
    """What a stream is asked to show: its condition row [cond_size] and, for the page, what it is and how it was
    read; source "prompt", "class", "data" (a caption of the training data) or "seed" (the sample of a seed: no
    row, the latents go there). `seconds`: how long an entry of a setlist plays (None: the prompt queue's time), and
    the mark of a setlist entry, which goes back to the end of the queue once it has played."""

    row: torch.Tensor | None
    text: str
    reading: str
    source: str
    seconds: float | None = None
    seed: int | None = None
    # A prompt's reading as a distribution: its captions' vectors [m, cond_size] and weights [m], which the
    # stream's lanes each draw their own caption from (FrameRenderer.reading "draw"); None: every lane takes `row`.
    parts: tuple[torch.Tensor, torch.Tensor] | None = None

    def as_json(self) -> dict:
        entry = {} if self.seconds is None else {"seconds": self.seconds}
        return {"text": self.text, "reading": self.reading, "source": self.source, **entry}


class Targets:
    """The targets one model can be asked for: its `conditioning`, and for a text model the captions it records
    (with their vectors), which a stream tours until the first prompt."""

    def __init__(self, G: Generator):
        self.conditioning = conditioning_of(G)
        self.num_classes = G.num_classes
        self.cond_size = G.cond_size
        meta = getattr(G, "meta", {}).get("conditioning", {})
        self.captions = list(meta.get("captions", [])) if self.conditioning.kind == "text" else []
        self.caption_vectors = meta["caption_vectors"].float().cpu() if self.captions else None

    def class_target(self, weights: dict[int, float]) -> Target:
        """{class index: weight} -> one class or a soft blend (AC-GAN rows are linear before the pixel norm)."""
        row = torch.zeros(self.num_classes)
        for i, w in weights.items():
            row[i] += w
        row /= row.sum()
        names = self.conditioning.class_names
        parts = sorted(((float(w), names[i]) for i, w in enumerate(row.tolist()) if w > 0), reverse=True)
        text = parts[0][1] if len(parts) == 1 else ", ".join(f"{n} {w:.2f}" for w, n in parts)
        return Target(row, text, text, "class")

    def prompt_target(self, text: str, reading) -> Target:
        """A prompt and its progan.conditioning.prompts.PromptReading."""
        parts = (self.caption_vectors[reading.indices], reading.weights.float()) if self.captions else None
        return Target(reading.condition.float().cpu(), text, reading.describe(), "prompt", parts=parts)

    def caption_target(self, rng: torch.Generator) -> Target:
        """A caption of the training data, drawn with `rng` (what a text stream shows until the first prompt)."""
        i = int(torch.randint(len(self.captions), (1,), generator=rng))
        return Target(self.caption_vectors[i], self.captions[i], "a caption of the training data", "data")

    def seed_target(self, seed: int) -> Target:
        """The sample of a seed (as `progan generate --seeds` and the studio's seed box show it)."""
        return Target(None, f"seed {seed}", f"the sample of seed {seed}", "seed", seed=seed)

    def first_target(self, rng: torch.Generator) -> Target | None:
        if self.conditioning.kind == "class":
            return self.class_target({0: 1.0})
        if self.conditioning.kind == "text":
            if self.captions:
                return self.caption_target(rng)
            return Target(torch.zeros(self.cond_size), "no caption", "the model's uncaptioned images", "data")
        return None
