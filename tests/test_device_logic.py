"""The device path's decisions, run where CI runs (CPU): device choice, batch buckets, transfers.

The CUDA branches (pinned buffers, streams, graph capture) are exercised only on a GPU
(tests/test_gpu.py); here the logic that picks them and the CPU fallbacks are checked.
"""

import numpy as np
import pytest
import torch

from pipeline.core.errors import InvalidInputError
from pipeline.device.buckets import BucketedCall, bucket, pad_rows
from pipeline.device.select import resolve
from pipeline.device.transfer import Transfer


@pytest.mark.parametrize("spec,devices,expected", [
    ("auto", 0, None), ("auto", 2, "cuda:0"), ("cpu", 0, "cpu"), ("cpu", 2, "cpu"),
    ("cuda", 1, "cuda:0"), ("cuda:1", 2, "cuda:1"), ("CUDA:0", 1, "cuda:0"),
])
def test_device_choice(spec, devices, expected):
    choice = resolve(spec, devices=devices)
    assert choice.torch_device == expected
    assert choice.host == (expected is None) and choice.is_cuda == bool(expected and expected.startswith("cuda"))


@pytest.mark.parametrize("spec,message", [
    ("cuda", "this machine has no CUDA device torch can use"),
    ("cuda:2", "this machine has no CUDA device"),
    ("gpu", "expected auto|cpu|cuda[:N]"),
    ("cuda:x", "expected auto|cpu|cuda[:N]"),
])
def test_a_device_that_is_not_there_is_a_user_error(spec, message):
    with pytest.raises(InvalidInputError, match=message):
        resolve(spec, devices=0)


def test_buckets():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 200, 256)] == [1, 2, 4, 8, 8, 16, 256, 256]
    assert bucket(300) == 300, "beyond the largest bucket: the batch as it is, no graph"
    with pytest.raises(ValueError):
        bucket(0)
    x = torch.arange(6.0).reshape(3, 2)
    padded = pad_rows(x, 4)
    assert padded.shape == (4, 2) and torch.equal(padded[:3], x) and torch.equal(padded[3], x[0])


def test_a_bucketed_call_pads_and_returns_only_the_real_rows():
    seen = []

    def fn(inputs):
        seen.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2 + inputs["z"].sum(dim=1, keepdim=True)}

    call = BucketedCall(fn)
    x, z = torch.randn(5, 3), torch.randn(5, 4)
    out = call({"x": x, "z": z})
    assert seen == [8] and out["y"].shape == (5, 3)
    torch.testing.assert_close(out["y"], fn({"x": x, "z": z})["y"])
    assert call.replays == 0, "no CUDA graph on the CPU"


def test_transfer_round_trip_on_the_cpu():
    t = Transfer("cpu")
    assert not t.is_cuda
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (7, 9, 3), dtype=np.uint8) for _ in range(3)]
    frames = t.upload(images)
    assert frames.shape == (3, 7, 9, 3) and frames.dtype == torch.uint8
    frames[1] = 0
    t.download(frames, images)
    assert (images[1] == 0).all() and images[0].any()


def test_engine_choice_follows_the_device():
    from engines.placement import HOST, Placement
    from pipeline.run.config import RunConfig, engine_choice

    host = engine_choice(RunConfig())
    if host.device.is_cuda:
        pytest.skip("this machine has a GPU: auto picks it")
    assert host.device.host and (host.detector_backend, host.generator_backend) == ("onnxruntime", "onnxruntime")
    assert host.placement == HOST and host.placement.host and host.placement.torch_device == "cpu"
    dev = engine_choice(RunConfig(device="cpu"))
    assert (dev.device.torch_device, dev.detector_backend, dev.dtype, dev.cuda_graphs) == ("cpu", "torch", "float32", False)
    assert dev.placement == Placement("cpu", "float32", channels_last=False, compile=False, cuda_graphs=False)
    assert not dev.placement.host and not dev.placement.is_cuda
    with pytest.raises(ValueError, match="unknown dtype"):
        Placement("cpu", "float8")
    mixed = engine_choice(RunConfig(swap_backend="torch"))
    assert (mixed.detector_backend, mixed.generator_backend) == ("onnxruntime", "torch")
    assert engine_choice(RunConfig(device="cpu", precision="bf16")).dtype == "bfloat16"
    with pytest.raises(ValueError, match="unknown precision"):
        RunConfig(precision="fp8")


