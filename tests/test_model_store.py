"""Model registry: fetch (resumable), verify by structure and sha256, lock file, offline message.

Only `file://` URLs and a loopback HTTP server serving files made here: nothing is downloaded.
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
