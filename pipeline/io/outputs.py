"""All of a run's outputs land together, or none does.

The video (file, segments or live sink), the boxes export and the report are written under
temp names; everything that can fail (the encoder's flush, the container's trailer, the last
boxes, the report itself: a full disk shows at any of them) happens before the first rename,
and the renames come last. An error or interrupt anywhere leaves no temp file and nothing
under a final name: never a video without its report.
"""

from __future__ import annotations

from pipeline.io.atomic import AtomicFile, write_json


class RunOutputs:
    """`with RunOutputs(report_path) as outs:` set `outs.video` / `outs.boxes` as they are
    opened, then `outs.finish()` once the last frame is written and `outs.commit(report)`.

    The report's temp file is made on entry, so an unwritable report folder fails before any
    frame is processed. Leaving the block without `commit` (an exception, an interrupt)
    aborts the video and discards the boxes and the report.
    """

    def __init__(self, report_path: str | None = None):
        self.video = None
        self.boxes = None
        self._report_path = report_path
        self.report: AtomicFile | None = None
        self._committed = False

    def __enter__(self) -> RunOutputs:
        if self._report_path:
            self.report = AtomicFile(self._report_path)
        return self

    def finish(self) -> None:
        """Everything but the renames: flush and close the video and the boxes."""
        if self.video is not None:
            self.video.finish()
        if self.boxes is not None:
            self.boxes.finish()

    def commit(self, report: dict | None = None) -> None:
        if self.report is not None:
            write_json(self.report.path, report, final_path=self.report.final_path)
        if self.video is not None:
            self.video.commit()
        if self.boxes is not None:
            self.boxes.commit()
        if self.report is not None:
            self.report.commit()
        self._committed = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self._committed:
            if self.video is not None:
                self.video.abort()
            if self.boxes is not None:
                self.boxes.discard()
            if self.report is not None:
                self.report.discard()
        return False