def test_nvdec_is_chosen_only_for_a_gpu_and_an_ffmpeg_that_has_it():
    from pipeline.io.video_reader import hw_decoder

    gpu, cpu = resolve("cuda:0", devices=1), resolve("cpu", devices=1)
    assert hw_decoder(gpu, available=("cuda", "vaapi")) == "cuda"
    assert hw_decoder(gpu, available=("vaapi",)) is None
    assert hw_decoder(cpu, available=("cuda",)) is None
    assert hw_decoder(resolve("auto", devices=0), available=("cuda",)) is None


def test_tensorrt_is_guarded_with_a_clear_message(tmp_path, synthetic):
    from conftest import run_cli
    from engines.tensorrt_engine import BackendUnavailable, plan_key, require

    key = plan_key("ab" * 32, "10.3.0", "NVIDIA H200", "fp16")
    assert key == "abababababababab_trt10.3.0_nvidia-h200_fp16.plan"
    assert plan_key("ab" * 32, "10.3.0", "NVIDIA H100 80GB HBM3", "fp16") != key, "a plan is per GPU model"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="needs NVIDIA TensorRT 10 .*pip install tensorrt"):
            require()
    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--backend", "tensorrt", "-q")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: --backend tensorrt needs"), res.stderr
    assert not (tmp_path / "o.mp4").exists()
    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--device", "cuda:3", "-q")
    if resolve("auto").is_cuda:
        return
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--device cuda:3: this machine has" in res.stderr, res.stderr


def _threads(fn, args_list):
    import threading

    out, errors = [None] * len(args_list), [None] * len(args_list)

    def run(i, a):
        try:
            out[i] = fn(a)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            errors[i] = e

    ts = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for t in ts:
        t.start()
    return ts, out, errors


def test_concurrent_batches_share_one_model_call_and_get_their_own_rows():
    """Four videos' batches queued while the model is busy run as one call; each caller gets
    exactly its rows back (row order inside a merged call must not leak between videos)."""
    import threading
    import time

    from pipeline.device.coalesce import Coalescer

    gate, seen = threading.Event(), []

    def model(feeds):
        seen.append(len(feeds["x"]))
        if len(seen) == 1:
            gate.wait(10)  # the first call holds the model while the others queue
        return {"y": feeds["x"] * 2 + 1, "s": feeds["x"].sum(dim=(1, 2))}

    c = Coalescer(model)
    first, f_out, _ = _threads(c, [{"x": torch.full((1, 2, 3), -1.0)}])
    time.sleep(0.2)
    feeds = [{"x": torch.arange(n * 6, dtype=torch.float32).reshape(n, 2, 3) + 100 * i} for i, n in enumerate((2, 3, 1, 4))]
    ts, outs, errors = _threads(c, feeds)
    time.sleep(0.3)
    gate.set()
    for t in first + ts:
        t.join(10)
    assert errors == [None] * 4
    assert seen == [1, 10], "the four queued batches are one call"
    for f, o in zip(feeds, outs):
        assert torch.equal(o["y"], f["x"] * 2 + 1) and torch.equal(o["s"], f["x"].sum(dim=(1, 2)))
    assert f_out[0]["y"].shape == (1, 2, 3)
    assert (c.calls, c.requests) == (2, 5)


def test_batches_of_other_shapes_are_not_merged_and_an_error_stays_in_its_call():
    import threading
    import time

    from pipeline.device.coalesce import Coalescer

    gate, seen = threading.Event(), []

    def model(feeds):
        x = feeds["x"]
        seen.append(tuple(x.shape))
        if len(seen) == 1:
            gate.wait(10)
        if x.shape[-1] == 5:
            raise RuntimeError("bad batch")
        return {"y": x + 1}

    c = Coalescer(model)
    first, _, _ = _threads(c, [{"x": torch.zeros(1, 4)}])
    time.sleep(0.2)
    ts, outs, errors = _threads(c, [{"x": torch.zeros(2, 4)}, {"x": torch.zeros(3, 5)}, {"x": torch.ones(1, 4)}, {"x": torch.zeros(1, 5)}])
    time.sleep(0.3)
    gate.set()
    for t in first + ts:
        t.join(10)
    assert sorted(seen[1:]) == [(3, 4), (4, 5)], "the 4-wide and the 5-wide batches run apart"
    assert errors[0] is None and errors[2] is None and torch.equal(outs[2]["y"], torch.full((1, 4), 2.0))
    assert isinstance(errors[1], RuntimeError) and isinstance(errors[3], RuntimeError)
    assert torch.equal(c(dict(x=torch.zeros(1, 4)))["y"], torch.ones(1, 4)), "the model works after a failed call"


