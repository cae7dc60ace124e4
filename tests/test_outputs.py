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
