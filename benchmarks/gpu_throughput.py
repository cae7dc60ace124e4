"""The GPU engine, measured in one run: generator, detector, end to end, and a naive baseline.

    python benchmarks/gpu_throughput.py [--device cuda] [--out DIR] [--quick]

1. Generator (SimSwap 224, random weights: the same FLOPs as the official ones) faces/s by
   batch 1…256 and precision fp32/fp16/bf16, eager and replayed as CUDA graphs.
2. Detector (RetinaFace, our torch model) frames/s at 1080p (working size 1280×720).
3. End to end on a synthetic 1080p clip with 4 faces per frame, blur and swap, on the
   device data path: compute-bound (the encoder replaced by a sink that only counts) and
   encode-bound (libx264 on the CPU: H100/H200 have no NVENC). Swap gives every track a
   fixed fake identity: the identity stage (dlib on the CPU) is left out, as it is not part
   of the GPU engine.
4. The naive baseline in the same run: frame by frame, one face at a time, crops and
   paste-back on the host, batch 1, fp32, no streams, no graphs (SimSwap's official video
   path: one model call per face per frame), and the ratio.
5. Peak GPU memory and each stage's busy time.

Fair by construction: both end-to-end paths get a warm-up pass (graph captures, cuDNN
autotuning, lazy caches) before the timed one; the device path runs the product's own
batching, buckets and graphs for the detector and the generator; every time is the median
of its repeats. Float32 rows say whether cuDNN used TF32 (torch's default on a GPU).

Writes gpu_throughput.json and gpu_throughput.md to --out (default benchmarks/results) after
every section, so a crash or a timeout keeps what was measured; a failed section is recorded
with its error, the others still run, and the exit status is 1. It also runs with --device
cpu (use --quick): a dry run of every code path here, graphs included where the CUDA graph
stand-in is on (ANONSWAP_GRAPH_STANDIN=1, as benchmarks/gpu/rehearse.sh sets it), with CPU
numbers that say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from common import RESULTS, machine

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, *, repeat: int, warmup: int = 2) -> float:
    """Median seconds of `fn()` over `repeat` calls, after `warmup` calls (allocations,
    autotuning, graph capture)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def graph_modes(device: str) -> tuple[bool, ...]:
    """Eager, and captured where this device captures (CUDA; the CPU stand-in when it is on)."""
    from pipeline.device.select import graphs_on, resolve

    return (False, True) if graphs_on(resolve(device), True) else (False,)


def precision_label(prec: str, device: str) -> str:
    """fp32 on a GPU is TF32 in cuDNN's convolutions unless turned off: the table says which."""
    import torch

    from engines.torch_engine import tf32

    return "fp32 (TF32)" if prec == "fp32" and torch.device(device).type == "cuda" and tf32()[0] else prec


def generator_table(rows: list, device: str, batches, precisions, repeat: int, ckpt: str) -> None:
    import torch

    from engines import load
    from engines.placement import Placement
    from pipeline.device.buckets import BucketedEngine

    for prec in precisions:
        placement = Placement(device, PRECISIONS[prec], channels_last=torch.device(device).type == "cuda")
        base = load("simswap-224", "torch", path=ckpt, placement=placement)
        for graphs in graph_modes(device):
            engine = BucketedEngine(base, graphs=graphs)
            for b in batches:
                image = torch.rand(b, 3, 224, 224, device=device)
                latent = torch.nn.functional.normalize(torch.randn(b, 512, device=device), dim=1)
                row = {"precision": precision_label(prec, device), "cuda_graphs": graphs, "batch": b}
                try:
                    s = timed(lambda: engine.run_tensors({"image": image, "latent": latent}), device, repeat=repeat)
                except torch.cuda.OutOfMemoryError:  # noqa: PERF203 - a batch that does not fit is a result too
                    rows.append({**row, "faces_per_s": None, "note": "out of memory"})
                    torch.cuda.empty_cache()
                    continue
                rows.append({**row, "faces_per_s": round(b / s, 1), "ms": round(s * 1000, 3)})
                print(f"generator {row['precision']} graphs={graphs} batch {b}: {b / s:,.0f} faces/s", flush=True)


