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

Writes gpu_throughput.json and gpu_throughput.md to --out (default benchmarks/results).
It also runs with --device cpu (use --quick): a dry run of every code path here, with CPU
numbers that say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
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
    """Best-of-`repeat` seconds of `fn()`, after `warmup` calls (allocations, autotuning, graph capture)."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def generator_table(device: str, batches, precisions, repeat: int, ckpt: str) -> list[dict]:
    import torch

    from engines import load
    from pipeline.device.buckets import BucketedEngine

    rows = []
    for prec in precisions:
        dtype = PRECISIONS[prec]
        base = load("simswap-224", "torch", path=ckpt, device=device, dtype=dtype, channels_last=torch.device(device).type == "cuda")
        for graphs in ((False, True) if torch.device(device).type == "cuda" else (False,)):
            engine = BucketedEngine(base, graphs=graphs)
            for b in batches:
                image = torch.rand(b, 3, 224, 224, device=device)
                latent = torch.nn.functional.normalize(torch.randn(b, 512, device=device), dim=1)
                try:
                    s = timed(lambda: engine.run_tensors({"image": image, "latent": latent}), device, repeat=repeat)
                except torch.cuda.OutOfMemoryError:  # noqa: PERF203 - a batch that does not fit is a result too
                    rows.append({"precision": prec, "cuda_graphs": graphs, "batch": b, "faces_per_s": None, "note": "out of memory"})
                    continue
                rows.append({"precision": prec, "cuda_graphs": graphs, "batch": b, "faces_per_s": round(b / s, 1), "ms": round(s * 1000, 3)})
                print(f"generator {prec} graphs={graphs} batch {b}: {b / s:,.0f} faces/s", flush=True)
    return rows


def detector_table(device: str, batches, repeat: int) -> list[dict]:
    import torch

    from engines import load
    from pipeline.detect.retinaface import FaceDetector
    from pipeline.device.buckets import BucketedEngine

    rows = []
    for graphs in ((False, True) if torch.device(device).type == "cuda" else (False,)):
        engine = BucketedEngine(load("retinaface-mnet025", "torch", device=device, dtype="float16" if "cuda" in device else "float32",
                                     channels_last="cuda" in device), graphs=graphs)
        det = FaceDetector(engine, detect_size=1280)
        for b in batches:
            frames = torch.randint(0, 255, (b, 1080, 1920, 3), dtype=torch.uint8, device=device)
            s = timed(lambda: det.detect_tensor(frames), device, repeat=repeat)
            rows.append({"cuda_graphs": graphs, "batch": b, "frames_per_s": round(b / s, 1)})
            print(f"detector 1080p graphs={graphs} batch {b}: {b / s:,.0f} frames/s", flush=True)
    return rows


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


def end_to_end(clip: str, device: str, mode: str, ckpt: str, *, encode: bool, batch: int, naive: bool = False) -> dict:
    """One pass over the clip on the device data path (or the naive one); fps over the whole
    pass, decode to the last frame written."""
    import torch

    from pipeline.anonymize.cover import Anonymizer
    from pipeline.anonymize.swap import FaceSwapper
    from pipeline.core.stages import StagePipeline, batched
    from pipeline.io.video_reader import VideoReader, hw_decoder
    from pipeline.io.video_writer import VideoWriter
    from pipeline.run.build import build_stages
    from pipeline.run.config import RunConfig

    cfg = RunConfig(mode="blur", device=device, batch_size=1 if naive else batch, detect_size=1280, cuda_graphs=not naive,
                    precision="fp32" if naive else "auto")
    st = build_stages("blur", cfg)
    if naive:
        from pipeline.anonymize.face_ops import HostFaceOps

        st.detect = NaiveDetect(st.detector, st.engines.device.torch_device)  # frame by frame, plain copies, no graphs
        ops = HostFaceOps()
    else:
        ops = st.anonymizer.ops
    anonymizer = st.anonymizer
    if mode == "swap":
        from engines import load

        engine = load("simswap-224", "torch", path=ckpt, **st.engines.options("torch"))
        if naive:
            engine = OneFaceAtATime(engine)
        anonymizer = FaceSwapper(engine, fallback=Anonymizer("blur", ops=ops), ops=ops)
    elif naive:
        anonymizer = Anonymizer("blur", ops=ops)
    reader = VideoReader(clip, hwaccel=hw_decoder(st.engines.device)).open()
    with tempfile.TemporaryDirectory() as tmp:
        sink = VideoWriter(str(Path(tmp) / "o.mp4"), reader.info, preset="veryfast") if encode else CountingSink()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        step = 1 if naive else batch

        def detect(frames):
            for b in batched(frames, step):
                yield from zip(b, st.detect(b))

        def anonymize(items):
            for b in batched(items, step):
                anonymizer.apply_batch(b)
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
    return {"mode": mode, "path": "naive" if naive else "device", "encode": encode, "frames": n, "faces": faces,
            "fps": round(n / wall, 1), "wall_s": round(wall, 2), "busy_ms": busy,
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
            "hwaccel": reader.hwaccel}


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


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# GPU engine: {result['gpu'] or 'no GPU (' + result['device'] + ')'}", "",
             f"`{result['command']}` on {m['cpu']} ({m['cores']} cores), torch {result['torch']}.", ""]
    if result["device"].startswith("cpu"):
        lines += ["**CPU dry run: these numbers say nothing about a GPU.**", ""]
    lines += ["## Generator (SimSwap 224), faces/s", "", "| precision | CUDA graphs | " + " | ".join(f"b{b}" for b in result["batches"]) + " |",
              "|---|---|" + "---|" * len(result["batches"])]
    by = {}
    for r in result["generator"]:
        by.setdefault((r["precision"], r["cuda_graphs"]), {})[r["batch"]] = r["faces_per_s"]
    for (p, g), row in by.items():
        lines.append(f"| {p} | {'yes' if g else 'no'} | " + " | ".join(f"{row.get(b) or '–'}" for b in result["batches"]) + " |")
    lines += ["", "## Detector (RetinaFace, 1080p → 1280×720), frames/s", "", "| CUDA graphs | batch | frames/s |", "|---|---|---|"]
    lines += [f"| {'yes' if r['cuda_graphs'] else 'no'} | {r['batch']} | {r['frames_per_s']} |" for r in result["detector"]]
    lines += ["", "## End to end, 1080p, 4 faces per frame", "", "| mode | path | encoder | fps | peak GPU MiB | busy ms per stage |", "|---|---|---|---|---|---|"]
    for r in result["end_to_end"]:
        busy = ", ".join(f"{k} {v:.0f}" for k, v in r["busy_ms"].items())
        lines.append(f"| {r['mode']} | {r['path']} | {'x264' if r['encode'] else 'none (compute-bound)'} | {r['fps']} | {r['peak_gpu_mib']} | {busy} |")
    for mode, ratio in result["speedup_vs_naive"].items():
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
    batches = (1, 4) if quick else BATCHES
    precisions = ("fp32",) if quick else tuple(PRECISIONS)
    frames = 6 if quick else args.frames
    size = (640, 360) if quick else (1920, 1080)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"command": "python benchmarks/gpu_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "device": args.device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "torch": torch.__version__, "machine": machine(), "batches": list(batches)}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(Path(tmp) / "g224.pth")
        torch.manual_seed(0)
        torch.save(SimSwapGenerator("224").state_dict(), ckpt)
        result["generator"] = generator_table(args.device, batches, precisions, 2 if quick else 5, ckpt)
        result["detector"] = detector_table(args.device, (1, 4) if quick else (1, 8, 32), 2 if quick else 5)
        clip = str(Path(tmp) / "clip.mp4")
        make_clip(clip, frames, *size)
        e2e = []
        for mode in ("blur", "swap"):
            for encode in (False, True):
                e2e.append(end_to_end(clip, args.device, mode, ckpt, encode=encode, batch=8 if quick else 32))
                print(f"end to end {mode} encode={encode}: {e2e[-1]['fps']} fps", flush=True)
            e2e.append(end_to_end(clip, args.device, mode, ckpt, encode=False, batch=1, naive=True))
            print(f"naive {mode}: {e2e[-1]['fps']} fps", flush=True)
        result["end_to_end"] = e2e
    fast = {(r["mode"], r["path"], r["encode"]): r["fps"] for r in e2e}
    result["speedup_vs_naive"] = {m: round(fast[(m, "device", False)] / fast[(m, "naive", False)], 1) for m in ("blur", "swap")}
    name = "gpu_throughput" if torch.cuda.is_available() else "gpu_throughput_cpu_dry_run"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
