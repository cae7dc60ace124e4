"""The package layout: each top-level package imports alone, and no module-level import cycles.

`import trackers` once failed because `pipeline/__init__` eagerly imported the run, which
imported `trackers`: a cycle only a fresh interpreter shows, so these checks start one.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "engines", "trackers")


@pytest.mark.parametrize("name", [*PACKAGES, "pipeline.cli", "pipeline.run.file", "pipeline.live.run", "pipeline.fleet.runner",
                                  "pipeline.audit.cli", "pipeline.detect", "pipeline.identity.stage", "pipeline.anonymize.swap"])
def test_imports_alone_in_a_fresh_interpreter(name):
    r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr.strip().splitlines()[-1]


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def module_imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports at module level (function-level imports are
    deferred, so they cannot form a cycle at import time). Importing `a.b.c` runs `a` and
    `a.b` first, so those count too, except a module's own ancestors: they are already
    running when it is imported (a package's __init__ importing its own modules is no cycle)."""
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                parts = t.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name in mods and name != mod and not mod.startswith(name + "."):
                        deps.add(name)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_level_import_cycles():
    assert cycles(module_imports(_modules())) == []


def test_the_cycle_check_sees_a_cycle():
    """The check itself: a package __init__ that eagerly imports a module importing a sibling
    package that imports the first package back (the old `import trackers` failure)."""
    graph = {"pipeline": {"pipeline.run"}, "pipeline.run": {"trackers"}, "trackers": {"pipeline.core"},
             "pipeline.core": {"pipeline"}}
    assert cycles(graph) == [["pipeline", "pipeline.core", "pipeline.run", "trackers"]]


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _layout_rows() -> dict[str, str]:
    text = ARCHITECTURE.read_text()
    section = text[text.index("## Layout"):]
    end = section.find("\n## ", 5)
    section = section if end < 0 else section[:end]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            first, what = line.split("|")[1:3]
            for path in first.replace("`", "").split(","):
                rows[path.strip()] = what
    return rows


def test_the_layout_table_matches_the_tree():
    """docs/architecture.md's layout table: every package under pipeline/ has a row naming
    each of its modules, and every path in the table exists: the table is how a new reader
    finds the data flow."""
    rows = _layout_rows()
    for path in rows:
        assert (ROOT / path).exists(), f"docs/architecture.md layout names {path}, which does not exist"
    for pkg in sorted(p for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").exists()):
        row = rows.get(f"pipeline/{pkg.name}/")
        assert row is not None, f"docs/architecture.md layout has no row for pipeline/{pkg.name}/"
        for module in sorted(pkg.glob("*.py")):
            if module.name != "__init__.py":
                assert module.name in row, f"docs/architecture.md layout row for pipeline/{pkg.name}/ does not name {module.name}"
    for module in (ROOT / "pipeline").glob("*.py"):
        if module.name != "__init__.py":
            assert f"pipeline/{module.name}" in rows, f"docs/architecture.md layout does not name pipeline/{module.name}"