def detector_table(rows: list, device: str, batches, repeat: int) -> None:
    import torch

    from engines import load
    from engines.placement import Placement
    from pipeline.detect.retinaface import RetinaFaceDetector
    from pipeline.device.buckets import BucketedEngine

    cuda = torch.device(device).type == "cuda"
    for graphs in graph_modes(device):
        placement = Placement(device, "float16" if cuda else "float32", channels_last=cuda)
        engine = BucketedEngine(load("retinaface-mnet025", "torch", placement=placement), graphs=graphs)
        det = RetinaFaceDetector(engine, detect_size=1280)
        for b in batches:
            frames = torch.randint(0, 255, (b, 1080, 1920, 3), dtype=torch.uint8, device=device)
            s = timed(lambda: det.detect_tensor(frames), device, repeat=repeat)
            rows.append({"cuda_graphs": graphs, "batch": b, "frames_per_s": round(b / s, 1)})
            print(f"detector 1080p graphs={graphs} batch {b}: {b / s:,.0f} frames/s", flush=True)


def make_clip(path: str, frames: int, width: int, height: int) -> None:
    """Four faces moving across a 1080p frame (scikit-image's astronaut, mirrored for two)."""
    from pipeline.synthetic import Actor, make_scene_video

    k = width / 1920  # positions are laid out for 1080p

    def mover(x0, y0, dx, dy, h):
        return lambda i: (k * (x0 + dx * i), k * (y0 + dy * i), k * h)

    actors = [Actor(mover(100, 150, 4, 1, 420)), Actor(mover(1400, 120, -4, 2, 380), mirror=True),
              Actor(mover(500, 560, 3, -1, 360)), Actor(mover(1100, 600, -3, -1, 400), mirror=True)]
    make_scene_video(path, actors, frames=frames, width=width, height=height)


class FixedSource:
    """Stands in for the identity stage: every confirmed track gets the same fake identity."""

    def __init__(self):
        z = np.random.default_rng(0).standard_normal(512).astype(np.float32)
        self.latent = z / np.linalg.norm(z)

    def __call__(self, items):
        for tf in items:
            for face in tf.faces:
                if face.track_id is not None:
                    face.source_id, face.source_latent = "fixed", self.latent
            yield tf


class CountingSink:
    def __init__(self):
        self.frames_written = 0

    def write(self, frame) -> None:
        self.frames_written += 1


