"""Many videos on a Ray cluster: one long-lived pipeline actor per GPU (or per few CPU cores).

Ray is the engine (scheduling, process isolation, joining a cluster); this module only
decides what runs next. Back-pressure is a fixed number of videos in flight per actor (one
on CPUs; a few on a GPU, `videos_per_worker`, whose detector and generator batches then
share model calls: pipeline/device/coalesce.py): the driver holds paths and small result
rows, each actor holds that many streaming pipelines with bounded queues, so memory stays
flat however long the fleet is. A video whose actor dies (crash, OOM killer,
lost node) is retried on a fresh actor up to `retries` times; a video that is bad input fails
once, with its reason, and the rest of the fleet goes on.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import av
from tqdm import tqdm

from pipeline.core.errors import AnonswapError, reason
from pipeline.io.atomic import write_json_atomic
from pipeline.run.config import RunConfig
from pipeline.fleet.jobs import Job, completed, remove_partials, settings_digest
from pipeline.fleet.worker import PipelineWorker, ProgressBoard

DEFAULT_WORKER_CPUS = 2  # a pipeline keeps about two cores busy (decode+encode, detect)
GPU_VIDEOS_PER_WORKER = 4  # one video's batches leave a GPU mostly idle; four fill its calls
LOCAL_OBJECT_STORE = 256 * 1024 ** 2  # results are small rows; frames never cross processes
POLL_S = 0.5
START_TIMEOUT_S = 300.0


class FleetError(AnonswapError):
    """The fleet as a whole cannot run (workers never start); one line, exit status 2."""


@dataclass
class FleetOptions:
    workers: int | None = None       # default: one per GPU, else one per `worker_cpus` cores
    worker_cpus: int | None = None   # CPU cores per actor (default DEFAULT_WORKER_CPUS, or the share per GPU)
    videos_per_worker: int | None = None  # videos an actor runs at once (default 1, GPU_VIDEOS_PER_WORKER with a GPU)
    ray_address: str | None = None   # join this cluster instead of starting a local one
    retries: int = 2                 # extra attempts for a video whose worker died
    force: bool = False              # redo videos already complete
    progress: bool = True


def videos_per_worker(opts: FleetOptions, gpu_each: float) -> int:
    """On CPUs one video already keeps an actor's cores busy; on a GPU it does not."""
    return opts.videos_per_worker or (GPU_VIDEOS_PER_WORKER if gpu_each else 1)


