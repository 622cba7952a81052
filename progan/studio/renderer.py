"""The generator baked for streaming: `FrameRenderer` turns latents, truncation and condition rows into uint8
frames for any number of viewers at once, with what it works out once at start-up (the SeFa directions behind the
sliders and preferences, the mean first-layer activation that truncation pulls toward, the control table).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from progan.generate import mean_embedding, truncate
from progan.layers import inference_copy
from progan.lod import level_and_alpha
from progan.networks import Generator, count_parameters
from progan.studio.frames import frames_to_uint8
from progan.studio.protocol import controls
from progan.studio.targets import Targets
from progan.studio.taste import preference_dims, profile_model

CONDITION_MEAN_SAMPLES = 256   # latents behind each condition's truncation centre


def sefa(G: Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form factorisation of the first layer (SeFa, Shen & Zhou, CVPR 2021).

    The unit latent directions n that change the dense layer's output most are the top eigenvectors of W^T W.
    As in the reference code, each output unit's weight vector is normalised first, so a few large units do not
    dominate. Returns (eigenvalues [L], directions [L, L]) strongest first, one direction per row.
    """
    w = (G.dense.weight.detach() * G.dense.scale)[:, :G.latent_size].float().cpu()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    values, vectors = torch.linalg.eigh((w.T @ w).double())  # float32 product, float64 eigensolver
    order = values.argsort(descending=True)
    return values[order].float(), vectors[:, order].T.contiguous().float()


class FrameRenderer:
    """The model side: latents plus truncation -> uint8 frames, for any number of viewers at once.

    At start-up it factorises the first layer (SeFa) and averages the first 4x4 activation over many latents;
    both take milliseconds to a second even for the paper's model. `targets` holds what a conditional model's
    streams can be asked to show.
    """

    def __init__(self, G: Generator, sliders: int = 8, mean_samples: int = 2048, max_batch: int = 16,
                 max_pixels: int = 1 << 20, condition_noise: bool = False, reading: str = "draw"):
        self.G = G
        self.net = inference_copy(G)
        self.device = G.dense.weight.device
        self.level, self.alpha = level_and_alpha(G.lod, G.resolution)
        self.size = 4 * 2**self.level
        self.latent_size = G.latent_size
        self.cond_size = G.cond_size
        # A text model's conditioning-augmentation noise size when each lane samples its own noise around the code,
        # as training did (condition_noise); 0: every lane shows the code's mean.
        self.noise_size = G.cfg.ca_size if G.text_size and condition_noise else 0
        # How a text stream's lanes take a prompt's reading: "draw", each lane its own caption of it, drawn by
        # weight; "mean", every lane the mixture's weighted mean (as `progan generate --reading`).
        if reading not in ("draw", "mean"):
            raise ValueError(f"reading must be 'draw' or 'mean', got {reading!r}")
        self.reading = reading
        self.targets = Targets(G)
        t0 = time.perf_counter()
        self.eigenvalues, self.directions = sefa(G)
        self.sefa_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        # The fallback centre; a conditional session truncates toward its own condition's mean (condition_mean).
        # A text model's under the zero row, which training shows for images without a caption.
        self.x4_mean = mean_embedding(G, mean_samples, cond=torch.zeros(1, G.text_size) if G.text_size else None
                                      ).to(self.device)
        self.mean_ms = (time.perf_counter() - t0) * 1e3
        self.sliders = min(sliders, self.latent_size)
        self.pref_basis = self.directions[:preference_dims(self.eigenvalues)]
        self.taste_model = profile_model(self.latent_size, self.eigenvalues, self.pref_basis.shape[0])
        self.controls = controls(self.sliders, self.targets.conditioning)
        # Forward passes run in chunks of at most max_batch rows, each padded to a power of two: on the CPU,
        # oneDNN keeps a primitive (with its buffers) per input shape, so every distinct batch size would cost
        # memory for good (about 6 MB each at 32x32); this way there are at most log2(max_batch) + 1 shapes.
        # max_pixels bounds the activation memory of large models.
        self.max_batch = 1 << max(0, min(max_batch, max_pixels // self.size**2).bit_length() - 1)

    @torch.inference_mode()
    def render(self, z: torch.Tensor, psi: torch.Tensor, cond: torch.Tensor | None = None,
               mean: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> np.ndarray:
        """z [N, L] (any norm), psi [N] truncation, cond [N, cond_size] float rows for a conditional model (one-hot
        or blended classes, prompt readings), mean [N, C, 4, 4] the truncation centre of each row (default x4_mean),
        noise [N, noise_size] a text model's conditioning-augmentation noise (default: the code's mean), truncated
        with z -> [N, H, W, 3]."""
        out = []
        for i in range(0, z.shape[0], self.max_batch):
            rows = slice(i, i + self.max_batch)
            n = z[rows].shape[0]
            pad = torch.zeros(((1 << (n - 1).bit_length()) - n,), dtype=torch.long)  # row 0 again, up to 2^k rows

            def chunk(t: torch.Tensor) -> torch.Tensor:
                return torch.cat([t[rows], t[rows][pad]]).to(self.device)

            p = chunk(psi)
            eps = None if noise is None else chunk(noise).float() * p.view(-1, 1).float()
            style = None if cond is None else self.net.style(chunk(cond).float(), eps)
            x4 = self.net.embed(chunk(z), style=style)
            p = p.to(x4.dtype)
            if bool((p != 1).any()):
                x4 = truncate(x4, self.x4_mean if mean is None else chunk(mean).to(x4.dtype), p)
            out.append(frames_to_uint8(self.net.synthesize(x4, self.level, self.alpha, style)[:n]))
        return np.concatenate(out)

    def slider_offset(self, values: torch.Tensor) -> torch.Tensor:
        """Slider values [K] -> latent offset [L] along the top K SeFa directions."""
        return values @ self.directions[:self.sliders]

    def condition_mean(self, row: torch.Tensor) -> torch.Tensor:
        """The truncation centre under one condition row [cond_size] -> [1, C, 4, 4] (truncating toward what was
        asked for, not toward the average of every class or caption)."""
        return mean_embedding(self.G, CONDITION_MEAN_SAMPLES, cond=row.view(1, -1)).to(self.device)

    def info(self) -> dict:
        """The model's side of what the page is told on connect (Engine.info adds the conditioning and limits)."""
        G = self.G
        return {
            "resolution": G.resolution, "output_resolution": self.size, "lod": G.lod,
            "kimg": float(getattr(G, "meta", {}).get("kimg", 0.0)), "parameters": count_parameters(G),
            "latent_size": G.latent_size, "num_classes": G.num_classes, "device": str(self.device),
            "source": str(getattr(G, "meta", {}).get("source", "")), "sliders": self.sliders,
            "preference_dims": int(self.pref_basis.shape[0]),
            "sefa_eigenvalues": [round(float(v), 4) for v in self.eigenvalues[:self.sliders]],
            "startup_ms": {"sefa": round(self.sefa_ms, 1), "mean_embedding": round(self.mean_ms, 1)},
        }