def test_compile_is_opt_in_reaches_only_torch_builders_and_keeps_the_results():
    from engines.torch_engine import TorchEngine
    from pipeline.run.config import RunConfig, engine_choice

    plain, compiled = engine_choice(RunConfig(device="cpu")), engine_choice(RunConfig(device="cpu", compile=True))
    assert not plain.placement.compile and compiled.placement.compile
    assert engine_choice(RunConfig(compile=True, device="auto")).placement.compile is bool(torch.cuda.is_available()), \
        "the host path has no torch models to compile"
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    eager = TorchEngine(net, ("x",), ("y",))
    fast = TorchEngine(net, ("x",), ("y",), compile=True)
    assert fast.module is not eager.module
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(fast.run_tensors({"x": x})["y"], eager.run_tensors({"x": x})["y"], rtol=1e-5, atol=1e-5)


def test_a_cpu_only_blur_run_does_not_pay_for_importing_torch(synthetic, tmp_path):
    """Without NVIDIA's device files there is no CUDA device: `--device auto` knows it without
    importing torch (about a second of a short clip's start-up), and agrees with torch."""
    import glob
    import subprocess
    import sys

    from conftest import ROOT
    from pipeline.device.select import cuda_devices

    assert cuda_devices() == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if not sys.platform.startswith("linux") or glob.glob("/dev/nvidia*"):
        pytest.skip("a machine with NVIDIA's device files asks torch")
    out = tmp_path / "o.mp4"
    code = ("import sys; from pipeline.cli import main; "
            f"sys.argv = ['anonswap', {str(synthetic.path)!r}, '-o', {str(out)!r}, '--mode', 'blur', '-q']; "
            "rc = main(); print('torch' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False" and out.exists()


def test_tensorrt_profiles_reach_the_largest_bucket_and_a_refused_shape_is_an_error(monkeypatch):
    """TensorRT is not installed here (nor on the lent GPU): the profiles are checked as the
    builders declare them, and the execution context is a stand-in answering as TensorRT's
    does (set_input_shape returns False outside the profile, it does not raise)."""
    from engines import get_model
    from engines.placement import Placement
    from engines.simswap import engine as simswap_engine
    from engines.tensorrt_engine import MAX_BATCH, TensorRTEngine, build_retinaface
    from pipeline.device.buckets import BUCKETS

    assert MAX_BATCH == BUCKETS[-1]
    declared = []
    gpu = Placement("cuda:0", "float16", channels_last=True)
    monkeypatch.setattr(TensorRTEngine, "from_onnx", classmethod(lambda cls, onnx, entry, shapes, placement: declared.append((shapes, placement))))
    monkeypatch.setattr(simswap_engine, "cached_onnx", lambda entry, files: b"")
    build_retinaface(get_model("retinaface-mnet025"), {"weights": b""}, placement=gpu)
    simswap_engine.build_tensorrt(get_model("simswap-224"), {}, placement=gpu)
    assert [hi[0] for shapes, _ in declared for _, _, hi in shapes.values()] == [MAX_BATCH] * 3
    assert [p for _, p in declared] == [gpu, gpu], "the placement reaches TensorRT (its device and precision)"
    monkeypatch.undo()
    with pytest.raises(ValueError, match="TensorRT runs on a CUDA device, not cpu"):
        build_retinaface(get_model("retinaface-mnet025"), {"weights": b""}, placement=Placement("cpu"))

    class Context:
        def set_input_shape(self, name, shape):
            return shape[0] <= MAX_BATCH

    trt = object.__new__(TensorRTEngine)
    trt._torch, trt.device, trt._context = torch, torch.device("cpu"), Context()
    trt.inputs, trt._dtypes = (type("Spec", (), {"name": "x"})(),), {"x": torch.float32}
    with pytest.raises(ValueError, match="outside this TensorRT engine's optimization profile"):
        trt.run_tensors({"x": torch.zeros(MAX_BATCH + 1, 3)})


def test_constants_are_uploaded_once_and_detected_frames_are_not_kept_alive():
    """Anchors, means and kernels are made and uploaded once per key and device; a detected
    batch is freed when its caller lets go (a cache keyed by the frames tensor once kept up to
    16 batches alive, GBs at 1080p)."""
    import gc
    import weakref

    from pipeline.detect.retinaface import RetinaFaceDetector
    from pipeline.device.transfer import constant, to_device

    made = []
    first = constant(("test-constant", 3), "cpu", lambda: made.append(1) or np.arange(3))
    assert constant(("test-constant", 3), "cpu", lambda: made.append(1) or np.arange(3)) is first and made == [1]
    assert torch.equal(to_device([[1, 2]], "cpu", torch.float32), torch.tensor([[1.0, 2.0]]))
    from engines import load
    from engines.placement import Placement

    det = RetinaFaceDetector(engine=load("retinaface-mnet025", "torch", placement=Placement("cpu")))
    frames = torch.zeros((2, 96, 128, 3), dtype=torch.uint8)
    alive = weakref.ref(frames)
    det.detect_tensor(frames)
    del frames
    gc.collect()
    assert alive() is None


def test_every_builder_in_the_model_table_takes_a_placement():
    """`--device cpu --compile --detector centerface` once ended in a TypeError: CenterFace's
    torch builder did not take `compile`. Every builder of every model, on each backend, takes
    the run's placement (host runtimes ignore what is not theirs), the host path by default."""
    import inspect

    from engines.models import MODELS, resolve
    from engines.placement import HOST, Placement

    placement = Placement("cpu", "float16", channels_last=True, compile=True, cuda_graphs=True)
    for name, entry in MODELS.items():
        for backend, target in entry.backends.items():
            signature = inspect.signature(resolve(target))
            signature.bind(entry, {}, placement=placement)  # a TypeError names the builder
            assert signature.parameters["placement"].default is HOST, (name, backend)


def test_compile_reaches_every_torch_model_the_run_builds(tmp_path, perface_onnx):
    """`--device cpu --compile`: both detectors, the ArcFace-family embedders and the SimSwap
    generator are built by the run's own loaders as compiled TorchEngines. torch.compile wraps
    the module at build time; no forward pass (compiling RetinaFace on a CPU takes ~30 s; the
    compiled results are checked on a small net above)."""
    from torch._dynamo.eval_frame import OptimizedModule

    from engines import load
    from engines.torch_engine import TorchEngine
    from pipeline.run.build import load_detector, load_embedder, load_swap_models
    from pipeline.run.config import RunConfig, engine_choice
    from simswap_kit import make_swap_kit

    def compiled(engine) -> bool:
        engine = getattr(engine, "engine", engine)  # inside the device path's BucketedEngine
        return isinstance(engine, TorchEngine) and engine.compiled and isinstance(engine.module, OptimizedModule)

    gen, arc, _ = make_swap_kit(tmp_path)
    cfg = RunConfig(device="cpu", compile=True, detector="ensemble", generator=str(gen), arcface=str(arc),
                    embedder="perface", embedder_model=str(perface_onnx))
    engines = engine_choice(cfg)
    detectors = load_detector(cfg, engines).detectors
    assert [type(d).__name__ for d in detectors] == ["RetinaFaceDetector", "CenterFaceDetector"]
    assert all(compiled(d.engine) for d in detectors)
    assert compiled(load_embedder(cfg, engines).engine)
    assert compiled(load("arcface-r50", "torch", path=perface_onnx, placement=engines.placement).engine)
    generator, _ = load_swap_models(cfg, engines)
    assert compiled(generator)
    plain = RunConfig(device="cpu", detector="centerface")
    assert not load_detector(plain, engine_choice(plain)).detectors[0].engine.engine.compiled


def test_model_cache_keys_come_from_the_table_entry_and_the_placement():
    """A fleet worker reuses a model for the next video only when the entry, backend,
    placement, file and wrapper settings all match."""
    from engines.placement import HOST, Placement
    from pipeline.run.build import ModelCache, build_stages, model_key
    from pipeline.run.config import RunConfig

    cpu = Placement("cpu")
    key = model_key("retinaface-mnet025", "torch", cpu)
    assert key == model_key("retinaface-mnet025", "torch", Placement("cpu")) and hash(key) == hash(model_key("retinaface-mnet025", "torch", Placement("cpu")))
    assert key != model_key("retinaface-mnet025", "torch", Placement("cpu", compile=True))
    assert key != model_key("retinaface-mnet025", "torch", Placement("cpu", "float16"))
    assert key != model_key("retinaface-mnet025", "onnxruntime", cpu)
    assert model_key("retinaface-mnet025", None, HOST) == model_key("retinaface-mnet025", "onnxruntime", HOST), "None: the entry's default"
    assert model_key("perface", "torch", cpu, "a.onnx") != model_key("perface", "torch", cpu, "b.onnx")
    assert model_key("centerface", "torch", cpu, threshold=0.5) != model_key("centerface", "torch", cpu, threshold=0.6)
    with pytest.raises(ValueError, match="unknown model"):
        model_key("nope", None, HOST)

    models = ModelCache()
    first = build_stages("blur", RunConfig(device="cpu"), models=models).detector
    assert build_stages("blur", RunConfig(device="cpu"), models=models).detector is first, "the same config: reused"
    assert build_stages("blur", RunConfig(device="cpu", compile=True), models=models).detector is not first
    assert build_stages("blur", RunConfig(device="cpu", precision="bf16"), models=models).detector is not first
    assert len(models) == 3
