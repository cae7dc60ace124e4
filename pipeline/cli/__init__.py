"""The command line: `python run_pipeline.py …` (or the `anonswap` script)."""

from __future__ import annotations

import sys

from pipeline.cli.args import interrupted_status, stop_on_signals


def main(argv: list[str] | None = None) -> int:
    """Signals are taken before the heavy imports (OpenCV, ONNX Runtime, dlib: seconds), so
    Ctrl-C while a command is still starting is one line too, not an import traceback."""
    stop_on_signals()
    try:
        from pipeline.cli.command import main as command

        return command(argv)
    except KeyboardInterrupt as e:  # each command says what it kept; this is before any began
        print("error: interrupted; nothing written", file=sys.stderr)
        return interrupted_status(e)


__all__ = ["main"]
