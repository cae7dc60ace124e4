"""PerFace: triplet annotations, the cosine triplet loss, our IResNet in arcface_torch's layout,
the recipe on real faces, and the `perface` command line."""

import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PerFace training needs torch (pip install torch==2.13.0)")

from conftest import SHARED, run_cli

from engines import iresnet
from engines.perface import (
    FaceCrops,
    cosine_triplet_loss,
    load_triplets,
    train,
    triplet_accuracy,
    triplets_from_identities,
    write_triplets_csv,
)

FACES = SHARED / "data" / "faces"
# The legacy TorchScript exporter (dynamo=False, as for the SimSwap export) announces its retirement.
pytestmark = pytest.mark.filterwarnings(
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning",
    "ignore:The feature will be removed:DeprecationWarning",
)


# --- (a) annotation files -------------------------------------------------------------------

def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def images(tmp_path):
    """Empty files standing for images: the loader only checks that they exist."""
    folder = tmp_path / "img"
    folder.mkdir()
    for name in "rabcdxy":
        (folder / f"{name}.jpg").write_bytes(b"")
    return folder


def test_majority_is_positive_ties_are_dropped(images, tmp_path):
    path = _write(tmp_path / "img" / "t.csv", (
        "reference,a,b,votes_a,votes_b\n"
        "r.jpg,a.jpg,b.jpg,3,1\n"      # A wins
        "r.jpg,c.jpg,d.jpg,0,5\n"      # B wins, unanimously
        "r.jpg,x.jpg,y.jpg,2,2\n"      # tie: dropped
        "r.jpg,a.jpg,d.jpg,0,0\n"      # no votes: dropped
    ))
    got = load_triplets(path)
    assert [(os.path.basename(t.positive), os.path.basename(t.negative)) for t in got] == [("a.jpg", "b.jpg"), ("d.jpg", "c.jpg")]
    assert [t.agreement for t in got] == [0.75, 1.0] and [t.votes for t in got] == [(3, 1), (5, 0)]
    assert all(t.reference == str(images / "r.jpg") for t in got)
    unanimous = load_triplets(path, unanimous=True)
    assert [os.path.basename(t.positive) for t in unanimous] == ["d.jpg"]


def test_paths_are_relative_to_the_images_folder_when_given(images, tmp_path):
    path = _write(tmp_path / "elsewhere.csv", "reference,a,b,votes_a,votes_b,comment\nr.jpg,a.jpg,b.jpg,1,2,extra columns are ignored\n")
    (t,) = load_triplets(path, images=images)
    assert (t.reference, t.positive, t.negative) == tuple(str(images / n) for n in ("r.jpg", "b.jpg", "a.jpg"))
    with pytest.raises(ValueError, match=r"elsewhere\.csv:2: reference image r\.jpg not found.*--images"):
        load_triplets(path)


@pytest.mark.parametrize("text, match", [
    ("reference,a,b,votes_a\nr.jpg,a.jpg,b.jpg,1\n", r"t\.csv:1: missing column\(s\) votes_b"),
    ("reference,a,b,votes_a,votes_b\nr.jpg,a.jpg,b.jpg,1,0\nr.jpg,a.jpg,b.jpg,two,0\n", r"t\.csv:3: votes_a must be a whole number of votes, found 'two'"),
    ("reference,a,b,votes_a,votes_b\nr.jpg,a.jpg,b.jpg,1,-1\n", r"t\.csv:2: votes_b must not be negative"),
    ("reference,a,b,votes_a,votes_b\nr.jpg,a.jpg,b.jpg,1,0\n\nr.jpg,a.jpg,gone.jpg,1,0\n", r"t\.csv:4: b image gone\.jpg not found"),
    ("reference,a,b,votes_a,votes_b\nr.jpg,a.jpg\n", r"t\.csv:2: expected 5 fields"),
    ("", r"t\.csv is empty; expected the header reference,a,b,votes_a,votes_b"),
])
def test_bad_annotation_files_name_the_line(images, text, match):
    with pytest.raises(ValueError, match=match):
        load_triplets(_write(images / "t.csv", text))


