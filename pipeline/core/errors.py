"""Errors the CLI turns into one line and exit status 2.

They subclass the matching builtin (PyAV's habit), so callers that already catch
`FileNotFoundError` or `ValueError` keep working.
"""


class AnonswapError(Exception):
    """Bad input or output the user can fix; the CLI prints it on one line, exit status 2."""

    exit_code = 2


class InputNotFoundError(AnonswapError, FileNotFoundError):
    pass


class InvalidInputError(AnonswapError, ValueError):
    """The input exists but is not a decodable video (not media, no video stream, truncated)."""


class OutputError(AnonswapError, OSError):
    """The output cannot be written where asked (folder missing, read-only, same as input)."""


class StageError(RuntimeError):
    """A pipeline stage failed; carries the stage name so the message says where."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage} stage failed: {type(error).__name__}: {error}")
        self.stage = stage
        self.error = error


def reason(e: BaseException) -> str:
    """An OS/FFmpeg error's own words (strerror) when it has them, else its message or type."""
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def fail(e: AnonswapError) -> int:
    """What every CLI does with a user error: one line on stderr (a message with newlines,
    e.g. FFmpeg's, is folded so log scrapers see one record), then its exit status."""
    import sys

    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return e.exit_code
