"""The command line: `python run_pipeline.py …` (or the `anonswap` script)."""

from pipeline.cli.main import main

__all__ = ["main"]