def test_triplets_from_identities_round_trip_through_the_csv(images, tmp_path):
    rows = [(str(images / f), who) for f, who in
            [("r.jpg", "p"), ("a.jpg", "p"), ("b.jpg", "p"), ("c.jpg", "q"), ("d.jpg", "q"), ("x.jpg", "s"), ("y.jpg", "t")]]
    identity = dict(rows)
    made = triplets_from_identities(rows, np.random.default_rng(0), 1000)
    # p: 3 pairs × 4 negatives, q: 1 pair × 5 negatives; (ref, pos) order does not make a new triplet
    assert len(made) == 17
    assert len({(frozenset((t.reference, t.positive)), t.negative) for t in made}) == 17
    assert all(identity[t.reference] == identity[t.positive] != identity[t.negative] for t in made)
    assert len(triplets_from_identities(rows, np.random.default_rng(0), 5)) == 5
    out = write_triplets_csv(made, tmp_path / "made.csv")
    assert Path(out).read_text().splitlines()[0] == "reference,a,b,votes_a,votes_b"
    back = load_triplets(out)
    assert [(t.reference, t.positive, t.negative) for t in back] == [(t.reference, t.positive, t.negative) for t in made]
    assert all(t.votes == (3, 0) and t.unanimous for t in back)
    with pytest.raises(ValueError, match="at least 2 files"):
        triplets_from_identities([(str(images / "r.jpg"), "p"), (str(images / "a.jpg"), "q")], np.random.default_rng(0), 3)


# --- (b) the loss ----------------------------------------------------------------------------

def _unit(angle_deg, scale=1.0):
    a = math.radians(angle_deg)
    return [scale * math.cos(a), scale * math.sin(a)]


def test_cosine_triplet_loss_values():
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)
    ref = t([_unit(0), _unit(0), _unit(0, 2.0)])
    # cos(ref, pos), cos(ref, neg): (1, 0) satisfied by far; (0, 1) inverted; (0.95, 0.9) within the margin
    pos = t([_unit(0, 5.0), _unit(90), _unit(math.degrees(math.acos(0.95)), 3.0)])
    neg = t([_unit(90), _unit(0, 0.5), _unit(-math.degrees(math.acos(0.9)), 7.0)])
    per_row = [cosine_triplet_loss(ref[i : i + 1], pos[i : i + 1], neg[i : i + 1]).item() for i in range(3)]
    assert per_row[0] == 0.0
    assert per_row[1] == pytest.approx(1.1, abs=1e-12)
    assert per_row[2] == pytest.approx(0.9 - 0.95 + 0.1, abs=1e-12)
    assert cosine_triplet_loss(ref, pos, neg).item() == pytest.approx((0 + 1.1 + 0.05) / 3, abs=1e-12)
    assert cosine_triplet_loss(ref, pos, neg, margin=0.0).item() == pytest.approx(1.0 / 3, abs=1e-12)
    # satisfied by more than the margin (cos 0.6 vs 0.4): no loss and no gradient at all
    r, p, n = (t([_unit(a)]).requires_grad_() for a in (0, math.degrees(math.acos(0.6)), math.degrees(math.acos(0.4))))
    loss = cosine_triplet_loss(r, p, n)
    loss.backward()
    assert loss.item() == 0.0 and all(float(v.grad.abs().sum()) == 0.0 for v in (r, p, n))
    with pytest.raises(ValueError, match="one shape"):
        cosine_triplet_loss(ref, pos, neg[:2])


# --- (c) the backbone ------------------------------------------------------------------------

