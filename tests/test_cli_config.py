"""Each flag of the main command reaches its RunConfig field and the run report's settings.

The table is written by hand from the help text, not generated from the parser or the
dataclass: a flag wired to the wrong field, or left out of the report, fails here.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

# flag words → (RunConfig attribute path, the value it must hold); every value differs from its default
FLAGS = [
    (["--mode", "pixelate"], "mode", "pixelate"),
    (["--detect-size", "320"], "detect_size", 320),
    (["--threshold", "0.6"], "threshold", 0.6),
    (["--detector", "centerface"], "detector", "centerface"),
    (["--recall", "plain"], "recall", "plain"),
    (["--batch-size", "2"], "batch_size", 2),
    (["--max-frames", "3"], "max_frames", 3),
    (["--keep-metadata"], "keep_metadata", True),
    (["--crf", "31"], "crf", 31),
    (["--preset", "ultrafast"], "preset", "ultrafast"),
    (["--gallery", "G.npz"], "gallery", "G.npz"),
    (["--swap-size", "512"], "swap.size", 512),
    (["--min-swap-face", "55"], "swap.min_face", 55.0),
    (["--defense-noise", "3"], "swap.defense_noise", 3.0),
    (["--embedder", "arcface-r50"], "embedder", "arcface-r50"),
    (["--identity-scope", "fleet", "--person-registry", "R.npz"], "identity.scope", "fleet"),
    (["--identity-scope", "fleet", "--person-registry", "R.npz"], "person_registry", "R.npz"),
    (["--seed", "7"], "identity.seed", 7),
    (["--device", "cpu"], "device", "cpu"),
    (["--backend", "torch"], "backend", "torch"),
    (["--precision", "bf16"], "precision", "bf16"),
    (["--no-cuda-graphs"], "cuda_graphs", False),
    (["--compile"], "compile", True),
    (["--no-hwdec"], "hwdec", False),
]

# the live and fleet groups' flags → their options' fields (pipeline.live.run.LiveOptions, pipeline.fleet.runner.FleetOptions)
OPTIONS = [
    (["--segment-seconds", "5"], "live", "segment_seconds", 5.0),
    (["--max-latency-ms", "250"], "live", "max_latency_ms", 250.0),
    (["--reconnect-timeout", "0"], "live", "reconnect_timeout_s", 0.0),
    (["--rtsp-transport", "udp"], "live", "transport", "udp"),
    (["--workers", "3"], "fleet", "workers", 3),
    (["--worker-cpus", "4"], "fleet", "worker_cpus", 4),
    (["--videos-per-worker", "2"], "fleet", "videos_per_worker", 2),
    (["--ray-address", "auto"], "fleet", "ray_address", "auto"),
    (["--retries", "0"], "fleet", "retries", 0),
    (["--force"], "fleet", "force", True),
]


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("words, field, value", FLAGS, ids=[f"{w[0]}->{f}" for w, f, _ in FLAGS])
def test_a_flag_sets_its_config_field(words, field, value):
    from pipeline.cli.command import _config, build_parser
    from pipeline.run.config import RunConfig

    args = build_parser().parse_args(["in.mp4", "-o", "out.mp4", *words])
    config = _config(args)
    assert _get(config, field) == value
    assert _get(RunConfig(), field) != value, "the table's value must differ from the default, or the test proves nothing"


def test_a_run_reports_the_settings_its_flags_gave(synthetic, tmp_path):
    """One real run with every report-visible setting away from its default."""
    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--report", tmp_path / "r.json", "-q",
                  "--mode", "pixelate", "--detector", "centerface", "--recall", "plain", "--batch-size", 2, "--crf", 31,
                  "--preset", "ultrafast", "--threshold", 0.6, "--detect-size", 320, "--keep-metadata", "--max-frames", 3)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    s = report["settings"]
    assert report["mode"] == "pixelate"
    assert (s["detector"], s["recall"], s["batch_size"], s["crf"], s["preset"], s["threshold"], s["detect_size"], s["keep_metadata"]) == \
        ("centerface", "plain", 2, 31, "ultrafast", 0.6, 320, True)


@pytest.mark.parametrize("words, kind, field, value", OPTIONS, ids=[f"{w[0]}->{k}.{f}" for w, k, f, _ in OPTIONS])
def test_a_live_or_fleet_flag_sets_its_option(words, kind, field, value):
    from pipeline.cli.args import collect
    from pipeline.cli.command import build_parser
    from pipeline.fleet.runner import FleetOptions
    from pipeline.live.run import LiveOptions

    cls = {"live": LiveOptions, "fleet": FleetOptions}[kind]
    options = collect(build_parser().parse_args(["in", "-o", "out", *words]), kind, cls)
    assert getattr(options, field) == value and getattr(cls(), field) != value


def test_help_shows_each_default_from_the_configuration():
    """Defaults are the dataclasses' (written once there); the help text shows them."""
    from pipeline.cli.command import build_parser
    from pipeline.fleet.runner import FleetOptions
    from pipeline.live.run import LiveOptions
    from pipeline.run.config import RunConfig

    text = " ".join(build_parser().format_help().split())
    c, live, fleet = RunConfig(), LiveOptions(), FleetOptions()
    for shown in (f"frames per detector batch (default {c.batch_size})", f"constant rate factor, 0-51 (default {c.crf};",
                  f"generator crop size (default {c.swap.size})", f"older than this (default {live.max_latency_ms:g})",
                  f"(default {fleet.retries}; bad input"):
        assert shown in text
