"""The FID Inception-v3 network (pytorch-fid's port of TF's 2015-12-05 graph), without torchvision.

Module and parameter names follow torchvision's Inception3 with pytorch-fid's FID blocks swapped in
(FIDInceptionA/C/E_1/E_2), so pytorch-fid's weight file pt_inception-2015-12-05-6726825d.pth loads
strictly. Differences from torchvision's Inception that matter for comparable FIDs:
  * average pools inside Mixed_5*, Mixed_6b-e and Mixed_7b exclude the zero padding (TF behaviour);
  * Mixed_7c's pool branch uses max pooling;
  * BatchNorm eps 1e-3, the classifier has 1008 classes (unused here: features are the 2048-d
    average pool output, "pool3").

Preprocessing (same as pytorch-fid): uint8 RGB -> [0, 1] -> bilinear resize to 299x299
(align_corners=False, no antialiasing) -> [-1, 1].

Nothing is downloaded. The weights come from a local file given explicitly or through the
PROGAN_INCEPTION_WEIGHTS environment variable; .pth (loaded with weights_only=True) or a
.safetensors conversion of the same state dict.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from progan.model_io import state_dict_mismatch

from progan.fileio import sha256_file

from .common import check_uint8_images, iter_batches

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILENAME}"
WEIGHTS_ENV = "PROGAN_INCEPTION_WEIGHTS"
INPUT_SIZE = 299


class MissingInceptionWeights(FileNotFoundError):
    """The FID Inception weight file was not given or does not exist."""


class BadInceptionWeights(ValueError):
    """The given file is not a usable FID Inception state dict."""


def _missing_message(reason: str) -> str:
    return (
        f"{reason}\n"
        f"FID and KID need the Inception-v3 weights that pytorch-fid uses: {WEIGHTS_FILENAME}\n"
        f"It is published in the pytorch-fid GitHub releases:\n  {WEIGHTS_URL}\n"
        f"progan never downloads anything. Download the file yourself, put it anywhere (e.g. "
        f"~/.cache/progan/{WEIGHTS_FILENAME}), and pass its path with --inception-weights PATH "
        f"(inception_weights=PATH in Python) or set the environment variable {WEIGHTS_ENV}=PATH. "
        f"A .safetensors conversion of the same state dict works too."
    )


# ----------------------------------------------------------------------------------------------
# Network


class BasicConv2d(nn.Module):
    """conv (no bias) -> frozen BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, **conv_kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        # Inference-mode BatchNorm (even after .train()), folded into the convolution: one pass over
        # the activations instead of three, which is most of the CPU time otherwise.
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.conv.weight * scale.view(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        return F.relu(F.conv2d(x, weight, bias, self.conv.stride, self.conv.padding), inplace=True)


def _avg_pool_3x3(x):
    # TF's average pool ignores the zero padding; torchvision's default counts it.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """pool="avg" is pytorch-fid's FIDInceptionE_1 (Mixed_7b), pool="max" its FIDInceptionE_2 (Mixed_7c)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_3x3(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used for FID. forward: float [B, 3, 299, 299] in [-1, 1] -> [B, 2048]."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)   # unused; present so the published state dict loads strictly

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, 299, 299] in [-1, 1], exactly as pytorch-fid prepares images."""
    x = images.float() / 255.0
    if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


# ----------------------------------------------------------------------------------------------
# Weights


def resolve_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The explicit path, else $PROGAN_INCEPTION_WEIGHTS; raises MissingInceptionWeights with instructions."""
    if path is None:
        path = os.environ.get(WEIGHTS_ENV) or None
        if path is None:
            raise MissingInceptionWeights(_missing_message(
                f"No Inception weights given (no inception_weights / --inception-weights and ${WEIGHTS_ENV} is not set)."
            ))
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInceptionWeights(_missing_message(f"Inception weight file not found: {path}"))
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a .pth (torch.load with weights_only=True) or .safetensors file, as a plain dict."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decoding failure means "not a usable weight file"
        raise BadInceptionWeights(f"cannot read Inception weights from {path}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise BadInceptionWeights(f"{path} is not a state dict of tensors (expected {WEIGHTS_FILENAME} or its safetensors conversion)")
    # A plain dict (no torch _metadata): BatchNorm then accepts files with or without num_batches_tracked.
    return dict(state)


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Clear error listing missing/unexpected/mis-shaped entries before load_state_dict's own."""
    problem = state_dict_mismatch(model, state, ignore_suffix="num_batches_tracked")
    if problem:
        raise BadInceptionWeights(
            f"{source} does not match the FID Inception network: {problem}. "
            f"Expected pytorch-fid's {WEIGHTS_FILENAME} ({WEIGHTS_URL}) or a safetensors conversion of it."
        )


def load_inception(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> tuple[FIDInceptionV3, str]:
    """Build the network from a local weight file -> (model in eval mode, sha256 of the file)."""
    path = resolve_weights_path(weights)
    state = read_state_dict(path)
    # Build on the meta device: no random init (which would also advance the global RNG), and
    # assign=True makes the loaded tensors the parameters.
    with torch.device("meta"):
        model = FIDInceptionV3()
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True, assign=True)
    model.requires_grad_(False)
    # channels_last: about 2x faster convolutions on CPU (oneDNN), no change in results beyond rounding.
    return model.to(device=device, memory_format=torch.channels_last).eval(), sha256_file(path)


@torch.no_grad()
def inception_features(model: FIDInceptionV3, images, *, batch_size: int = 64, device: str | torch.device = "cpu") -> torch.Tensor:
    """2048-d pool features (float64, on CPU) of uint8 images (tensor or iterable of batches)."""
    feats = []
    for batch in iter_batches(images, batch_size):
        check_uint8_images(batch)
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)  # grey -> RGB, as the paper's code does
        x = preprocess(batch.to(device)).contiguous(memory_format=torch.channels_last)
        feats.append(model(x).double().cpu())
    if not feats:
        raise ValueError("Inception features: got no images")
    return torch.cat(feats)
