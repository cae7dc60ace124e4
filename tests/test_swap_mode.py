"""Swap mode end to end, with SimSwap files we generate (the official weights are never fetched)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="swap mode needs torch (pip install torch==2.13.0)")

from conftest import read_video, run_cli  # noqa: E402
from pipeline import RunConfig, anonymize_video  # noqa: E402
from pipeline.anonymize.swap import SwapConfig  # noqa: E402
from simswap_kit import make_swap_kit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return make_swap_kit(tmp_path_factory.mktemp("kit"))


SWAPPED_FRAMES = 16  # of the synthetic clip's 40: the random 224 generator costs ~0.4 s a face on 2 CPU cores


@pytest.fixture(scope="module")
def swapped(synthetic, kit, tmp_path_factory):
    gen, arc, gallery = kit
    d = tmp_path_factory.mktemp("swap")
    out, rep, boxes = d / "swap.mp4", d / "r.json", d / "b.jsonl"
    res = run_cli(synthetic.path, "-o", out, "--generator", gen, "--arcface", arc, "--gallery", gallery,
                  "--report", rep, "--boxes", boxes, "--max-frames", SWAPPED_FRAMES)
    assert res.returncode == 0, res.stderr
    return res, out, json.loads(rep.read_text()), [json.loads(l) for l in boxes.read_text().splitlines()]


def test_auto_picks_swap_when_everything_is_there(swapped):
    res, _, report, _ = swapped
    assert "mode auto: swap" in res.stderr
    assert report["mode"] == "swap" and report["mode_requested"] == "auto"


def test_every_face_is_swapped_or_blurred_with_a_reason(synthetic, swapped):
    _, out, report, rows = swapped
    faces = report["faces"]
    # the identity stage's look-ahead gives the track's unconfirmed first frames their source too
    assert faces["swapped"] == SWAPPED_FRAMES and faces["unconfirmed"] == 0
    assert faces["swapped"] + sum(faces["fallback"].values()) == faces["anonymized"]
    outcomes = {f["anonymized_by"] for r in rows for f in r["faces"]}
    assert outcomes <= {"swap", "blur:unconfirmed", "blur:predicted", "blur:too_small", "blur:profile"}
    assert report["tracks"][0]["source_ids"] in (["src_a"], ["src_b"])
    assert report["persons"][0]["source_id"] == report["tracks"][0]["source_id"]
    src, dst = read_video(synthetic.path), read_video(out)
    assert len(dst["frames"]) == SWAPPED_FRAMES and dst["times"] == src["times"][:SWAPPED_FRAMES] and dst["audio_streams"] == 1
    for r in rows:
        i = r["frame"]
        if any(f["anonymized_by"] == "swap" for f in r["faces"]):
            x1, y1, x2, y2 = synthetic.face_boxes[i].astype(int)
            core = (slice(y1 + (y2 - y1) // 3, y2 - (y2 - y1) // 4), slice(x1 + (x2 - x1) // 4, x2 - (x2 - x1) // 4))
            diff = np.abs(src["frames"][i][core].astype(int) - dst["frames"][i][core].astype(int)).mean()
            assert diff > 15, f"frame {i}: swapped face barely differs from the original ({diff:.1f})"


def test_broken_generator_falls_back_to_blur_and_says_so_even_when_quiet(synthetic, tmp_path):
    """Every face blurred, nothing said under -q, exit 0: a broken model looked like a success."""
    gen, arc, gallery = make_swap_kit(tmp_path, broken_generator=True)
    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--mode", "swap", "--generator", gen, "--arcface", arc,
                  "--gallery", gallery, "--max-frames", 8, "--report", tmp_path / "r.json", "-q")
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("error: swap failed on ") and "blurred instead" in res.stderr and "o.mp4 is blurred, not swapped" in res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    f = report["faces"]
    assert f["swapped"] == 0 and f["fallback"].get("engine_error", 0) >= 1
    assert sum(f["fallback"].values()) == f["anonymized"] == 8
    assert sum(f["swap_errors"].values()) == f["fallback"]["engine_error"] and all(":" in k for k in f["swap_errors"])
    src, dst = read_video(synthetic.path)["frames"], read_video(tmp_path / "o.mp4")["frames"]
    x1, y1, x2, y2 = synthetic.face_boxes[7].astype(int)
    assert np.abs(src[7][y1 + 5 : y2 - 5, x1 + 5 : x2 - 5].astype(int) - dst[7][y1 + 5 : y2 - 5, x1 + 5 : x2 - 5]).mean() > 15


def test_faces_below_the_size_limit_are_blurred(synthetic, kit, tmp_path):
    gen, arc, gallery = kit
    cfg = RunConfig(mode="swap", generator=str(gen), arcface=str(arc), gallery=str(gallery), max_frames=6,
                    swap=SwapConfig(min_face=1000))
    report = anonymize_video(synthetic.path, str(tmp_path / "o.mp4"), cfg, progress=False, log=lambda m: None)
    assert report["faces"]["swapped"] == 0
    assert report["faces"]["fallback"].get("too_small", 0) >= 1


def test_swap_mode_without_its_files_is_a_clear_error(synthetic, kit, tmp_path):
    gen, arc, gallery = kit
    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--mode", "swap", "--generator", gen)
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --mode swap needs a SimSwap generator, its ArcFace and a gallery; missing: --arcface (not given), --gallery (not given)"
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--mode", "swap", "--generator", bad, "--arcface", arc, "--gallery", gallery)
    assert res.returncode == 2 and "generator checkpoint unusable" in res.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_onnxruntime_backend_gives_the_torch_result(synthetic, kit, tmp_path):
    pytest.importorskip("onnx", reason="the onnxruntime backend exports the checkpoint with the onnx package")
    gen, arc, gallery = kit
    outs = {}
    for backend in ("torch", "onnxruntime"):
        cfg = RunConfig(mode="swap", generator=str(gen), arcface=str(arc), gallery=str(gallery), max_frames=6,
                        swap_backend=backend)
        report = anonymize_video(synthetic.path, str(tmp_path / f"{backend}.mp4"), cfg, progress=False, log=lambda m: None)
        assert report["faces"]["swapped"] >= 3 and report["settings"]["swap"]["backend"] == backend
        outs[backend] = read_video(tmp_path / f"{backend}.mp4")["frames"]
    diff = np.abs(np.stack(outs["torch"]).astype(int) - np.stack(outs["onnxruntime"])).mean()
    assert diff < 0.5, diff


def test_swap_on_the_real_clip_with_a_random_generator(shared_clip, kit, tmp_path):
    """Plumbing on real footage (several people, a shot cut): shapes, counts, fallbacks add up."""
    gen, arc, gallery = kit
    rep = tmp_path / "r.json"
    res = run_cli(shared_clip, "-o", tmp_path / "o.mp4", "--mode", "swap", "--generator", gen, "--arcface", arc,
                  "--gallery", gallery, "--max-frames", "15", "--report", rep, "-q")
    assert res.returncode == 0, res.stderr
    report = json.loads(rep.read_text())
    f = report["faces"]
    assert report["video"]["frames_out"] == 15 and report["video"]["audio_streams"] == 1
    assert f["swapped"] > 0 and f["swapped"] + sum(f["fallback"].values()) == f["anonymized"]
    # two galleries identities for more people than that: synthetic mixes fill in
    assert report["tracks"] and all(t["source_id"] in {"src_a", "src_b", "mix:src_a+src_b", None} for t in report["tracks"])
    assert len(read_video(tmp_path / "o.mp4")["frames"]) == 15


def test_degenerate_landmarks_fall_back_to_blur(kit):
    """A face whose landmarks fit no similarity (all on one point) is blurred, and the batch's other faces still swap."""
    from skimage import data

    from engines import load
    from pipeline.detect.retinaface import RetinaFaceDetector
    from pipeline.core.records import Face, Frame, TrackedFrame
    from pipeline.anonymize.swap import FaceSwapper

    gen, _, _ = kit
    img = data.astronaut()
    det = RetinaFaceDetector().detect([img])[0]
    good = Face(det.boxes[0], det.landmarks[0], 0.99, 1, False, det.boxes[0].copy())
    bad = Face(det.boxes[0], np.zeros((5, 2), np.float32), 0.99, 2, False, det.boxes[0].copy())
    z = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    for face in (good, bad):
        face.source_id, face.source_latent = "s", z / np.linalg.norm(z)
    swapper = FaceSwapper(load("simswap-224", "torch", path=str(gen)))
    frames = [TrackedFrame(Frame(0, 0, 1, img.copy()), [good], 1), TrackedFrame(Frame(1, 1, 1, img.copy()), [bad], 1)]
    swapper.apply_batch(frames)
    assert good.outcome == "swap" and bad.outcome == "blur:swap_error"
    x1, y1, x2, y2 = det.boxes[0].astype(int)
    assert np.abs(frames[1].frame.image[y1:y2, x1:x2].astype(int) - img[y1:y2, x1:x2]).mean() > 15


