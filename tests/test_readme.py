"""The README's commands are real: the test command is what CI runs, the run command works."""

import re
import shlex
import subprocess
import sys


from conftest import ROOT, read_video


def _block(marker):
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)\n```", text, re.S)
    assert m, f"README has no {marker} block"
    return m.group(1).strip()


def test_ci_runs_the_readme_test_command():
    assert _block("readme-test") in (ROOT / ".ci" / "run").read_text()


def test_readme_run_command_works(tmp_path):
    steps = [s.strip() for s in _block("readme-run").split("&&")]
    assert steps[0] == "pip install torch==2.13.0", "torch's CPU wheel must be installed before anything else"
    runnable = [s for s in steps if s.startswith("python ")]  # the installs ran already (CI / this environment)
    assert len(runnable) == 2
    for step in runnable:
        argv = shlex.split(step)
        argv[0] = sys.executable
        if argv[1] == "run_pipeline.py":
            argv[1] = str(ROOT / "run_pipeline.py")
        res = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env())
        assert res.returncode == 0, f"{step}\n{res.stderr}"
    assert len(read_video(tmp_path / "demo_anonymized.mp4")["frames"]) == len(read_video(tmp_path / "demo.mp4")["frames"])
    assert (tmp_path / "demo_report.json").exists() and (tmp_path / "demo_boxes.jsonl").exists()
    audit = __import__("json").loads((tmp_path / "demo_anonymized.audit.json").read_text())
    assert audit["leaks"]["count"] == 0 and audit["faces"] > 0 and (tmp_path / "demo_anonymized.audit.html").exists()


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
