"""Output permissions follow the umask, like ffmpeg's; biometric and original-face files are 0600."""

import os
import stat

import numpy as np
import pytest

from conftest import run_cli
from pipeline.io.atomic import AtomicFile, write_json_atomic
from pipeline.io.npz_file import write_npz


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,public", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_run_outputs_follow_the_umask_and_the_audit_page_stays_private(synthetic, tmp_path, mask, public):
    out = tmp_path / "o.mp4"
    old = os.umask(mask)  # the umask is read when each file is made, never cached: in-process is the same
    try:
        res = run_cli(synthetic.path, "-o", out, "--mode", "blur", "--report", tmp_path / "r.json", "--boxes", tmp_path / "b.jsonl",
                      "--max-frames", 5, "--audit", tmp_path / "a.json", "-q")
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    for name in ("o.mp4", "r.json", "b.jsonl", "a.json"):
        assert _mode(tmp_path / name) == public, f"{name}: {oct(_mode(tmp_path / name))}"
    assert _mode(tmp_path / "a.html") == 0o600, "the audit page shows original faces"


def test_atomic_files_registry_and_gallery_modes(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(str(tmp_path / "r.json"), {"a": 1})
        f = AtomicFile(str(tmp_path / "v.mp4"))
        assert _mode(f.path) == 0o644, "set before anything is written, so no reader sees a wider mode later"
        f.commit()
        write_npz(str(tmp_path / "registry.npz"), "x", 1, {}, {"embeddings": np.zeros((1, 4), np.float32)})
        write_json_atomic(str(tmp_path / "private.json"), {}, private=True)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "r.json") == _mode(tmp_path / "v.mp4") == 0o644
    assert _mode(tmp_path / "registry.npz") == _mode(tmp_path / "private.json") == 0o600
