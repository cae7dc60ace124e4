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


# --- one rule for every command that writes ---------------------------------------------------

# The flags through which a command names a file it writes (in `audit`, --report and --boxes
# name files it reads; the table below decides which flag each case turns on an input).
OUTPUT_FLAGS = {"-o", "--output", "--report", "--boxes", "--html", "--audit", "--person-registry"}


def _parsers():
    """(command, parser) for the main command line and every subcommand action, found by
    walking the parsers as argparse built them."""
    import argparse
    import importlib

    cli = importlib.import_module("pipeline.cli.command")

    def walk(name, p):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield name, p
        for a in subs:
            for sub_name, sub in a.choices.items():
                yield from walk(f"{name} {sub_name}".strip(), sub)

    yield "run", cli.build_parser()
    for name, module in cli.SUBCOMMANDS.items():
        p = importlib.import_module(module).build_parser()
        yield from walk("" if name == "perface" else name, p)  # perface's parser has `perface` as its first word


def _writers() -> set[str]:
    found = set()
    for name, p in _parsers():
        if any(set(a.option_strings) & OUTPUT_FLAGS for a in p._actions):
            found |= {"run", "fleet", "live"} if name == "run" else {name}  # one parser, three kinds of input
    return found


@pytest.fixture
def kit(synthetic, tmp_path):
    """Inputs every case can aim an output at: a video, a folder of photos, labels."""
    from skimage import data
    import cv2

    video = tmp_path / "v.mp4"
    video.write_bytes(open(synthetic.path, "rb").read())
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"p_{i}.jpg"), data.astronaut()[:, :, ::-1])
    labels = tmp_path / "labels.csv"
    labels.write_text("file,identity\np_0.jpg,a\np_1.jpg,a\np_2.jpg,b\n")
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "a.mp4").write_bytes(video.read_bytes())
    train_out = tmp_path / "train"
    train_out.mkdir()
    (train_out / "metrics.json").write_text("reference,a,b,votes_a,votes_b\n")
    out = tmp_path / "out"
    out.mkdir()
    return {"video": video, "photos": photos, "labels": labels, "fleet": fleet, "train": train_out, "out": out}


# command → (argv, the input file an output is aimed at, words the refusal names)
CASES = {
    "run": lambda k: ([k["video"], "-o", k["out"] / "o.mp4", "--report", k["video"]], k["video"], "overwrite an input"),
    "fleet": lambda k: ([k["fleet"], "-o", k["out"], "--report", k["fleet"] / "a.mp4"], k["fleet"] / "a.mp4", "overwrite an input"),
    "fleet into its input folder": lambda k: ([k["fleet"], "-o", k["fleet"]], k["fleet"] / "a.mp4", "output folder is its input folder"),
    "live": lambda k: (["rtsp://127.0.0.1:9/cam", "-o", k["out"] / "o.mp4", "--embedder", "perface", "--embedder-model", k["labels"],
                        "--report", k["labels"]], k["labels"], "overwrite an input"),
    "audit": lambda k: (["audit", k["video"], k["video"], "-o", k["video"]], k["video"], "overwrite an input"),
    "gallery build": lambda k: (["gallery", "build", k["photos"], "-o", k["photos"] / "p_1.jpg"], k["photos"] / "p_1.jpg",
                                "overwrite an input"),
    "perface make-triplets": lambda k: (["perface", "make-triplets", "--labels", k["labels"], "--images", k["photos"], "-n", "2",
                                         "-o", k["photos"] / "p_2.jpg"], k["photos"] / "p_2.jpg", "overwrite an input"),
    "perface train": lambda k: (["perface", "train", "--triplets", k["train"] / "metrics.json", "-o", k["train"]],
                                k["train"] / "metrics.json", "overwrite an input"),
}


def test_every_command_that_writes_has_a_case_here():
    """A new command (or a new output flag on one) that is not in CASES fails here."""
    writers = _writers()
    assert {"run", "fleet", "live", "audit", "gallery build", "perface make-triplets", "perface train"} <= writers
    assert writers <= {name.split(" into ")[0] for name in CASES}, writers - set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_command_writes_over_an_input(kit, case, capsys, monkeypatch):
    """In-process (the check comes before any model loads): exit 2, one line, the input intact."""
    import signal

    from pipeline.cli import main

    monkeypatch.setattr(signal, "signal", lambda s, h: None)  # the commands' own handlers stay out of pytest
    argv, victim, message = CASES[case](kit)
    before = _digest(victim)
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert _digest(victim) == before
    assert os.listdir(kit["out"]) == []


def test_no_command_takes_an_abbreviated_flag(synthetic, tmp_path, capsys):
    """argparse would read `--keep` as `--keep-metadata` (GPS kept)."""
    from pipeline.cli import main

    assert all(p.allow_abbrev is False for _, p in _parsers())
    with pytest.raises(SystemExit) as e:
        main([synthetic.path, "-o", str(tmp_path / "o.mp4"), "--keep"])
    assert e.value.code == 2 and "unrecognized arguments: --keep" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_an_interrupt_during_the_audit_says_what_was_kept(synthetic, tmp_path, capsys, monkeypatch):
    """The video, its report and boxes were complete when the audit began: they stay, and the
    message says so (it once said "no output written")."""
    import signal

    import pipeline.audit.cli as audit_cli
    from pipeline.cli import main

    monkeypatch.setattr(signal, "signal", lambda s, h: None)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(audit_cli, "run_audit", interrupted)
    out, report = tmp_path / "o.mp4", tmp_path / "r.json"
    status = main([synthetic.path, "-o", str(out), "--report", str(report), "--mode", "blur", "--max-frames", "5", "--audit", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 130 and out.exists() and report.exists()
    assert err[-1] == f"error: interrupted during the audit; kept {out}, {report}; no audit written", err


def test_a_fleet_rerun_into_a_folder_inside_its_input_is_not_refused(synthetic, tmp_path, monkeypatch):
    """The last run's fleet report and outputs there are this run's to replace, not inputs.
    (Ray is not what this checks: the fleet itself is stood in for once the paths passed.)"""
    import signal

    import pipeline.fleet.cli as fleet_cli
    from pipeline.cli import main

    monkeypatch.setattr(signal, "signal", lambda s, h: None)
    videos = tmp_path / "videos"
    (videos / "out").mkdir(parents=True)
    (videos / "a.mp4").write_bytes(open(synthetic.path, "rb").read())
    (videos / "out" / "fleet_report.json").write_text("{}")  # the last run's
    ran = []

    def fleet(jobs, config, opts, **kw):
        ran.append([j.input for j in jobs])
        return {"fleet": {k: 0 for k in ("complete", "skipped", "failed", "videos", "frames", "faces", "fps")}, "videos": []}

    monkeypatch.setattr(fleet_cli, "run_fleet", fleet)
    assert main([str(videos), "-o", str(videos / "out"), "-q"]) == 0
    assert ran == [[str(videos / "a.mp4")]]


def test_an_interrupt_while_a_temp_file_is_made_leaves_none(tmp_path, monkeypatch):
    """SIGTERM the moment the temp output exists (the signal test above, delay 0, hit it once in
    CI): the file is removed, though nobody holds it yet."""
    from pipeline.io import atomic

    def interrupted(fd, mode):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fchmod", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.AtomicFile(str(tmp_path / "o.mp4"))
    assert list(tmp_path.iterdir()) == []
