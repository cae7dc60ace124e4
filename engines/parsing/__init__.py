"""The face parser SimSwap's `--use_mask` runs (BiSeNet, our implementation, official layout)."""

from .bisenet import N_CLASSES, BiSeNet, load_parser

__all__ = ["N_CLASSES", "BiSeNet", "load_parser"]
