"""Fleet runs on a real local Ray cluster (2 CPU workers), through the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, cli_argv, no_leftovers, read_video, run_cli
from pipeline.fleet.jobs import (Job, completed, discover, fingerprint, output_rel, read_manifest, remove_partials,
                                 settings_digest)
from pipeline.fleet.runner import FleetOptions, plan_workers
from pipeline.core.errors import InvalidInputError
from pipeline.run.config import RunConfig
from pipeline.io.atomic import AtomicFile
from rtsp_harness import free_port


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    """Two good videos in nested folders, one truncated file, and a non-video beside them."""
    from pipeline.synthetic import make_video

    d = tmp_path_factory.mktemp("fleet_in")
    (d / "car1" / "day1").mkdir(parents=True)
    (d / "car2").mkdir()
    make_video(str(d / "car1" / "day1" / "a.mp4"), frames=30, seed=1)
    make_video(str(d / "car2" / "b.mov"), frames=24, seed=2, audio=False)
    data = (d / "car1" / "day1" / "a.mp4").read_bytes()
    (d / "car2" / "cut.mp4").write_bytes(data[: len(data) // 2])
    (d / "car2" / "notes.txt").write_text("not a video\n")
    return d


def _report(path):
    return json.loads(path.read_text())


def _by_name(report):
    return {os.path.basename(v["input"]): v for v in report["videos"]}


def test_fleet_runs_isolates_bad_input_and_resumes(fleet_dir, tmp_path):
    out = tmp_path / "out"
    rep = tmp_path / "fleet.json"
    res = run_cli(fleet_dir, "-o", out, "--workers", "2", "--report", rep, "-q")
    assert res.returncode == 1, res.stderr  # one video failed: non-zero, the rest done
    r = _report(rep)
    f = r["fleet"]
    assert (f["videos"], f["complete"], f["failed"], f["skipped"]) == (3, 2, 1, 0)
    assert f["workers"] == 2 and f["ray_address"] == "local"
    assert f["frames"] == 30 + 24 and f["faces"] >= 50
    v = _by_name(r)
    assert v["cut.mp4"]["status"] == "failed" and v["cut.mp4"]["kind"] == "bad_input"
    assert v["cut.mp4"]["attempts"] == 1 and "cut.mp4" in v["cut.mp4"]["reason"]
    assert len({v["a.mp4"]["worker"], v["b.mov"]["worker"]}) == 2  # both actors worked
    # Outputs mirror the folder layout, are complete videos, and each has its report.
    a_out, b_out = out / "car1" / "day1" / "a.mp4", out / "car2" / "b.mov"
    assert len(read_video(a_out)["frames"]) == 30 and len(read_video(b_out)["frames"]) == 24
    a_report = _report(out / "car1" / "day1" / "a.mp4.report.json")
    assert a_report["fleet"]["status"] == "complete"
    # the run loop's report: the same settings keys as a file run (tests/test_live.py: a live run's)
    from pipeline import RunConfig, anonymize_video

    file_run = anonymize_video(str(fleet_dir / "car2" / "b.mov"), str(tmp_path / "file.mp4"), RunConfig(max_frames=2),
                               progress=False, log=lambda m: None)["settings"]
    assert set(a_report["settings"]) == set(file_run) and set(a_report["settings"]["engines"]) == set(file_run["engines"])
    assert not (out / "car2" / "cut.mp4").exists()
    assert not no_leftovers(out / "car2") and not no_leftovers(out / "car1" / "day1")

    # Rerun: complete videos are skipped untouched; a replaced input is redone.
    mtime_a = a_out.stat().st_mtime_ns
    os.utime(fleet_dir / "car2" / "b.mov")  # same bytes, new mtime: counts as a new input
    res = run_cli(fleet_dir, "-o", out, "--workers", "2", "--report", rep, "-q")
    assert res.returncode == 1, res.stderr
    v = _by_name(_report(rep))
    assert v["a.mp4"]["status"] == "skipped" and a_out.stat().st_mtime_ns == mtime_a
    assert v["b.mov"]["status"] == "complete"
    assert v["cut.mp4"]["status"] == "failed"

    # --force redoes even complete videos; other settings make them stale too.
    res = run_cli(fleet_dir, "-o", out, "--workers", "1", "--report", rep, "-q", "--force", "--mode", "pixelate")
    v = _by_name(_report(rep))
    assert v["a.mp4"]["status"] == "complete" and a_out.stat().st_mtime_ns != mtime_a
    # One actor, two videos: the detector loaded for the first is reused for the second.
    assert v["a.mp4"]["worker"] == v["b.mov"]["worker"]
    assert sorted([v["a.mp4"]["models_loaded"], v["b.mov"]["models_loaded"]]) == [0, 1]
    assert _report(out / "car1" / "day1" / "a.mp4.report.json")["mode"] == "pixelate"


def test_killed_worker_video_is_retried(long_videos, tmp_path):
    """SIGKILL a real Ray worker process in the middle of a video: that video is redone on a
    fresh actor, the other one is unaffected, and no temp file is left."""
    out, rep = tmp_path / "out", tmp_path / "fleet.json"
    proc = _start_fleet(long_videos, out, rep)
    os.kill(_wait_busy(proc, out)[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    f = _report(rep)["fleet"]
    assert f["complete"] == 2 and f["failed"] == 0 and f["retries"] == 1, f
    attempts = sorted(v["attempts"] for v in _report(rep)["videos"])
    assert attempts == [1, 2]
    for i in range(2):
        assert len(read_video(out / f"v{i}.mp4")["frames"]) == LONG
    assert not no_leftovers(out)


def _start_fleet(src, out, rep, *extra):
    return subprocess.Popen(cli_argv(src, "-o", out, "--workers", 2, "--report", rep, "-q", *extra), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_busy(proc, out, timeout=120) -> list[int]:
    """Worker pids once a video has frames in flight (its temp output exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        busy = _processes("ray::PipelineWorker.process")
        if busy and list(out.rglob(".*.partial.mp4")):
            return busy
        time.sleep(0.1)
    raise AssertionError(f"no busy worker seen: {proc.communicate()[1] if proc.poll() is not None else 'timeout'}")


LONG = 90  # frames: a few seconds a video on one core, long enough to be killed or stopped mid-way


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
    from pipeline.synthetic import make_video

    src = tmp_path_factory.mktemp("long_in")
    for i in range(2):
        make_video(str(src / f"v{i}.mp4"), frames=LONG, seed=i, audio=False)
    return src


def test_crash_past_the_retry_limit_fails_that_video_only(long_videos, tmp_path):
    out, rep = tmp_path / "out", tmp_path / "fleet.json"
    proc = _start_fleet(long_videos, out, rep, "--retries", 0)
    os.kill(_wait_busy(proc, out)[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    r = _report(rep)
    kinds = sorted((v["status"], v.get("kind")) for v in r["videos"])
    assert kinds == [("complete", None), ("failed", "crash")], kinds
    failed = next(v for v in r["videos"] if v["status"] == "failed")
    assert "worker died" in failed["reason"] and failed["output"] is None
    assert not (out / os.path.basename(failed["input"])).exists() and not no_leftovers(out)


def test_sigterm_stops_the_fleet_and_leaves_no_partial_output(long_videos, tmp_path):
    out, rep = tmp_path / "out", tmp_path / "fleet.json"
    proc = _start_fleet(long_videos, out, rep)
    _wait_busy(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr  # 128 + SIGTERM, as a shell reports it
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted")
    r = _report(rep)
    assert r["fleet"]["interrupted"] is True
    assert all(v["status"] == "complete" or v["kind"] == "interrupted" for v in r["videos"])
    assert not no_leftovers(out)  # the killed workers' temp files were removed
    assert not _processes("ray::PipelineWorker")  # no worker outlives the fleet


def test_manifest_names_missing_files_and_mirrors_common_root(fleet_dir, tmp_path):
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# dashcam batch\n{fleet_dir / 'car1' / 'day1' / 'a.mp4'}\n\n{fleet_dir / 'car2' / 'gone.mp4'}\n")
    out = tmp_path / "out"
    res = run_cli(manifest, "-o", out, "--workers", "1", "-q")
    assert res.returncode == 1, res.stderr
    r = _report(out / "fleet_report.json")
    v = _by_name(r)
    assert v["gone.mp4"]["kind"] == "bad_input" and "not found" in v["gone.mp4"]["reason"]
    assert (out / "car1" / "day1" / "a.mp4").exists()  # relative to the entries' common folder


def test_empty_folder_is_bad_input(tmp_path):
    (tmp_path / "in").mkdir()
    res = run_cli(tmp_path / "in", "-o", tmp_path / "out", "-q")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: no video files under")
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()  # the folder it would have made is not left behind


def test_unreachable_cluster_is_one_line_exit_2(fleet_dir, tmp_path):
    res = run_cli(fleet_dir, "-o", tmp_path / "out", "--ray-address", f"127.0.0.1:{free_port()}", "-q", timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith("error: cannot join the Ray cluster") and not (tmp_path / "out").exists()


# ---- fast checks of the pieces, no Ray --------------------------------------------------

def test_discover_walks_skips_hidden_and_the_output_folder(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for p in ("a/x.mp4", "a/.tmp.mp4", "a/.hidden/y.mp4", "a/clip.AVI", "z.mkv", "a/readme.md", "out/old.mp4"):
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    jobs = discover(str(tmp_path), str(tmp_path / "out"))
    assert [j.rel for j in jobs] == ["a/clip.mkv", "a/x.mp4", "z.mkv"]  # .avi has no writer: .mkv
    assert jobs[1].report == str(tmp_path / "out" / "a" / "x.mp4.report.json")
    (tmp_path / "a" / "clip.mkv").write_bytes(b"x")  # clip.AVI and clip.mkv would collide
    with pytest.raises(InvalidInputError, match="same output"):
        discover(str(tmp_path), str(tmp_path / "out"))


def test_manifest_parsing(tmp_path):
    (tmp_path / "m.txt").write_text("# c\n  rel/a.mp4  \n\nrel/a.mp4\n/abs/b.mp4\n")
    assert read_manifest(str(tmp_path / "m.txt")) == [str(tmp_path / "rel" / "a.mp4"), "/abs/b.mp4"]
    (tmp_path / "e.txt").write_text("# only comments\n")
    with pytest.raises(InvalidInputError, match="no files"):
        read_manifest(str(tmp_path / "e.txt"))
    assert output_rel("x/y.webm") == "x/y.mkv" and output_rel("x/y.ts") == "x/y.ts"


def test_completed_needs_same_input_settings_and_output(tmp_path):
    inp = tmp_path / "in.mp4"
    inp.write_bytes(b"video")
    job = Job(str(inp), "in.mp4", str(tmp_path / "o.mp4"), str(tmp_path / "o.mp4.report.json"))
    (tmp_path / "o.mp4").write_bytes(b"12345")
    digest = settings_digest(RunConfig())
    rep = {"fleet": {"status": "complete", "settings_digest": digest, "input_fingerprint": fingerprint(str(inp)), "output_bytes": 5}}
    (tmp_path / "o.mp4.report.json").write_text(json.dumps(rep))
    assert completed(job, digest) is not None
    assert completed(job, settings_digest(RunConfig(mode="pixelate"))) is None  # other settings
    (tmp_path / "o.mp4").write_bytes(b"123")  # output damaged since
    assert completed(job, digest) is None
    (tmp_path / "o.mp4").write_bytes(b"12345")
    inp.write_bytes(b"other video")  # input replaced
    assert completed(job, digest) is None
    (tmp_path / "o.mp4.report.json").write_text("{not json")
    assert completed(job, digest) is None


def test_remove_partials_takes_only_this_jobs_temp_files(tmp_path):
    job = Job("/in/b.mp4", "b.mp4", str(tmp_path / "b.mp4"), str(tmp_path / "b.mp4.report.json"))
    mine = [AtomicFile(job.output).path, AtomicFile(job.report).path]
    other = AtomicFile(str(tmp_path / "b.x.mp4")).path  # another video's temp in the same folder
    assert remove_partials(job) == 2
    assert not any(os.path.exists(p) for p in mine) and os.path.exists(other)


def test_plan_workers():
    assert plan_workers({"CPU": 16.0}, FleetOptions(), 100) == (8, 2.0, 0.0)
    assert plan_workers({"CPU": 2.0}, FleetOptions(workers=2), 100) == (2, 1.0, 0.0)
    assert plan_workers({"CPU": 2.0}, FleetOptions(workers=4), 100)[1] == 0.5
    assert plan_workers({"CPU": 32.0, "GPU": 4.0}, FleetOptions(), 100) == (4, 8.0, 1.0)
    assert plan_workers({"CPU": 16.0}, FleetOptions(), 3)[0] == 3  # never more actors than videos


def _processes(title: str) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if title in line]


def test_joins_an_existing_ray_cluster(fleet_dir, tmp_path):
    """`--ray-address` joins a running cluster (here a head node started with `ray start`)
    instead of starting its own, and the actors run in that cluster's worker processes."""
    import shutil

    ray_bin = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # as a shared cluster should run; the token is in ~/.ray
    start = subprocess.run([ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                            "--disable-usage-stats"], capture_output=True, text=True, timeout=120, env=env)
    assert start.returncode == 0, start.stderr
    try:
        out, rep = tmp_path / "out", tmp_path / "fleet.json"
        manifest = tmp_path / "m.txt"
        manifest.write_text(f"{fleet_dir / 'car1' / 'day1' / 'a.mp4'}\n{fleet_dir / 'car2' / 'b.mov'}\n")
        res = run_cli(manifest, "-o", out, "--ray-address", f"127.0.0.1:{port}", "--report", rep, "-q",
                      env_extra={"RAY_AUTH_MODE": "token"})
        assert res.returncode == 0, res.stderr
        f = _report(rep)["fleet"]
        assert f["ray_address"] == f"127.0.0.1:{port}" and f["complete"] == 2
        assert f["resources"]["CPU"] == 2.0 and f["workers"] == 1  # 2 cores / 2 per worker
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_one_actor_runs_videos_together_and_merges_their_model_calls(tmp_path):
    """--videos-per-worker 2 on the device data path (--device cpu here, a GPU in production):
    one actor, both videos at once, their detector batches merged into shared model calls,
    and each output still the one a lone run writes."""
    from pipeline.synthetic import make_video

    src = tmp_path / "in"
    src.mkdir()
    for i in (1, 2):
        make_video(str(src / f"v{i}.mp4"), frames=24, seed=i, audio=False)
    out, rep = tmp_path / "out", tmp_path / "fleet.json"
    res = run_cli(src, "-o", out, "--workers", "1", "--videos-per-worker", "2", "--device", "cpu", "--batch-size", "2",
                  "--crf", "0", "--report", rep, "-q", env_extra={"ANONSWAP_MERGE_WAIT_MS": "300"})
    # (on two busy CPU cores the other video's next batch takes longer than the GPU default's 5 ms)
    assert res.returncode == 0, res.stderr
    r = _report(rep)
    assert r["fleet"]["workers"] == 1 and r["fleet"]["videos_per_worker"] == 2 and r["fleet"]["complete"] == 2
    rows = _by_name(r)
    assert rows["v1.mp4"]["worker"] == rows["v2.mp4"]["worker"]
    assert max(v["merged_model_calls"] for v in rows.values()) >= 1, "the two videos never shared a model call"
    for i in (1, 2):
        alone = tmp_path / f"alone{i}.mp4"
        assert run_cli(src / f"v{i}.mp4", "-o", alone, "--device", "cpu", "--batch-size", "2", "--crf", "0", "-q").returncode == 0
        a, b = read_video(alone)["frames"], read_video(out / f"v{i}.mp4")["frames"]
        assert len(a) == len(b) == 24
        assert max(abs(x.astype(int) - y).mean() for x, y in zip(a, b)) < 0.5