class EndToEnd:
    """One configuration of the whole chain, built once: `run()` makes one pass over the clip
    (the first pass of a configuration is its warm-up). The device path is the product's:
    build_stages' detector (bucketed, graphs on) and the generator bucketed as a swap run
    buckets it; the naive one is frame by frame, one face at a time, fp32, no graphs."""

    def __init__(self, device: str, mode: str, ckpt: str, *, batch: int, naive: bool = False):
        from engines import load
        from pipeline.anonymize.cover import FaceCover
        from pipeline.anonymize.face_ops import HostFaceOps
        from pipeline.anonymize.swap import FaceSwapper
        from pipeline.device.buckets import BucketedEngine
        from pipeline.run.build import build_stages
        from pipeline.run.config import RunConfig

        self.mode, self.naive = mode, naive
        self.step = 1 if naive else batch
        cfg = RunConfig(mode="blur", device=device, batch_size=self.step, detect_size=1280, cuda_graphs=not naive,
                        precision="fp32" if naive else "auto")
        self.st = st = build_stages("blur", cfg)
        self.precision = precision_label({"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[st.engines.dtype], device)
        self.detect = st.detect
        ops = st.anonymizer.ops
        if naive:
            self.detect = NaiveDetect(st.detector, st.engines.device.torch_device)
            ops = HostFaceOps()
        self.anonymizer = FaceCover("blur", ops=ops) if naive else st.anonymizer
        if mode == "swap":
            engine = load("simswap-224", "torch", path=ckpt, placement=st.engines.placement)
            engine = OneFaceAtATime(engine) if naive else BucketedEngine(engine, graphs=st.engines.cuda_graphs)
            self.anonymizer = FaceSwapper(engine, fallback=FaceCover("blur", ops=ops), ops=ops)

    def run(self, clip: str, *, encode: bool, max_frames: int | None = None) -> dict:
        import torch

        from pipeline.core.stages import StagePipeline, batched
        from pipeline.io.video_reader import VideoReader, hw_decoder
        from pipeline.io.video_writer import VideoWriter

        st, step = self.st, self.step
        reader = VideoReader(clip, max_frames=max_frames, hwaccel=hw_decoder(st.engines.device)).open()
        with tempfile.TemporaryDirectory() as tmp:
            sink = VideoWriter(str(Path(tmp) / "o.mp4"), reader.info, preset="veryfast") if encode else CountingSink()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

            def detect(frames):
                for b in batched(frames, step):
                    yield from zip(b, self.detect(b))

            def anonymize(items):
                for b in batched(items, step):
                    self.anonymizer.apply_batch(b)
                    yield from b

            stages = st.chain(("decode", lambda _: reader.frames()), detect, anonymize)
            stages.insert(3, ("identity", FixedSource()))
            t = time.perf_counter()
            faces = 0
            with StagePipeline(stages, maxsize=8) as pipe:
                for tf in pipe:
                    sink.write(tf.frame)
                    faces += len(tf.faces)
            wall = time.perf_counter() - t
            busy = pipe.busy_ms()
            if encode:
                sink.finish()
        reader.close()
        n = sink.frames_written
        return {"mode": self.mode, "path": "naive" if self.naive else "device", "precision": self.precision,
                "batch": step, "encode": encode, "frames": n, "faces": faces,
                "fps": round(n / wall, 1), "wall_s": round(wall, 2), "busy_ms": busy,
                "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
                "hwaccel": reader.hwaccel, "hwaccel_fallback": reader.hwaccel_fallback}


def end_to_end(rows: list, clip: str, device: str, ckpt: str, *, batch: int, warmup_frames: int) -> None:
    for mode in ("blur", "swap"):
        for naive in (False, True):
            e2e = EndToEnd(device, mode, ckpt, batch=batch, naive=naive)
            e2e.run(clip, encode=False, max_frames=warmup_frames)  # warm-up: captures, autotuning, caches
            for encode in ((False, True) if not naive else (False,)):
                rows.append(e2e.run(clip, encode=encode))
                print(f"end to end {mode} {'naive' if naive else 'device'} encode={encode}: {rows[-1]['fps']} fps", flush=True)


class NaiveDetect:
    """One frame per call, uploaded with a plain copy, detected without graphs."""

    def __init__(self, detector, device: str):
        self.detector, self.device = detector, device

    def __call__(self, frames):
        import torch

        return [self.detector.detect_tensor(torch.from_numpy(f.image[None]).to(self.device))[0] for f in frames]


class OneFaceAtATime:
    """The official video path's generator calls: batch 1, one per face."""

    def __init__(self, engine):
        self.engine, self.inputs, self.outputs = engine, engine.inputs, engine.outputs

    def __call__(self, feeds):
        outs = [self.engine({k: v[i : i + 1] for k, v in feeds.items()})["output"] for i in range(len(feeds["image"]))]
        return {"output": np.concatenate(outs)}

    def run_tensors(self, feeds):
        import torch

        n = len(feeds["image"])
        return {"output": torch.cat([self.engine.run_tensors({k: v[i : i + 1] for k, v in feeds.items()})["output"] for i in range(n)])}


def versions() -> dict:
    """Everything the numbers depend on, read where they were measured."""
    import importlib

    import torch

    out = {}
    for name in ("torch", "numpy", "cv2", "onnxruntime", "av"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as e:  # noqa: BLE001 - a record, not a check
            out[name] = f"not importable: {e}"
    out["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        out["cudnn"] = torch.backends.cudnn.version()
        try:
            import subprocess

            out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            out["driver"] = f"unknown: {e}"
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# GPU engine: {result['gpu'] or 'no GPU (' + result['device'] + ')'}", "",
             f"`{result['command']}` on {m['cpu']} ({m['cores']} cores); "
             + ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items()) + ".", ""]
    if result["device"].startswith("cpu"):
        lines += [f"**CPU dry run: these numbers say nothing about a GPU.** Graph rows: {result['graphs']}.", ""]
    for name, error in result.get("errors", {}).items():
        lines += [f"**Section `{name}` failed:** `{error.strip().splitlines()[-1]}`", ""]
    if result.get("generator"):
        lines += ["## Generator (SimSwap 224), faces/s (median of the repeats)", "",
                  "| precision | CUDA graphs | " + " | ".join(f"b{b}" for b in result["batches"]) + " |",
                  "|---|---|" + "---|" * len(result["batches"])]
        by = {}
        for r in result["generator"]:
            by.setdefault((r["precision"], r["cuda_graphs"]), {})[r["batch"]] = r["faces_per_s"]
        for (p, g), row in by.items():
            lines.append(f"| {p} | {'yes' if g else 'no'} | " + " | ".join(f"{row.get(b) or '–'}" for b in result["batches"]) + " |")
        lines.append("")
    if result.get("detector"):
        lines += ["## Detector (RetinaFace, 1080p → 1280×720), frames/s", "", "| CUDA graphs | batch | frames/s |", "|---|---|---|"]
        lines += [f"| {'yes' if r['cuda_graphs'] else 'no'} | {r['batch']} | {r['frames_per_s']} |" for r in result["detector"]]
        lines.append("")
    if result.get("end_to_end"):
        lines += ["## End to end, 4 faces per frame (after a warm-up pass of each configuration)", "",
                  "| mode | path | precision | batch | encoder | fps | peak GPU MiB | busy ms per stage |", "|---|---|---|---|---|---|---|---|"]
        for r in result["end_to_end"]:
            busy = ", ".join(f"{k} {v:.0f}" for k, v in r["busy_ms"].items())
            lines.append(f"| {r['mode']} | {r['path']} | {r['precision']} | {r['batch']} | {'x264' if r['encode'] else 'none (compute-bound)'} "
                         f"| {r['fps']} | {r['peak_gpu_mib']} | {busy} |")
    for mode, ratio in result.get("speedup_vs_naive", {}).items():
        lines.append(f"\n{mode}: {ratio}× the naive baseline (compute-bound, same run).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--quick", action="store_true", help="small sizes: a dry run of every code path")
    p.add_argument("--frames", type=int, default=240)
    args = p.parse_args(argv)
    import torch

    from engines.simswap import SimSwapGenerator

    quick = args.quick
    batches = (1, 2) if quick else BATCHES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_throughput" if torch.device(args.device).type == "cuda" else "gpu_throughput_cpu_dry_run"
    result = {"command": "python benchmarks/gpu_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "device": args.device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "machine": machine(), "versions": versions(), "batches": list(batches),
              "graphs": {(False,): "off", (False, True): "CUDA graphs" if torch.device(args.device).type == "cuda"
                         else "CPU stand-in for CUDA graphs"}[graph_modes(args.device)],
              "generator": [], "detector": [], "end_to_end": []}

    def save() -> None:
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (out / f"{name}.md").write_text(markdown(result))

    def section(key: str, fn) -> None:
        """Runs one part; its rows land in result[key] as they come, and the files are saved
        after it, whether it finished or failed."""
        try:
            fn(result[key])
        except Exception as e:  # noqa: BLE001 - recorded, and the next section still runs
            traceback.print_exc()
            result.setdefault("errors", {})[key] = "".join(traceback.format_exception(e))[-3000:]
        save()

    save()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(Path(tmp) / "g224.pth")
        torch.manual_seed(0)
        torch.save(SimSwapGenerator("224").state_dict(), ckpt)
        section("generator", lambda rows: generator_table(rows, args.device, batches, ("fp32",) if quick else tuple(PRECISIONS),
                                                          2 if quick else 5, ckpt))
        section("detector", lambda rows: detector_table(rows, args.device, (1, 2) if quick else (1, 8, 32), 2 if quick else 5))
        clip = str(Path(tmp) / "clip.mp4")
        make_clip(clip, 4 if quick else args.frames, *((640, 360) if quick else (1920, 1080)))
        batch = 2 if quick else 32
        section("end_to_end", lambda rows: end_to_end(rows, clip, args.device, ckpt, batch=batch, warmup_frames=2 * batch))
    fps = {(r["mode"], r["path"], r["encode"]): r["fps"] for r in result["end_to_end"]}
    result["speedup_vs_naive"] = {m: round(fps[(m, "device", False)] / fps[(m, "naive", False)], 1)
                                  for m in ("blur", "swap") if (m, "device", False) in fps and (m, "naive", False) in fps}
    save()
    print(markdown(result))
    if result.get("errors"):
        print(f"FAILED sections: {', '.join(result['errors'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
