"""`python run_pipeline.py DIR_OR_MANIFEST -o OUTDIR`: the fleet form of the main command.

Exit status: 0 when every video is complete (or was already), 1 when any video failed (each
named in the fleet report with its reason), 2 when the fleet itself is bad input (no videos,
unwritable output folder), 130 on interrupt.
"""

from __future__ import annotations

import os
import signal
import sys

from pipeline.core.errors import AnonswapError, OutputError, fail
from pipeline.run.config import RunConfig
from pipeline.io.video_writer import FORMATS
from pipeline.fleet.jobs import discover, prepare_outdir
from pipeline.fleet.runner import FleetOptions, run_fleet

DEFAULT_REPORT = "fleet_report.json"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def fleet_main(args, config: RunConfig, log) -> int:
    # --person-attributes names persons by a video's own ids
    unsupported = [flag for flag, on in (("--boxes", args.boxes), ("--audit", args.audit is not None),
                                         ("--person-attributes", args.person_attributes)) if on]
    if unsupported:
        print(f"error: {', '.join(unsupported)} work on one video at a time, not on a fleet", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stops the workers and writes the fleet report
    outdir, created = None, False
    try:
        if os.path.splitext(args.output)[1].lower() in FORMATS:
            kind = "a directory" if os.path.isdir(args.input) else "a manifest"
            raise OutputError(f"input is {kind} of videos (a fleet), so the output must be a folder, not the video file {args.output}")
        outdir, created = prepare_outdir(args.output)
        jobs = discover(args.input, outdir)
        report_path = args.report or os.path.join(outdir, DEFAULT_REPORT)
        if os.path.isdir(report_path):
            raise OutputError(f"fleet report path is a directory: {report_path}")
        opts = FleetOptions(workers=args.workers, worker_cpus=args.worker_cpus, videos_per_worker=args.videos_per_worker,
                            ray_address=args.ray_address,
                            retries=args.retries, force=args.force, progress=not args.quiet)
        result = run_fleet(jobs, config, opts, source=args.input, outdir=outdir, report_path=report_path, log=log)
    except AnonswapError as e:
        if created and not os.listdir(outdir):
            os.rmdir(outdir)
        return fail(e)
    except KeyboardInterrupt:
        print("error: interrupted; finished videos are kept, the rest were not written (rerun to resume)", file=sys.stderr)
        return 130
    f = result["fleet"]
    log(f"fleet: {f['complete']} complete, {f['skipped']} skipped, {f['failed']} failed of {f['videos']} videos; "
        f"{f['frames']} frames, {f['faces']} faces, {f['fps']} fps; report {report_path}")
    return 1 if f["failed"] else 0
