"""progan: Progressive Growing of GANs (Karras et al., ICLR 2018) in plain PyTorch."""

__version__ = "0.1.0"
