"""Every command in README.md, docs/*.md and benchmarks/README.md is real.

A command in a ```bash block (`python run_pipeline.py …`, `anonswap …`, `python -m …`) is
either run here, on one short synthetic clip, or parsed with the real argument parser: the
ones marked `# needs: <what>` (weights you fetch, a camera, a cluster…) and the ones another
test already runs end to end (ALREADY_RUN). Either way a renamed flag or subcommand fails
here. The README's `readme-run` and `readme-test` blocks belong to tests/test_readme.py.
`python benchmarks/X.py` and `bash benchmarks/…` lines take minutes: their script must exist
and name every flag the line uses.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
CLI_PREFIXES = ("python run_pipeline.py ", "anonswap ", "python -m ")
BENCH_PREFIXES = ("python benchmarks/", "bash benchmarks/")

# Commands the rest of the suite runs end to end: parsed here, not run again.
ALREADY_RUN = {
    "python run_pipeline.py videos/ -o videos_anonymized/ --report fleet.json":
        "tests/test_fleet.py::test_fleet_runs_isolates_bad_input_and_resumes",
    "python run_pipeline.py demo.mp4 -o demo_anonymized.mp4 --boxes demo_boxes.jsonl --audit":
        "tests/test_readme.py::test_readme_run_command_works",
}

# Run first, by the clip fixture (and so not again by test_command_runs), because other
# commands read what it writes (a run's output, boxes and report for the audit); it must
# stay in the docs (docs/audit.md).
SETUP = "python run_pipeline.py demo.mp4 -o demo_anonymized.mp4 --boxes demo_boxes.jsonl --report demo_report.json"

# A path in a command: replaced by the same name in the test's folder.
_PATH = re.compile(r"^[\w.-]+(/[\w.-]*)*\.(mp4|m4v|mov|mkv|ts|json|jsonl|html|npz|csv|txt|onnx|pth)$|^[\w.-]+/$")


@dataclass(frozen=True)
class Command:
    doc: str      # e.g. docs/audit.md
    line: str     # the command, without its comment
    needs: str    # what a `# needs:` comment says it needs, else ""

    def __str__(self):
        return f"{self.doc}: {self.line}"


def _marked_blocks(text: str) -> set[int]:
    """Start offsets of the README's marked blocks (tests/test_readme.py runs those)."""
    return {m.start(1) for m in re.finditer(r"<!-- readme-(?:run|test) -->\s*(```)", text)}


def doc_commands() -> list[Command]:
    out = []
    for path in DOCS:
        text = path.read_text()
        marked = _marked_blocks(text)
        for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
            if block.start() in marked:
                continue
            body = re.sub(r"\\\n\s*", " ", block.group(1))
            for raw in body.splitlines():
                needs = re.search(r"\s#\s*needs:\s*(.+)$", raw)
                line = raw.split(" #")[0].strip()
                for part in (p.strip() for p in line.split("&&")):
                    if part.startswith(CLI_PREFIXES + BENCH_PREFIXES):
                        out.append(Command(str(path.relative_to(ROOT)), part, needs.group(1).strip() if needs else ""))
    return out


COMMANDS = doc_commands()
CLI = [c for c in COMMANDS if c.line.startswith(CLI_PREFIXES)]
BENCH = [c for c in COMMANDS if c.line.startswith(BENCH_PREFIXES)]
TO_RUN = [c for c in CLI if not c.needs and c.line not in ALREADY_RUN and c.line != SETUP]


def cli_words(line: str) -> list[str]:
    """The words after the program: `python run_pipeline.py X` and `anonswap X` → [X…]."""
    words = shlex.split(line)
    if words[:2] == ["python", "run_pipeline.py"]:
        return words[2:]
    if words[0] == "anonswap":
        return words[1:]
    raise AssertionError(f"not a run_pipeline.py command: {line}")


