"""`python run_pipeline.py DIR_OR_MANIFEST -o OUTDIR`: the fleet form of the main command.

Exit status: 0 when every video is complete (or was already), 1 when any video failed (each
named in the fleet report with its reason), 2 when the fleet itself is bad input (no videos,
unwritable output folder), 128 + the signal on an interrupt (Ctrl-C 130, SIGTERM 143, SIGHUP 129).
"""

from __future__ import annotations

import os
import sys

from pipeline.cli.args import collect, interrupted_status, stop_on_signals
from pipeline.core.errors import AnonswapError, OutputError, fail
from pipeline.fleet.jobs import discover, prepare_outdir
from pipeline.fleet.runner import FleetOptions, run_fleet
from pipeline.io.paths import check_outputs, same_file
from pipeline.io.video_writer import FORMATS
from pipeline.run.config import RunConfig, input_files

DEFAULT_REPORT = "fleet_report.json"


def fleet_main(args, config: RunConfig, log) -> int:
    # --person-attributes names persons by a video's own ids
    unsupported = [flag for flag, on in (("--boxes", args.boxes), ("--audit", args.audit is not None),
                                         ("--person-attributes", config.person_attributes)) if on]
    if unsupported:
        print(f"error: {', '.join(unsupported)} work on one video at a time, not on a fleet", file=sys.stderr)
        return 2
    stop_on_signals()  # SIGTERM and SIGHUP stop the workers and write the fleet report, as Ctrl-C does
    outdir, created = None, False
    try:
        if os.path.splitext(args.output)[1].lower() in FORMATS:
            kind = "a directory" if os.path.isdir(args.input) else "a manifest"
            raise OutputError(f"input is {kind} of videos (a fleet), so the output must be a folder, not the video file {args.output}")
        if os.path.isdir(args.input) and os.path.isdir(args.output) and same_file(args.output, args.input):
            raise OutputError(f"the fleet's output folder is its input folder: outputs and reports would land among the inputs; "
                              f"name another folder: {args.output}")
        outdir, created = prepare_outdir(args.output)
        jobs = discover(args.input, outdir)
        report_path = args.report or os.path.join(outdir, DEFAULT_REPORT)
        # The fleet report against every input video, the manifest, the model files and
        # every video's output and report (a finished output is somebody's result too). The
        # videos as discovered, not the input folder: an output folder inside it holds the
        # last run's results, which a rerun replaces.
        manifest = None if os.path.isdir(args.input) else args.input
        check_outputs([manifest, *(j.input for j in jobs), *input_files(config)], {"--report": report_path},
                      written=[p for j in jobs for p in (j.output, j.report)])
        opts = collect(args, "fleet", FleetOptions, progress=not args.quiet)
        result = run_fleet(jobs, config, opts, source=args.input, outdir=outdir, report_path=report_path, log=log)
    except AnonswapError as e:
        if created and not os.listdir(outdir):
            os.rmdir(outdir)
        return fail(e)
    except KeyboardInterrupt as e:
        print("error: interrupted; finished videos are kept, the rest were not written (rerun to resume)", file=sys.stderr)
        return interrupted_status(e)
    f = result["fleet"]
    never_swapped = False
    for v in result["videos"]:
        if v.get("swap_failure"):  # even under -q, as for one video
            print(f"{v['input']}: {v['swap_failure']}", file=sys.stderr)
            never_swapped |= bool(v.get("never_swapped"))
    log(f"fleet: {f['complete']} complete, {f['skipped']} skipped, {f['failed']} failed of {f['videos']} videos; "
        f"{f['frames']} frames, {f['faces']} faces" + (f", {f['fps']} fps" if f["fps"] is not None else "") + f"; report {report_path}")
    return 1 if f["failed"] or never_swapped else 0
