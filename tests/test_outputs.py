"""Outputs as real users give them: links, folders, clashes, bad encoder settings, full disks.

Every case: exit status 2, one line `error: …`, the input byte-for-byte intact, and nothing
left behind (no output, no temp file).
"""

from __future__ import annotations

import hashlib
import os

import pytest

from conftest import run_cli


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def clip(synthetic, tmp_path):
    """A copy of the synthetic clip in its own folder, and a link to that folder."""
    src = tmp_path / "in"
    src.mkdir()
    video = src / "v.mp4"
    video.write_bytes(open(synthetic.path, "rb").read())
    link = tmp_path / "link"
    link.symlink_to(src, target_is_directory=True)
    out = tmp_path / "out"
    out.mkdir()
    return video, link, out


def _refused(res, message: str, *folders) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    for folder in folders:
        assert not [p for p in os.listdir(folder) if ".partial" in p], os.listdir(folder)


@pytest.mark.parametrize("flag", ["-o", "--report", "--boxes"])
def test_an_output_through_a_linked_folder_never_overwrites_the_input(clip, flag):
    video, link, out = clip
    before = _digest(video)
    args = {"-o": out / "o.mp4", "--report": out / "r.json", "--boxes": out / "b.jsonl"}
    args[flag] = link / "v.mp4"
    res = run_cli(video, *[x for kv in args.items() for x in kv], "--mode", "blur", "-q")
    _refused(res, "would overwrite an input" if flag != "-o" else "overwrite an input", out, video.parent)
    assert _digest(video) == before
    assert os.listdir(out) == []


def test_the_same_file_for_two_outputs_is_refused(clip):
    video, _, out = clip
    res = run_cli(video, "-o", out / "o.mp4", "--report", out / "x.json", "--boxes", out / "x.json", "-q")
    _refused(res, "--report and --boxes name the same file", out)
    assert os.listdir(out) == []


@pytest.mark.parametrize("flag", ["--report", "--boxes"])
def test_a_folder_where_a_file_should_be_is_refused(clip, flag):
    video, _, out = clip
    folder = out / "sub"
    folder.mkdir()
    res = run_cli(video, "-o", out / "o.mp4", flag, folder, "-q")
    _refused(res, f"{flag} is a folder, not a file", out)
    assert sorted(os.listdir(out)) == ["sub"] and os.listdir(folder) == []


@pytest.mark.parametrize("args,message", [
    (["--crf", "99"], "--crf: must be from 0 (lossless) to 51 (worst)"),
    (["--crf", "-1"], "--crf: must be from 0"),
    (["--preset", "fastest"], "--preset: invalid choice: 'fastest'"),
])
def test_encoder_settings_are_checked_before_anything_runs(clip, args, message):
    video, _, out = clip
    res = run_cli(video, "-o", out / "o.mp4", *args)
    _refused(res, message, out)
    assert os.listdir(out) == []


# ---- a full disk ---------------------------------------------------------------------------

def _can_mount_tmpfs(tmp_path) -> str | None:
    """None when a private tmpfs can be mounted (unshare: a mount namespace of our own), else why not."""
    import shutil
    import subprocess

    if not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    probe = tmp_path / "probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {probe}"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})"


def _run_on_small_disk(tmp_path, size: str, fill_kb: int, *args) -> tuple[int, str, list[str]]:
    """Runs the CLI with a tmpfs of `size` mounted at tmp_path/disk (`fill_kb` of it already
    used), in a mount namespace of its own; returns (exit status, stderr, what is left on it)."""
    import shlex
    import subprocess
    import sys

    from conftest import ROOT, cli_argv

    disk = tmp_path / "disk"
    disk.mkdir()
    cmd = " ".join(shlex.quote(str(a)) for a in cli_argv(*args))
    script = (f"mount -t tmpfs -o size={size} tmpfs {disk} && "
              f"{'head -c %d /dev/zero > %s/filler && ' % (fill_kb * 1024, disk) if fill_kb else ''}"
              f"{cmd}; echo \"rc=$?\" >&2; ls -A {disk} | grep -v '^filler$' >&2; true")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = r.stderr.strip().splitlines()
    rc_line = next(i for i, l in enumerate(lines) if l.startswith("rc="))
    assert sys.executable  # the child runs this interpreter (cli_argv)
    return int(lines[rc_line][3:]), "\n".join(lines[:rc_line]), lines[rc_line + 1:]


@pytest.mark.parametrize("where", ["video", "boxes", "report"])
def test_a_full_disk_is_one_line_and_leaves_nothing(clip, tmp_path, where):
    why = _can_mount_tmpfs(tmp_path)
    if why:
        pytest.skip(why)
    video, _, out = clip
    disk = tmp_path / "disk"
    paths = {"video": out / "o.mp4", "boxes": out / "b.jsonl", "report": out / "r.json"}
    paths[where] = disk / paths[where].name
    size, fill = ("16k", 0) if where == "video" else ("8k", 8)
    rc, stderr, left = _run_on_small_disk(tmp_path, size, fill, video, "-o", paths["video"], "--boxes", paths["boxes"],
                                          "--report", paths["report"], "--mode", "blur", "-q")
    assert rc == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0] == f"error: no space left on device while writing {paths[where]}", stderr
    assert left == [], f"left on the full disk: {left}"
    assert os.listdir(out) == [], "all outputs or none: nothing lands beside it either"
