"""Which runtime runs RetinaFace fastest on this CPU, exactly: ONNX Runtime (the model table's) vs OpenVINO.

    pip install openvino            # not a dependency of anonswap; this script only
    python benchmarks/detector_runtime.py [--reps N]

The same ONNX file (the model table's `retinaface-mnet025`), the input sizes the recall
passes of `--recall fast` feed it on a 360p and a 1080p frame (plain, padded, dark), in
batches of 1 (live runs) and of the run's batch size (file runs), on random pixels. OpenVINO
is compiled per static shape (what a run would cache), with 2 threads and the latency hint,
once in f32 and once at its default precision (bf16 where the CPU reports BF16 among
OpenVINO's capabilities, else that is f32 again). ms per frame, best of 3 rounds of `--reps`
calls; diff: the largest absolute difference of any output from ONNX Runtime's.
Why: ../shared/FACTS.md measured OpenVINO f32 35% faster (bf16 3x) on a CPU with BF16;
a runtime enters the model table only where it wins on the machine that runs it.
Writes benchmarks/results/detector_runtime.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time

import numpy as np

from common import machine, write

from engines import get_model
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.registry import local_file
from pipeline.detect.recall import SETTINGS, MultiPassDetector
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.run.config import RunConfig


def shapes() -> list[tuple[str, tuple[int, int]]]:
    det = MultiPassDetector([RetinaFaceDetector()], SETTINGS["fast"])
    rf = det.detectors[0]
    out = []
    for h, w in ((360, 640), (1080, 1920)):
        plain = rf.working_size(h, w, det.long_side(h, w))[:2]
        plan = det._pad_plan(rf, h, w)
        dark = rf.working_size(h, w, det._dark_looks(rf, h, w)[0][1])[:2]
        out += [(f"{h}p plain", plain), (f"{h}p padded", (plan.h + 2 * plan.pad, plan.w + 2 * plan.pad)), (f"{h}p dark", dark)]
    return out


def best_ms(fn, x, reps: int) -> tuple[float, dict]:
    out = fn(x)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            fn(x)
        best = min(best, (time.perf_counter() - t) * 1000 / reps / x.shape[0])
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args(argv)
    try:
        import openvino as ov
    except ImportError:
        print("skipped: needs the openvino package (pip install openvino)")
        return 0
    entry = get_model("retinaface-mnet025")
    weights = local_file(entry, entry.files[0])
    onnx = weights if isinstance(weights, bytes) else open(weights, "rb").read()
    path = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False)
    path.write(onnx)
    path.close()
    name = entry.settings["input"]
    ort = OnnxRuntimeEngine(onnx)
    core = ov.Core()
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    rng = np.random.default_rng(0)
    rows = []
    for label, (h, w) in shapes():
        for batch in (1, RunConfig().batch_size):
            x = (rng.random((batch, 3, h, w), np.float32) * 255 - 117).astype(np.float32)
            ms, ref = best_ms(lambda a: ort({name: a}), x, args.reps)
            row = {"input": label, "size": f"{w}x{h}", "batch": batch, "onnxruntime_ms": round(ms, 2)}
            for precision in ("f32", "default"):
                model = core.read_model(path.name)
                model.reshape({name: [batch, 3, h, w]})
                config = {"INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY"}
                if precision == "f32":
                    config["INFERENCE_PRECISION_HINT"] = "f32"
                compiled = core.compile_model(model, "CPU", config)
                request = compiled.create_infer_request()

                def run(a, compiled=compiled, request=request):
                    r = request.infer({name: a})
                    return {o.get_any_name(): r[o] for o in compiled.outputs}

                ms, out = best_ms(run, x, args.reps)
                row[f"openvino_{precision}_ms"] = round(ms, 2)
                row[f"openvino_{precision}_diff"] = float(f"{max(float(np.abs(out[k] - ref[k]).max()) for k in ref):.2g}")
            rows.append(row)
            print(row, flush=True)
    os.unlink(path.name)
    data = {"command": "python benchmarks/detector_runtime.py", "date": datetime.date.today().isoformat(), "machine": machine(),
            "openvino": ov.__version__ if hasattr(ov, "__version__") else ov.get_version(), "cpu_capabilities": capabilities, "rows": rows}
    write("detector_runtime", data, markdown(data))
    return 0


def markdown(data: dict) -> str:
    md = ["# RetinaFace mnet0.25: ONNX Runtime vs OpenVINO on this CPU", "", f"Command: `{data['command']}`  ",
          f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores; {data['date']}; OpenVINO {data['openvino']}, "
          f"its CPU capabilities here: {', '.join(data['cpu_capabilities'])}", "",
          "ms per frame, best of 3 rounds; diff: largest absolute output difference from ONNX Runtime.", "",
          "| input | size | batch | ONNX Runtime | OpenVINO f32 (diff) | OpenVINO default precision (diff) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        md.append(f"| {r['input']} | {r['size']} | {r['batch']} | {r['onnxruntime_ms']} | {r['openvino_f32_ms']} ({r['openvino_f32_diff']}) "
                  f"| {r['openvino_default_ms']} ({r['openvino_default_diff']}) |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
