"""argparse value types shared by the command lines (video run, perface): one wording for errors."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def open_unit_interval(text: str) -> float:
    """A probability or a share strictly between 0 and 1."""
    v = float(text)
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return v