def test_a_gallery_of_only_the_person_themself_is_never_used_on_them(synthetic, kit, tmp_path):
    """FIVA's margin: a source too close to the face's own embedding is refused, so with a
    gallery holding only the astronaut (and her mirror image) every face is blurred, with the reason."""
    import cv2
    from skimage import data

    gen, arc, _ = kit
    folder = tmp_path / "self"
    folder.mkdir()
    astro = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "astro.png"), astro)
    cv2.imwrite(str(folder / "mirror.png"), np.ascontiguousarray(astro[:, ::-1]))
    cfg = RunConfig(mode="swap", generator=str(gen), arcface=str(arc), gallery=str(folder), max_frames=10)
    report = anonymize_video(synthetic.path, str(tmp_path / "o.mp4"), cfg, progress=False, log=lambda m: None)
    assert report["faces"]["swapped"] == 0
    assert report["faces"]["fallback"] == {"no_source": 10}
    assert report["persons"][0]["source_id"] is None


def test_audit_of_swap_output_finds_no_leak(synthetic, swapped, tmp_path):
    _, out, _, _ = swapped
    res = run_cli("audit", synthetic.path, out, "--boxes", out.parent / "b.jsonl", "-o", tmp_path / "a.json", "--every", "2", "--max-frames", SWAPPED_FRAMES, "-q")
    assert res.returncode == 0, res.stderr
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["leaks"]["count"] == 0 and a["leaks"]["suspect"] == []
    assert a["reid"]["faces"] >= 8 and a["reid"]["rate"] == 0.0  # a random generator's face is nobody
    assert a["negated_reid"]["rate"] == 0.0


