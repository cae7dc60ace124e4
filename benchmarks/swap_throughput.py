"""SimSwap generator throughput on this machine: faces/s per backend and batch size.

    python benchmarks/swap_throughput.py [--variant 224] [--batches 1 2 4 8 16] [--repeat 2]

Weights are randomly initialized (speed does not depend on their values; the official
weights are never downloaded here). Both backends run in the same process, one after the
other, on the same inputs. Writes benchmarks/results/swap_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine, write


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="224", choices=("224", "512"))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    import torch

    from engines import load
    from engines.simswap import SimSwapGenerator

    torch.manual_seed(0)
    size = int(args.variant)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "g.pth"
        torch.save(SimSwapGenerator(args.variant).state_dict(), ckpt)
        import os

        os.environ["ANONSWAP_HOME"] = tmp  # the ONNX export cache goes to the temp dir
        for backend in ("torch", "onnxruntime"):
            t = time.perf_counter()
            engine = load(f"simswap-{args.variant}", backend, path=str(ckpt))
            setup = time.perf_counter() - t
            rng = np.random.default_rng(0)
            for b in args.batches:
                image = rng.random((b, 3, size, size), np.float32)
                latent = rng.standard_normal((b, 512)).astype(np.float32)
                latent /= np.linalg.norm(latent, axis=1, keepdims=True)
                engine({"image": image, "latent": latent})  # warm-up
                best = float("inf")
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    engine({"image": image, "latent": latent})
                    best = min(best, time.perf_counter() - t)
                rows.append({"backend": backend, "batch": b, "s_per_batch": round(best, 3), "faces_per_s": round(b / best, 2),
                             "s_per_face": round(best / b, 3), "setup_s": round(setup, 1)})
                print(rows[-1], flush=True)
    data = {"command": "python benchmarks/swap_throughput.py " + " ".join(sys.argv[1:]), "variant": args.variant,
            "machine": machine(), "torch_threads": torch.get_num_threads(), "results": rows}
    md = [f"# SimSwap {args.variant} generator throughput (CPU)", "", f"Command: `{data['command'].strip()}`  ",
          f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores; torch threads {data['torch_threads']}", "",
          "Setup = load (torch) or load + one-time ONNX export + session (onnxruntime).", "",
          "| backend | batch | s / batch | faces / s | s / face | setup s |", "| --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['backend']} | {r['batch']} | {r['s_per_batch']} | {r['faces_per_s']} | {r['s_per_face']} | {r['setup_s']} |" for r in rows]
    write(f"swap_throughput_{args.variant}" if args.variant != "224" else "swap_throughput", data, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