def parse(words: list[str]):
    """The argparse parser that `pipeline.cli.command` would hand these words to; a usage error
    (renamed flag, unknown choice) fails the test with argparse's message."""
    from pipeline.cli.command import SUBCOMMANDS, build_parser

    if words and words[0] in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(SUBCOMMANDS[words[0]])
        parser, words = module.build_parser(), (words if words[0] == "perface" else words[1:])
    else:
        parser = build_parser()
    try:
        return parser.parse_args(words)
    except SystemExit as e:
        pytest.fail(f"does not parse (exit {e.code}): {' '.join(words)}")


def test_the_docs_have_commands():
    """The extraction itself: the recipes and the reference pages are found."""
    docs = {c.doc for c in CLI}
    assert {"README.md", "docs/audit.md", "docs/cli.md", "docs/swap.md", "docs/live.md"} <= docs, docs
    assert len(TO_RUN) >= 5 and BENCH
    assert any(c.line == SETUP for c in CLI), f"the setup command left the docs: {SETUP}"


@pytest.mark.parametrize("cmd", CLI, ids=str)
def test_every_command_parses(cmd):
    if cmd.line.startswith("python -m "):
        module = shlex.split(cmd.line)[2]
        assert module == "pipeline.synthetic", f"{cmd}: add a parser check for python -m {module}"
        return  # run by test_command_runs
    parse(cli_words(cmd.line))


@pytest.mark.parametrize("words", [["demo.mp4", "-o", "x.mp4", "--recal", "fast"], ["demo.mp4", "-o", "x.mp4", "--mode", "swirl"],
                                   ["models", "fetch", "simswap-999"], ["audit", "a.mp4", "b.mp4", "-o", "a.json", "--htm", "a.html"],
                                   ["gallery", "build", "faces/", "--label", "x.csv", "-o", "g.npz"], ["perface", "train", "--epoch", "3"]])
def test_a_renamed_flag_or_choice_fails_the_parse(words):
    """The check itself: what a doc line would look like after a flag or choice was renamed."""
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse(words)


@pytest.mark.parametrize("line", sorted(ALREADY_RUN))
def test_already_run_commands_are_still_in_the_docs_and_their_test_exists(line):
    assert line in {c.line for c in CLI}, f"ALREADY_RUN names a command the docs no longer have: {line}"
    file, name = ALREADY_RUN[line].split("::")
    assert re.search(rf"^def {name}\(", (ROOT / file).read_text(), re.M), f"{ALREADY_RUN[line]} does not exist"


@pytest.mark.parametrize("cmd", [c for c in CLI if c.needs], ids=str)
def test_what_a_command_needs_is_said(cmd):
    """`# needs:` says what, in words a reader can act on."""
    assert len(cmd.needs) >= 3, cmd


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One short clip (15 frames, 320×240, about half a second) and the setup run's output,
    boxes and report, in a folder of its own; each command's file names point into it."""
    from pipeline.synthetic import make_video

    d = tmp_path_factory.mktemp("docs")
    make_video(str(d / "demo.mp4"), width=320, height=240, frames=15)
    res = run_cli(*substitute(cli_words(SETUP), d), "-q", timeout=120)
    assert res.returncode == 0, f"{SETUP}\n{res.stderr}"
    return d


def substitute(words: list[str], folder: Path) -> list[str]:
    return [str(folder / w) if _PATH.match(w) and "://" not in w else w for w in words]


@pytest.mark.parametrize("cmd", TO_RUN, ids=str)
def test_command_runs(cmd, workspace):
    """Runs the command as written, file names moved into the workspace; every file it names
    exists afterwards (its inputs, and the outputs it wrote)."""
    words = shlex.split(cmd.line)
    if words[:3] == ["python", "-m", "pipeline.synthetic"]:
        from pipeline.synthetic import main

        argv = substitute(words[3:], workspace)
        if "--frames" not in argv:
            argv += ["--frames", "15", "--width", "320", "--height", "240"]
        assert main(argv) == 0, cmd
        files = [w for w in argv if w.startswith(str(workspace))]
    else:
        argv = substitute(cli_words(cmd.line), workspace)
        res = run_cli(*argv, timeout=120)
        assert res.returncode == 0, f"{cmd}\n{res.stderr[-2000:]}"
        files = [w for w in argv if w.startswith(str(workspace))]
    missing = [f for f in files if not Path(f).exists()]
    assert not missing, f"{cmd}: did not write {missing}"
    for f in files:
        if f.endswith(".json"):
            json.loads(Path(f).read_text())


