"""One long-lived pipeline per Ray actor: models load once, then video after video.

The worker never raises for a video's own problems: bad input comes back as a result that
says `bad_input` (never retried), anything else as `error`. Only the death of the process
itself (a crash, the OOM killer, a lost node) reaches the driver as a Ray error, and that is
what the driver retries.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback

from engines.base import THREADS_ENV

from pipeline.core.errors import AnonswapError, InputNotFoundError
from pipeline.io.atomic import write_json_atomic
from pipeline.io.report import swap_failures
from pipeline.run.build import ModelCache
from pipeline.run.config import RunConfig
from pipeline.run.file import anonymize_video
from pipeline.fleet.jobs import Job, fingerprint

PROGRESS_EVERY_S = 0.5


class PipelineWorker:
    def __init__(self, config: RunConfig, threads: int, progress=None):
        # Before any model loads: ORT, x264 and torch size their thread pools from it.
        os.environ[THREADS_ENV] = str(threads)
        self.config = config
        self.threads = threads
        self.progress = progress
        self.models = ModelCache()  # shared by the videos this actor runs at once
        self.videos = 0
        self._count = threading.Lock()
        # torch (swap mode) is imported later and sizes its pool from OMP_NUM_THREADS, which
        # Ray sets to the actor's CPUs; importing it here would cost every actor seconds.

    def identity(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "threads": self.threads}

    def process(self, job: Job, digest: str, attempt: int) -> dict:
        started = time.perf_counter()
        notes: list[str] = []
        last = [0.0]

        def on_frame(n: int) -> None:
            now = time.monotonic()
            if self.progress is not None and now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                self.progress.update.remote(job.key, attempt, n)

        row = {"worker": f"{socket.gethostname()}:{os.getpid()}"}
        cached = len(self.models)
        try:
            os.makedirs(os.path.dirname(job.output), exist_ok=True)
            try:
                before = fingerprint(job.input)
            except FileNotFoundError:
                raise InputNotFoundError(f"input not found: {job.input}") from None
            report = anonymize_video(job.input, job.output, self.config, progress=False, log=notes.append,
                                     models=self.models, on_frame=on_frame)
            # The report goes last and only after the output is in place: it is what marks
            # the video done for a rerun, so it must never claim an output that isn't there.
            report["fleet"] = {
                "status": "complete",
                "input_fingerprint": before,
                "settings_digest": digest,
                "output_bytes": os.path.getsize(job.output),
                "attempt": attempt,
                "worker": row["worker"],
                "notes": notes,
            }
            write_json_atomic(job.report, report)
        except AnonswapError as e:
            return {**row, "status": "failed", "kind": "bad_input", "reason": str(e)}
        except Exception as e:  # a bug or an engine failure: named, not retried (it would fail again)
            return {**row, "status": "failed", "kind": "error", "reason": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(limit=8)}
        with self._count:
            self.videos += 1
        faces = report["faces"]
        swap_failure, never_swapped = swap_failures(report)
        return {
            **row,
            "status": "complete",
            "swap_failure": swap_failure,  # said by the driver even under -q
            "never_swapped": never_swapped,
            "frames": report["video"]["frames_out"],
            "faces": faces["anonymized"],
            "swapped": faces["swapped"],
            "blurred_instead": sum(faces["fallback"].values()),
            "mode": report["mode"],
            "wall_s": round(time.perf_counter() - started, 3),
            "fps": report["timing"]["fps"],
            "merged_model_calls": self.models.merged_calls(),  # this actor's, so far: batches that shared a call
            "models_loaded": len(self.models) - cached,  # 0 after a worker's first video: weights load once
        }


class ProgressBoard:
    """Frames written so far per video, pushed by workers without waiting (fire and forget).

    Keyed by attempt: the driver counts only the attempt in flight, so a crashed attempt's
    frames stop counting when its retry starts, and a finished video counts from its result.
    """

    def __init__(self):
        self.frames: dict[str, tuple[int, int]] = {}

    def update(self, key: str, attempt: int, frames: int) -> None:
        current = self.frames.get(key)
        if current is None or attempt >= current[0]:
            self.frames[key] = (attempt, frames)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return dict(self.frames)