# Names and shapes of arcface_torch's R50 backbone.pth (recognition/arcface_torch/backbones/iresnet.py).
R50_ANCHORS = {
    "conv1.weight": (64, 3, 3, 3),
    "bn1.running_mean": (64,),
    "prelu.weight": (64,),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.prelu.weight": (64,),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer1.0.downsample.1.running_var": (64,),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer3.13.bn3.weight": (256,),
    "layer4.2.conv2.weight": (512, 512, 3, 3),
    "bn2.weight": (512,),
    "fc.weight": (512, 512 * 7 * 7),
    "fc.bias": (512,),
    "features.weight": (512,),
    "features.running_var": (512,),
    "features.num_batches_tracked": (),
}
KEY_PATTERN = re.compile(
    r"(conv1|bn1|prelu|bn2|fc|features|layer[1-4]\.\d+\.(bn1|conv1|bn2|prelu|conv2|bn3|downsample\.[01]))"
    r"\.(weight|bias|running_mean|running_var|num_batches_tracked)"
)


def test_iresnet50_has_arcface_torchs_state_dict_layout():
    sd = iresnet.iresnet50().state_dict()
    assert {k: tuple(sd[k].shape) for k in R50_ANCHORS} == R50_ANCHORS
    assert [k for k in sd if not KEY_PATTERN.fullmatch(k)] == []
    blocks = {stage: len({k.split(".")[1] for k in sd if k.startswith(stage + ".")}) for stage in ("layer1", "layer2", "layer3", "layer4")}
    assert blocks == {"layer1": 3, "layer2": 4, "layer3": 14, "layer4": 3}
    assert sorted({k.rsplit(".", 3)[0] for k in sd if ".downsample." in k}) == [f"layer{i}.0" for i in range(1, 5)]
    r18 = iresnet.iresnet18().state_dict()
    assert {k.split(".")[1] for k in r18 if k.startswith("layer3.")} == {"0", "1"} and r18["fc.weight"].shape == (512, 25088)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    m = iresnet.IResNet((1, 1, 1, 1), width=8)
    for mod in m.modules():  # statistics of a trained net, so eval mode is not the identity
        if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module."])
def test_load_backbone_accepts_arcface_torch_files(tiny, tmp_path, wrap):
    sd = tiny.state_dict()
    obj = {"state_dict": sd} if wrap == "state_dict" else {f"module.{k}": v for k, v in sd.items()} if wrap == "module." else sd
    torch.save(obj, tmp_path / "backbone.pth")
    loaded = iresnet.load_backbone(iresnet.IResNet((1, 1, 1, 1), width=8), tmp_path / "backbone.pth")
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny(x))
    assert not loaded.training


def test_load_backbone_errors_name_the_file_and_the_keys(tiny, tmp_path):
    sd = tiny.state_dict()
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in sd.items() if k != "layer2.0.bn3.running_var"}, path)
    with pytest.raises(ValueError, match=r"backbone\.pth does not fit .*missing keys \(1\): layer2\.0\.bn3\.running_var.*--arch"):
        iresnet.load_backbone(iresnet.IResNet((1, 1, 1, 1), width=8), path)
    torch.save({**sd, "head.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): head\.weight"):
        iresnet.load_backbone(iresnet.IResNet((1, 1, 1, 1), width=8), path)
    with pytest.raises(ValueError, match=r"wrong shapes.*conv1\.weight expected \(16, 3, 3, 3\), found \(8, 3, 3, 3\)"):
        iresnet.load_backbone(iresnet.IResNet((1, 1, 1, 1), width=16), path)
    torch.save(tiny, path)  # a pickled whole module: refused without running its pickle
    with pytest.raises(ValueError, match=r"backbone\.pth is not a plain tensor state_dict"):
        iresnet.load_backbone(iresnet.IResNet((1, 1, 1, 1), width=8), path)


def test_onnx_export_matches_torch(tiny, tmp_path):
    import onnxruntime as ort

    path = iresnet.export_onnx(tiny, tmp_path / "tiny.onnx")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["embedding"]
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)  # batch 3: the axis is dynamic
    x = iresnet.preprocess(crops)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    with torch.no_grad():
        want = tiny(x).numpy()
    got = session.run(["embedding"], {"input": x.numpy()})[0]
    assert got.shape == (3, 512)
    assert np.abs(got - want).max() <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]


