"""The README's commands are real (the test command is what CI runs, the run command works),
the README stays short (≤ 10 KB: what it does, install, recipes, the flags you use) and every
link in it and in the reference it points to (docs/, benchmarks/README.md) resolves.
The other commands of the README and docs: tests/test_docs.py."""

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


README_MAX_BYTES = 10 * 1024
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(path):
    """Relative link targets in a markdown file, anchors dropped (URLs and pure anchors skipped)."""
    out = []
    for target in _LINK.findall(path.read_text()):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        out.append(target.split("#")[0])
    return out


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; the reference belongs in docs/ (README ≤ {README_MAX_BYTES})"


def test_readme_links_every_doc_and_each_exists():
    """The README's docs index names each reference page, and every link in it resolves."""
    targets = links(ROOT / "README.md")
    for t in targets:
        assert (ROOT / t).exists(), f"README links {t}, which does not exist"
    linked = {(ROOT / t).resolve() for t in targets}
    for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]:
        assert page.resolve() in linked, f"README does not link {page.relative_to(ROOT)}"


def test_every_relative_link_in_the_docs_resolves():
    for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]:
        for t in links(page):
            assert (page.parent / t).exists(), f"{page.relative_to(ROOT)} links {t}, which does not exist"


_REPO_PATH = re.compile(r"`((?:pipeline|engines|trackers|benchmarks|tests|docs|results)/[\w.*/-]*?)`")


def test_every_file_the_docs_name_exists():
    """A path in backquotes (`benchmarks/results/recall.md`, `pipeline/track/guard.py`, …) in
    the README, docs/ or benchmarks/README.md names a file or folder of the checkout; a glob
    (`*`) stands for at least one; benchmarks/README.md's `results/…` are beside it; a
    placeholder in capitals (`results/NAME.md`) is no path."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]:
        for path in _REPO_PATH.findall(page.read_text()):
            if re.search(r"[A-Z]{3,}", path):
                continue
            base = ROOT / "benchmarks" if path.startswith("results/") else ROOT
            if "*" in path:
                assert list(base.glob(path)), f"{page.relative_to(ROOT)} names {path}: no such files"
            else:
                assert (base / path).exists(), f"{page.relative_to(ROOT)} names {path}, which does not exist"


def test_the_link_check_sees_links(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("[a](docs/a.md) [b](https://x.org/b.md) [c](#c) [d](../d.md#part)\n")
    assert links(page) == ["docs/a.md", "../d.md"]


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