def plan_workers(resources: dict, opts: FleetOptions, videos: int) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for a cluster's resources."""
    cpus = max(1.0, float(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0))
    if gpus:
        n = opts.workers or gpus
        gpu_each = 1.0 if n <= gpus else gpus / n
        cpu_each = float(opts.worker_cpus or max(1, int(cpus // n)))
    else:
        per = opts.worker_cpus or DEFAULT_WORKER_CPUS
        n = opts.workers or max(1, int(cpus // per))
        cpu_each = float(opts.worker_cpus) if opts.worker_cpus else max(cpus / n if n > cpus else float(int(cpus // n)), 0.01)
        gpu_each = 0.0
    return max(1, min(n, videos)), cpu_each, gpu_each


def run_fleet(jobs: list[Job], config: RunConfig, opts: FleetOptions, *, source: str, outdir: str,
              report_path: str | None, log=lambda m: print(m, file=sys.stderr)) -> dict:
    started = time.perf_counter()
    digest = settings_digest(config)
    rows: dict[str, dict] = {}
    todo: list[Job] = []
    for job in jobs:
        done = None if opts.force else completed(job, digest)
        if done is not None:
            rows[job.key] = _row(job, {"status": "skipped", "reason": "already complete (same input and settings)",
                                       "frames": done["video"]["frames_out"], "faces": done["faces"]["anonymized"]})
        else:
            todo.append(job)
    if rows:
        log(f"fleet: {len(rows)} of {len(jobs)} videos already complete, skipped (--force redoes them)")
    cluster = {}
    interrupted = None
    if todo:
        try:
            cluster = _run_on_ray(todo, config, opts, digest, rows, log)
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP: raised again once the report is written
            interrupted = e
        for job in todo:
            if job.key not in rows:
                remove_partials(job)
                rows[job.key] = _row(job, {"status": "failed", "kind": "interrupted", "reason": "interrupted before it finished"})
    result = _fleet_report(jobs, rows, source, outdir, cluster, time.perf_counter() - started, interrupted is not None)
    if report_path:
        write_json_atomic(report_path, result)
    if interrupted is not None:
        raise interrupted
    return result


def _run_on_ray(todo: list[Job], config: RunConfig, opts: FleetOptions, digest: str, rows: dict, log) -> dict:
    import ray
    from ray.exceptions import RayActorError, RayError, RayTaskError

    t0 = time.perf_counter()
    own = not ray.is_initialized()
    if own:
        _init_ray(opts)
    try:
        resources = ray.cluster_resources()
        n, cpu_each, gpu_each = plan_workers(resources, opts, len(todo))
        slots = videos_per_worker(opts, gpu_each)
        threads = max(1, int(cpu_each))
        board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        actor_cls = ray.remote(PipelineWorker).options(
            num_cpus=cpu_each, num_gpus=gpu_each, max_restarts=0, max_task_retries=0, max_concurrency=slots,
            runtime_env={"env_vars": {"ANONSWAP_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}},
        )

        def new_actor():
            return actor_cls.remote(config, threads, board)

        cluster = {"ray_address": opts.ray_address or "local", "resources": {k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory")},
                   "workers": n, "cpus_per_worker": cpu_each, "gpus_per_worker": gpu_each, "videos_per_worker": slots}
        log(f"fleet: {len(todo)} videos on {n} worker{'s' * (n != 1)} ({cpu_each:g} CPU"
            + (f", {gpu_each:g} GPU" if gpu_each else "") + (f", {slots} videos at once" if slots > 1 else "")
            + f" each; Ray {cluster['ray_address']})")
        total = sum(_frames_hint(j.input, config.max_frames) for j in todo)
        bar = tqdm(total=total or None, unit="frame", disable=not opts.progress, dynamic_ncols=True, file=sys.stderr)
        say = (lambda m: bar.write(m, file=sys.stderr)) if opts.progress else log  # above the bar, not through it
        pending = deque(todo)
        attempts: dict[str, int] = {}
        actors = [new_actor() for _ in range(n)]
        idle = [a for a in actors for _ in range(slots)]  # one entry per video an actor may run
        dead: set[int] = set()  # id() of actors whose process died (their other slots are void)
        try:  # started (and importable on every node) before the clock runs
            ray.get([a.identity.remote() for a in actors], timeout=START_TIMEOUT_S)
        except (RayError, ray.exceptions.GetTimeoutError) as e:
            raise FleetError(f"fleet workers did not start within {START_TIMEOUT_S:g} s: {_first_line(e)}") from e
        cluster["startup_s"] = round(time.perf_counter() - t0, 3)
        work_started = time.perf_counter()
        inflight: dict = {}  # ObjectRef -> (job, actor)
        frames_done = 0
        try:
            while pending or inflight:
                while pending and idle:
                    job = pending.popleft()
                    attempts[job.key] = attempts.get(job.key, 0) + 1
                    remove_partials(job)  # a killed attempt's temp files
                    actor = idle.pop()
                    inflight[actor.process.remote(job, digest, attempts[job.key])] = (job, actor)
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    job, actor = inflight.pop(ref)
                    try:
                        res = ray.get(ref)
                        if id(actor) not in dead:
                            idle.append(actor)
                    except RayActorError as e:  # the process died: retry on a fresh actor
                        if id(actor) not in dead:  # its other videos come back with the same error
                            dead.add(id(actor))
                            ray.kill(actor, no_restart=True)
                            fresh = new_actor()
                            idle = [a for a in idle if a is not actor] + [fresh] * slots
                        remove_partials(job)
                        why = _first_line(e)
                        if attempts[job.key] <= opts.retries:
                            say(f"fleet: worker died on {job.rel} (attempt {attempts[job.key]}): {why}; retrying")
                            pending.appendleft(job)
                            continue
                        res = {"status": "failed", "kind": "crash", "reason": f"worker died {attempts[job.key]} times; last: {why}"}
                    except (RayTaskError, RayError) as e:
                        if id(actor) not in dead:
                            idle.append(actor)
                        res = {"status": "failed", "kind": "error", "reason": _first_line(e)}
                    res["attempts"] = attempts[job.key]
                    rows[job.key] = _row(job, res)
                    frames_done += res.get("frames", 0) if res["status"] == "complete" else 0
                    if res["status"] == "failed":
                        say(f"failed: {job.input}: {res['reason']}")
                live = ray.get(board.snapshot.remote()) if inflight else {}
                running = {job.key for job, _ in inflight.values()}
                partial = sum(f for key, (att, f) in live.items() if key in running and att == attempts.get(key))
                bar.n = frames_done + partial
                failed = sum(r["status"] == "failed" for r in rows.values())
                bar.set_postfix(files=f"{sum(r['status'] != 'failed' for r in rows.values())}/{len(rows) + len(pending) + len(inflight)}",
                                failed=failed, refresh=False)
                bar.refresh()
        finally:
            bar.close()
            for _, actor in inflight.values():
                ray.kill(actor, no_restart=True)
        cluster["processing_s"] = round(time.perf_counter() - work_started, 3)
        cluster["processing_fps"] = round(frames_done / cluster["processing_s"], 2) if cluster["processing_s"] > 0 else None
        return cluster
    finally:
        if own:
            ray.shutdown()


def _init_ray(opts: FleetOptions) -> None:
    # ray.init installs its own SIGTERM handler (log and exit 1); the caller's (finish the
    # fleet report, remove partial outputs, exit 128 + the signal) is put back afterwards.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        _connect(opts)
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, h in handlers.items():
                if h is not None:
                    signal.signal(s, h)


def _connect(opts: FleetOptions) -> None:
    import ray

    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if opts.ray_address:
        _check_reachable(opts.ray_address)
        try:
            ray.init(address=opts.ray_address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise FleetError(f"cannot join the Ray cluster at {opts.ray_address} ({_first_line(e)}); a cluster with token "
                             f"authentication needs RAY_AUTH_MODE=token here too") from e
    else:
        # Sized to this machine; no dashboard (nothing to serve on a batch run), a small object
        # store (only result rows travel).
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE, **quiet)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect to host:port first: ray.init retries a dead address for minutes."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or address == "auto":
        return  # "auto" and the like: Ray resolves them itself
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise FleetError(f"cannot join the Ray cluster at {address}: {reason(e)}") from e


def _frames_hint(path: str, max_frames: int | None) -> int:
    """Frame count from the header for the progress bar; 0 when the container doesn't say."""
    try:
        with av.open(path, metadata_errors="ignore") as c:
            vs = c.streams.video[0]
            n = vs.frames or 0
            if not n and vs.duration and vs.average_rate:
                n = int(vs.duration * vs.time_base * vs.average_rate)
    except (av.FFmpegError, IndexError, OSError):
        return 0
    return min(n, max_frames) if max_frames else n


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _row(job: Job, res: dict) -> dict:
    return {"input": job.input, "output": job.output if res["status"] != "failed" else None,
            "report": job.report if res["status"] != "failed" else None, **res}


def _fleet_report(jobs, rows, source, outdir, cluster, wall_s, interrupted) -> dict:
    videos = [rows[j.key] for j in jobs]
    done = [r for r in videos if r["status"] == "complete"]
    frames = sum(r.get("frames", 0) for r in done)
    return {
        "fleet": {
            "input": source,
            "output_dir": outdir,
            "videos": len(videos),
            "complete": len(done),
            "skipped": sum(r["status"] == "skipped" for r in videos),
            "failed": sum(r["status"] == "failed" for r in videos),
            "failures_by_kind": _count(r.get("kind") for r in videos if r["status"] == "failed"),
            "retries": sum(max(0, r.get("attempts", 1) - 1) for r in videos),
            "frames": frames,
            "faces": sum(r.get("faces", 0) for r in done),
            "swapped": sum(r.get("swapped", 0) for r in done),
            "blurred_instead": sum(r.get("blurred_instead", 0) for r in done),
            "wall_s": round(wall_s, 3),
            "fps": round(frames / wall_s, 2) if wall_s > 0 and frames else None,
            "interrupted": interrupted,
            **cluster,
        },
        "videos": videos,
    }


def _count(items) -> dict:
    out: dict = {}
    for k in items:
        out[k] = out.get(k, 0) + 1
    return out