def test_export_is_what_the_pipelines_perface_embedder_loads(tiny, tmp_path):
    from engines.embedders import load_embedder

    path = iresnet.export_onnx(tiny, tmp_path / "perface.onnx")
    crops = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    with torch.no_grad():
        want = torch.nn.functional.normalize(tiny(iresnet.preprocess(crops)), dim=1).numpy()
    got = load_embedder("perface", path).embed_crops(crops)
    assert got.shape == (2, 512) and np.abs(got - want).max() <= 1e-4


# --- (d) the recipe on real faces -----------------------------------------------------------

def _shared_rows():
    """(path, identity) of the shared single-face photos: 9 wild photos and 24 aligned crops."""
    if not (FACES / "identities" / "identities.csv").exists() or not (FACES / "sources" / "sources.csv").exists():
        pytest.skip(f"needs ../shared face photos ({FACES} not found; they are not shipped with the project)")
    with open(FACES / "identities" / "identities.csv") as f:
        rows = [(str(FACES / "identities" / r["file"]), r["person"]) for r in csv.DictReader(f) if r["faces_in_image"] == "1"]
    with open(FACES / "sources" / "sources.csv") as f:
        rows += [(str(FACES / "sources" / r["file"]), r["identity"]) for r in csv.DictReader(f)]
    return rows


@pytest.fixture(scope="module")
def shared_faces():
    from pipeline.detect.retinaface import RetinaFaceDetector

    rows = _shared_rows()
    faces = FaceCrops(RetinaFaceDetector())
    for path, _ in rows:  # detect → biggest face → ArcFace 112 alignment, once per photo
        assert faces.get(path).shape == (112, 112, 3)
    # One torch thread: on a busy 2-core machine two spinning threads made this 5x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield rows, faces
    torch.set_num_threads(threads)


def test_recipe_learns_held_out_triplets_on_real_faces(shared_faces):
    """Held out: the (reference, positive) pairs obama2–obama3 and ljm2–ljm3 never appear together
    in training; each photo is linked to the other only through a third photo of the same person
    (obama.jpg, ljm.jpg). A tiny IResNet trained from a fixed seed must learn that transitively.
    (Across 10 seeds this went from 0.57–0.77 to 0.92–1.0 held-out accuracy in 6 epochs.)"""
    rows, faces = shared_faces
    held_out = {frozenset(str(FACES / d / f) for f in pair) for d, pair in
                [("identities", ("obama2.jpg", "obama3.jpg")), ("sources", ("ljm2.jpg", "ljm3.jpg"))]}
    triplets = triplets_from_identities(rows, np.random.default_rng(0), 10_000)
    is_held = [frozenset((t.reference, t.positive)) in held_out for t in triplets]
    train_set = [t for t, h in zip(triplets, is_held) if not h]
    val_set = [t for t, h in zip(triplets, is_held) if h]
    assert (len(train_set), len(val_set)) == (213, 60)

    torch.manual_seed(0)
    model = iresnet.IResNet((1, 1, 1, 1), width=8)
    lines = []
    history = train(model, train_set, val_set, epochs=6, seed=0, faces=faces, log=lines.append)

    assert [row["epoch"] for row in history] == list(range(7)) and len(lines) == 7
    first, last = history[0], history[-1]
    print(f"train loss {first['train_loss']:.4f} -> {last['train_loss']:.4f}; "
          f"held-out accuracy {first['val_accuracy']:.3f} -> {last['val_accuracy']:.3f}")
    assert last["train_loss"] < 0.25 * first["train_loss"]
    assert last["loss"] < history[1]["loss"]
    assert last["val_accuracy"] >= first["val_accuracy"] + 0.15
    assert last["val_accuracy"] >= 0.85
    assert triplet_accuracy(model, val_set, faces) == last["val_accuracy"]
    assert not model.training


