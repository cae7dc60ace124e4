"""The package layout: each top-level package imports alone, no import cycles (module level,
and counting imports inside functions), and `engines` uses nothing of `pipeline` but its core.

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


def _imports(node: ast.AST, mod: str, is_pkg: bool, mods) -> tuple[set[str], set[str]]:
    """One statement's project modules: (named, ancestors). Named: the module it takes names
    from, or each submodule it imports; ancestors: the packages above those, whose __init__
    runs first. A module's own ancestors are left out: they are already running when it is
    imported (a package's __init__ importing its own modules is no cycle)."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    else:
        return set(), set()
    named, ancestors = set(), set()
    for t in targets:
        parts = t.split(".")
        prefixes = [p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in mods]
        if prefixes:
            named.add(prefixes[-1])
            ancestors.update(prefixes[:-1])
    own = {mod, *(m for m in named | ancestors if mod.startswith(m + "."))}
    return named - own, ancestors - own


def module_imports(mods: dict[str, Path], everywhere: bool = False) -> dict[str, set[str]]:
    """Module → the project modules it needs.

    By default, what it imports at module level: the import-time graph. Importing `a.b.c`
    runs `a` and `a.b` first, so those count too.

    With `everywhere`, imports inside functions and methods count as well: deferred, so they
    cannot form a cycle at import time, but two modules that each need the other are still a
    layering circle. A package above an imported module then stands for what its __init__
    imports at module level (what runs when the module is imported), not for the functions in
    it: `pipeline.live.cli` importing `pipeline.cli.args` needs `pipeline/cli/__init__`'s
    module-level imports, not the command its `main()` imports when called."""
    body: dict[str, tuple[set[str], set[str]]] = {}
    anywhere: dict[str, tuple[set[str], set[str]]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text())
        for out, nodes in ((body, tree.body), (anywhere, ast.walk(tree))):
            named, ancestors = set(), set()
            for node in nodes:
                n, a = _imports(node, mod, is_pkg, mods)
                named |= n
                ancestors |= a
            out[mod] = named, ancestors
    if not everywhere:
        return {mod: named | ancestors for mod, (named, ancestors) in body.items()}

    def import_time(pkg: str, seen: set[str]) -> set[str]:
        """What running `pkg`'s __init__ (and the packages above its imports) imports."""
        if pkg in seen:
            return set()
        seen.add(pkg)
        named, ancestors = body[pkg]
        return named.union(*(import_time(a, seen) for a in ancestors))

    graph = {}
    for mod, (named, ancestors) in anywhere.items():
        deps = set(named).union(*(import_time(a, set()) for a in ancestors))
        deps.discard(mod)
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


def test_no_import_cycles_counting_imports_inside_functions():
    """The layering: with function-level imports counted too, no two modules (or packages)
    need each other."""
    assert cycles(module_imports(_modules(), everywhere=True)) == []


def test_engines_import_nothing_from_the_pipeline_but_its_core():
    """`engines` sits below `pipeline`: it may use `pipeline.core` (records, errors, alignment),
    nothing else of it, not even inside a function."""
    mods = _modules()
    graph = module_imports(mods, everywhere=True)
    bad = {mod: sorted(d for d in deps if (d == "pipeline" or d.startswith("pipeline."))
                       and d != "pipeline.core" and not d.startswith("pipeline.core."))
           for mod, deps in graph.items() if mod == "engines" or mod.startswith("engines.")}
    assert {mod: deps for mod, deps in bad.items() if deps} == {}


def test_function_level_imports_are_seen(tmp_path):
    """The check itself: an import inside a method counts with `everywhere`, not without."""
    (tmp_path / "a.py").write_text("class A:\n    def f(self):\n        from b import x\n")
    (tmp_path / "b.py").write_text("import a\n")
    mods = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    assert cycles(module_imports(mods)) == []
    assert cycles(module_imports(mods, everywhere=True)) == [["a", "b"]]


def test_a_package_above_an_import_stands_for_its_module_level_imports(tmp_path):
    """`cli/__init__.py` imports `cli.args` at module level and `cli.command` in `main()`;
    `command` imports `sub`, which uses `cli.args`: no circle (importing `cli.args` runs only
    the __init__'s module level). `sub` taking `main` from `cli` itself would be one."""
    (tmp_path / "cli").mkdir()
    files = {"cli": "cli/__init__.py", "cli.args": "cli/args.py", "cli.command": "cli/command.py", "sub": "sub.py"}
    (tmp_path / "cli/__init__.py").write_text("from cli.args import x\ndef main():\n    from cli.command import run\n")
    (tmp_path / "cli/args.py").write_text("x = 1\n")
    (tmp_path / "cli/command.py").write_text("def run():\n    from sub import go\n")
    (tmp_path / "sub.py").write_text("from cli.args import x\n")
    mods = {name: tmp_path / path for name, path in files.items()}
    assert cycles(module_imports(mods, everywhere=True)) == []
    (tmp_path / "sub.py").write_text("from cli import main\n")
    assert cycles(module_imports(mods, everywhere=True)) == [["cli", "cli.command", "sub"]]


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
