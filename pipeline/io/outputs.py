"""A run's video (file, segments or live sink) and its boxes export land together or not at all.

File and live runs both need this: an error or interrupt anywhere between opening the
writers and the end must leave no temp file and nothing under a final name.
"""

from __future__ import annotations


class RunOutputs:
    """`with RunOutputs() as outs:` set `outs.video` / `outs.boxes` as they are opened.

    The caller closes the video itself, inside the block, after its last checks (closing
    renames it into place). Leaving the block by an exception aborts the video and discards
    the boxes; leaving it normally commits the boxes.
    """

    def __init__(self):
        self.video = None
        self.boxes = None

    def __enter__(self) -> RunOutputs:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            if self.boxes is not None:
                self.boxes.commit()
            return False
        if self.video is not None:
            self.video.abort()
        if self.boxes is not None:
            self.boxes.discard()
        return False
