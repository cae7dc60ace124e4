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