def test_training_is_deterministic_given_the_seed(shared_faces):
    rows, faces = shared_faces
    triplets = triplets_from_identities(rows, np.random.default_rng(1), 40)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = iresnet.IResNet((1, 1, 1, 1), width=4)
        runs.append((train(model, triplets[:30], triplets[30:], epochs=1, batch_size=16, seed=5, faces=faces),
                     model.fc.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_train_last_freezes_the_early_stages(shared_faces):
    rows, faces = shared_faces
    triplets = triplets_from_identities(rows, np.random.default_rng(2), 20)
    torch.manual_seed(0)
    model = iresnet.IResNet((1, 1, 1, 1), width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, triplets, [], epochs=1, batch_size=10, seed=0, train_last=2, faces=faces)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"layer4", "bn2", "fc", "features"}  # features: bias and statistics; its weight stays 1
    assert torch.equal(after["features.weight"], torch.ones(512))


# --- (e) the command line -------------------------------------------------------------------

def run_perface(*args, timeout=120):
    """`python run_pipeline.py perface …` (in this process: conftest.run_cli)."""
    return run_cli("perface", *args, timeout=timeout)


def test_cli_bad_input_is_one_line_and_status_2(tmp_path):
    r = run_perface("train", "--triplets", tmp_path / "missing.csv", "-o", tmp_path / "run")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: triplet file {tmp_path / 'missing.csv'} not found"]
    bad = _write(tmp_path / "bad.csv", "reference,a,b,votes_a,votes_b\nr.jpg,a.jpg,b.jpg,x,1\n")
    r = run_perface("eval", "--triplets", bad, "--model", bad)
    assert r.returncode == 2 and "unknown kind .csv" in r.stderr
    (tmp_path / "m.onnx").write_bytes(b"not onnx")
    r = run_perface("eval", "--triplets", bad, "--model", tmp_path / "m.onnx")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {bad}:2: votes_a must be a whole number of votes, found 'x'"]
    assert not (tmp_path / "run").exists()


def test_cli_make_triplets_train_eval(tmp_path):
    _shared_rows()  # skips without ../shared
    labels = tmp_path / "labels.csv"
    with open(FACES / "identities" / "identities.csv") as f:
        rows = [(f"identities/{r['file']}", r["person"], r["faces_in_image"]) for r in csv.DictReader(f)]
    with open(FACES / "sources" / "sources.csv") as f:
        rows += [(f"sources/{r['file']}", r["identity"], "1") for r in csv.DictReader(f)]
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([("file", "identity", "faces_in_image"), *rows])

    triplets = tmp_path / "triplets.csv"
    r = run_perface("make-triplets", "--labels", labels, "--images", FACES, "-n", 150, "-o", triplets)
    assert r.returncode == 0, r.stderr
    made = load_triplets(triplets)
    assert len(made) == 150 and "kit_with_rose.jpg" not in triplets.read_text()  # group photos are skipped

    out = tmp_path / "run"
    r = run_perface("train", "--triplets", triplets, "--arch", "tiny", "--epochs", 3, "--seed", 0, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "warning: no --init: training starts from random weights" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "perface.onnx", "perface.pth"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["triplets"] == {"train": 120, "val": 30} and len(metrics["history"]) == 4
    assert metrics["args"]["arch"] == "tiny" and metrics["init"] == "random"
    assert metrics["accuracy_before"] == metrics["history"][0]["val_accuracy"]
    assert metrics["accuracy_after"] == metrics["history"][-1]["val_accuracy"]
    assert "validation triplet accuracy" in r.stdout

    accuracies = []
    for model, extra in ((out / "perface.onnx", ()), (out / "perface.pth", ("--arch", "tiny"))):
        r = run_perface("eval", "--triplets", triplets, "--model", model, *extra)
        assert r.returncode == 0, r.stderr
        m = re.fullmatch(r"triplet accuracy (\d\.\d{4}) \(150 triplets, .*\)", r.stdout.strip())
        assert m, r.stdout
        accuracies.append(float(m.group(1)))
    assert accuracies[0] == accuracies[1]  # ONNX Runtime and torch agree on every triplet

    r = run_perface("eval", "--triplets", triplets, "--model", out / "perface.pth")  # default --arch r50
    assert r.returncode == 2 and "does not fit IResNet layers=[3, 4, 14, 3]" in r.stderr and "--arch" in r.stderr
