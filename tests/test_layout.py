"""The layout's rules, checked on the source: every import inside ``spectra/`` goes to the same
or a lower layer of docs/architecture.md's table (imports inside functions count), no import
cycle, no library module importing the CLI or typer, and no Python file (library, CLI, tests,
benchmarks, scripts) longer than 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "spectra"
MAX_LINES = 500
#: every folder of the project's own Python code (the rule is the project's, not only the library's)
CODE_FOLDERS = ("spectra", "cli", "tests", "bench", "scripts", "reproduction")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(path: Path, known: set[str], this: str | None = None) -> set[str]:
    """Every spectra module ``path`` imports, at any depth of the file (functions included).
    ``from pkg import name`` counts ``pkg.name`` when that is a module, else ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = this or module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("spectra") and name != this:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name and name != this:
                    found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_inside_spectra() -> None:
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" ↔ ".join(c) for c in found)


def test_the_cycle_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from spectra.audit import audit\n    import spectra.errors\n")
    assert imports_of(src, {"spectra.audit", "spectra.errors"}, this="spectra.m") == {"spectra.audit", "spectra.errors"}


#: docs/architecture.md's layers: a module imports only from its own layer or below
LAYERS = {
    0: ("spectra.errors", "spectra.device", "spectra.provenance", "spectra._lazy", "spectra.progress", "spectra.settings",
        "spectra.measured", "spectra._version"),
    1: ("spectra.spectral",),
    2: ("spectra.io",),
    3: ("spectra.report",),
    4: ("spectra.data",),
    5: ("spectra.eval",),
    6: ("spectra.audit", "spectra.audit_report", "spectra.forgetting", "spectra.policy", "spectra.threshold",
        "spectra.defenses"),
    7: ("spectra.train",),
    8: ("spectra.study", "spectra.demo", "spectra.canary", "spectra.fleet"),
    9: ("spectra.testing", "spectra"),  # the package's own __init__ re-exports from every layer
}


def layer_of(module: str) -> int:
    """The layer of ``module``: that of the longest prefix :data:`LAYERS` names."""
    best = max((p for ps in LAYERS.values() for p in ps if module == p or module.startswith(p + ".")), key=len,
               default=None)
    if best is None:
        raise KeyError(f"{module} is in no layer of docs/architecture.md (add it to LAYERS and the table)")
    return next(n for n, ps in LAYERS.items() if best in ps)


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
            for a, deps in sorted(g.items()) for b in sorted(deps) if layer_of(b) > layer_of(a)]


def test_every_import_goes_to_the_same_or_a_lower_layer() -> None:
    found = upward_imports(graph())
    assert not found, "upward imports:\n" + "\n".join(found)


def test_the_layer_check_sees_an_upward_import() -> None:
    assert upward_imports({"spectra.report.x": {"spectra.study.figures"}, "spectra.study.y": {"spectra.io"}}) == [
        "spectra.report.x (layer 3) imports spectra.study.figures (layer 8)"]
    assert layer_of("spectra.audit_report") == 6 and layer_of("spectra.io.keys") == 2


def test_the_research_package_stays_out_of_the_wheel_and_the_library() -> None:
    """reproduction/ is research tooling: the wheel's package list does not match it and no
    library module imports it (the wheel would then need it)."""
    import fnmatch
    import tomllib

    find = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert not any(fnmatch.fnmatch("reproduction", pat) for pat in find["include"])
    assert any(fnmatch.fnmatch("spectra.study", pat) for pat in find["include"])  # the demo's part stays
    # setuptools' find (not find_namespace) ships only folders with an __init__.py: a folder without
    # one is missing from the wheel while an editable install still imports it
    missing = sorted(str(d.relative_to(ROOT.parent)) for d in ROOT.rglob("*") if d.is_dir() and any(d.glob("*.py"))
                     and not (d / "__init__.py").is_file())
    assert not missing, f"library folders the wheel would leave out (no __init__.py): {missing}"
    def top_level_imports(path: Path) -> set[str]:
        tops = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops.add((node.module or "").split(".")[0])
        return tops

    offenders = [name for name, path in modules().items() if "reproduction" in top_level_imports(path)]
    assert not offenders, f"library modules importing reproduction/: {offenders}"


def test_library_never_imports_the_cli() -> None:
    offenders = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("typer", "spectra_cli", "click") for n in names):
                offenders.append(name)
    assert not offenders, f"library modules importing the CLI layer: {sorted(set(offenders))}"


def code_files() -> list[Path]:
    return sorted(p for folder in CODE_FOLDERS for p in (ROOT.parent / folder).rglob("*.py"))


@pytest.mark.parametrize("path", code_files(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_python_file_over_500_lines(path: Path) -> None:
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT.parent)} has {n} lines (limit {MAX_LINES})"


def test_the_wheel_holds_the_product_its_data_and_no_research(tmp_path: Path) -> None:
    """Build the wheel and list it: every library package (the demo's spectra.study included),
    the forgetting model the audit reads, the CLI — and nothing of reproduction/ or tests/."""
    import subprocess
    import sys
    import zipfile

    import importlib.util

    # build with this environment's setuptools when it can make wheels by itself (>= 70.1, or with
    # the wheel package); a fresh Python 3.11 venv's bundled 65.x cannot, and then pip's isolated build
    # fetches one from the registry the suite installs from anyway
    try:
        import setuptools

        local = tuple(int(x) for x in setuptools.__version__.split(".")[:2]) >= (70, 1) or \
            importlib.util.find_spec("wheel") is not None
    except ImportError:
        local = False
    isolation = ["--no-build-isolation"] if local else []
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT.parent), "--no-deps", *isolation,
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names if "dist-info" not in n}
    assert tops == {"spectra", "spectra_cli"}, tops
    assert {"spectra/forgetting_model.json", "spectra/study/execute.py", "spectra/demo.py"} <= names
    assert {str(p.relative_to(ROOT.parent)) for p in ROOT.rglob("*.py")} <= names  # every library module


#: public functions allowed more than 8 parameters, and why (anything else that grows past 8 fails)
WIDE_ON_PURPOSE = {
    "spectra.spectral.topk.top_singular": "the randomized SVD's tuning knobs, keywords as in scipy's svds",
    "spectra.threshold.margins.threshold_from_margins": "four margin tensors and the module's σ's: pure math",
    "spectra.eval.metrics.evaluate": "the scoring core under run_eval, which takes EvalSettings",
}


def test_public_functions_take_settings_objects_not_long_parameter_lists() -> None:
    wide = {}
    for path in ROOT.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
                if len(names) > 8:
                    wide[f"{module}.{node.name}"] = len(names)
    assert set(wide) <= set(WIDE_ON_PURPOSE), {k: v for k, v in wide.items() if k not in WIDE_ON_PURPOSE}
    assert max(wide.values(), default=0) <= 11