def test_parsing_mask_from_the_command_line(synthetic, kit, tmp_path):
    """`--parsing-mask` loads the parser through the model table (an official-layout file we make),
    runs it in the swap and says per face in the report whether the mask was used; asking for it
    without the file, or outside swap mode, is a one-line error before any work."""
    from engines.parsing import BiSeNet

    gen, arc, gallery = kit
    torch.manual_seed(0)
    parser = tmp_path / "79999_iter.pth"
    torch.save(BiSeNet().state_dict(), parser)
    rep = tmp_path / "r.json"
    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--generator", gen, "--arcface", arc, "--gallery", gallery,
                  "--parsing-mask", "--parsing-model", parser, "--max-frames", "6", "--report", rep, "-q")
    assert res.returncode == 0, res.stderr
    report = json.loads(rep.read_text())
    f = report["faces"]
    assert f["swapped"] >= 3 and sum(f["parsing_mask"].values()) == f["swapped"], f
    assert set(f["parsing_mask"]) <= {"used", "gate", "inner_face"}
    assert report["settings"]["swap"]["parsing_mask"] == str(parser)
    env = {"ANONSWAP_HOME": str(tmp_path / "empty_home")}
    res = run_cli(synthetic.path, "-o", tmp_path / "o2.mp4", "--mode", "swap", "--generator", gen, "--arcface", arc,
                  "--gallery", gallery, "--parsing-mask", env_extra=env)
    assert res.returncode == 2 and "models fetch face-parsing" in res.stderr and "--parsing-model (not given)" in res.stderr
    res = run_cli(synthetic.path, "-o", tmp_path / "o3.mp4", "--mode", "blur", "--parsing-mask")
    assert res.returncode == 2 and res.stderr.strip() == "error: --parsing-mask shapes the swap; it does nothing with --mode blur"