@pytest.mark.parametrize("cmd", BENCH, ids=str)
def test_benchmark_commands_name_real_scripts_and_flags(cmd):
    words = shlex.split(cmd.line)
    script = ROOT / words[1]
    assert script.is_file(), f"{cmd}: {words[1]} does not exist"
    source = script.read_text()
    for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
        assert f'"{flag}"' in source or f"'{flag}'" in source or flag in source, f"{cmd}: {script.name} has no {flag}"


def test_the_runs_use_no_weights_the_user_fetches():
    """The commands run here need nothing downloaded: none asks for swap mode, a gallery or a
    fetch (those are marked `# needs:`)."""
    for cmd in TO_RUN:
        words = cmd.line.split()
        assert "fetch" not in words and "--gallery" not in words and "swap" not in words, cmd


def test_no_stray_workspace_files_outside_the_tmp_folder():
    """Substitution covers every file name the run commands use (nothing lands in the checkout)."""
    for cmd in TO_RUN:
        words = shlex.split(cmd.line)
        for w in words[3:] if words[1] == "-m" else cli_words(cmd.line):
            if not w.startswith("-") and ("." in w or "/" in w) and "://" not in w and not w.replace(".", "").isdigit():
                assert _PATH.match(w), f"{cmd}: {w} looks like a file but would not be moved into the tmp folder"



# Flags the docs name that belong to another program: the file that must still have each.
OTHER_PROGRAMS_FLAGS = {
    "--keep": None,                                 # docs/cli.md: the abbreviation we refuse
    "--use_mask": None,                             # SimSwap's own option
    "--write-baselines": "benchmarks/quality_gates.py",
    "--check": "benchmarks/attributes.py",
    "--quick": "benchmarks/gpu_throughput.py",
    "--only": "benchmarks/gpu/run_on_device.sh",
    "--loop": "tests/rtsp_server.py",
}


def _all_options() -> set[str]:
    import argparse
    import importlib

    from pipeline.cli.command import SUBCOMMANDS, build_parser

    def options(p):
        found = set()
        for a in p._actions:
            found.update(a.option_strings)
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    found |= options(sub)
        return found

    known = options(build_parser())
    for module in SUBCOMMANDS.values():
        known |= options(importlib.import_module(module).build_parser())
    return known


def test_every_flag_the_docs_name_exists():
    """A `--flag` anywhere in the README, docs/ or benchmarks/README.md (tables, prose, text
    blocks) is an option of some anonswap command, or of the named other program."""
    known = _all_options()
    for flag, owner in OTHER_PROGRAMS_FLAGS.items():
        assert flag not in known, f"{flag} is an anonswap option now: drop it from OTHER_PROGRAMS_FLAGS"
        if owner:
            assert flag in (ROOT / owner).read_text(), f"{owner} has no {flag}"
    for page in DOCS:
        for flag in sorted(set(re.findall(r"(?<![\w-])--[a-z][\w-]*", page.read_text()))):
            assert flag in known or flag in OTHER_PROGRAMS_FLAGS, f"{page.relative_to(ROOT)} names {flag}, which no command has"


def test_docs_cli_names_every_option():
    """The other way round: every long option of every command is in docs/cli.md, the reference
    the README sends readers to for "every command and flag"."""
    text = (ROOT / "docs" / "cli.md").read_text()
    missing = sorted(o for o in _all_options() if o.startswith("--") and o != "--help" and not re.search(rf"{re.escape(o)}(?![\w-])", text))
    assert not missing, f"docs/cli.md does not name {missing}"
