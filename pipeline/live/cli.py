"""`python run_pipeline.py rtsp://… -o OUT`: the live form of the main command.

Exit status: 0 when the run ended as asked (SIGINT/SIGTERM, --max-frames), 1 when the source
stayed gone past --reconnect-timeout (the output up to then is finalized and kept, so a
supervisor sees the failure and restarts), 2 for bad input or output (nothing written),
130 on a second interrupt (the open file is discarded).
"""

from __future__ import annotations

import signal
import sys

from pipeline.cli.args import collect
from pipeline.core.errors import AnonswapError, fail
from pipeline.run.config import RunConfig
from pipeline.io.report import swap_failures
from pipeline.live.run import LiveOptions, anonymize_live
from pipeline.live.source import StopEvent


def live_main(args, config: RunConfig, log) -> int:
    if args.audit is not None:
        print("error: --audit needs the original as a file; record the stream first, or audit a segment", file=sys.stderr)
        return 2
    try:
        opts = collect(args, "live", LiveOptions)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stop = StopEvent()

    def on_signal(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt  # asked twice: stop now, without finalizing
        stop.request(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: a closed terminal stops the run as gracefully
        signal.signal(sig, on_signal)
    try:
        report = anonymize_live(args.input, args.output, config, opts, report_path=args.report, boxes_path=args.boxes,
                                stop=stop, progress=not args.quiet, log=log)
    except AnonswapError as e:
        return fail(e)
    except KeyboardInterrupt:
        print("error: interrupted twice; the open output file was discarded", file=sys.stderr)
        return 130
    lv = report["live"]
    lat = lv["latency_ms"]
    outs = [o["path"] for o in lv["outputs"]]
    log(f"wrote {outs[0] if len(outs) == 1 else f'{len(outs)} segments'}: {lv['frames_out']} frames, "
        f"{report['faces']['anonymized']} faces anonymized; latency p50 {lat['p50']} ms, p95 {lat['p95']} ms; "
        f"dropped {lv['dropped']['total']}, reconnects {lv['reconnects']}; stopped by {lv['stopped_by']}")
    line, never_swapped = swap_failures(report)
    if line:
        print(line, file=sys.stderr)  # even under -q
    if lv["stopped_by"] == "source_lost":
        print(f"error: stream lost for more than {opts.reconnect_timeout_s:g} s ({lv['gaps'][-1]['reason']}); "
              f"the output up to then is complete", file=sys.stderr)
        return 1
    return 1 if never_swapped else 0
