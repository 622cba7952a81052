"""progan: Progressive Growing of GANs (Karras et al., ICLR 2018) in plain PyTorch."""

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. On a busy 2-core machine spinning made training
# 10-40x slower (benchmarks/README.md); on an idle one passive waiting costs a few ms per small step. A user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
