"""The package's layering, read from the source: imports point one way only, down the layers.

Every ``import`` in ``src/kava`` counts — at module level, inside functions (lazy imports) and
under ``TYPE_CHECKING`` — because each is a dependency a reader must follow and a refactoring must
respect, whether or not Python executes it at import time. Two checks: no module reaches itself
through imports (no cycle), and no import points to a higher layer (`LAYERS`). A failure prints
the offending edges, with the line of each import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first; a module may import its own layer or a lower one. A module matches a prefix when
# it is the prefix or lies inside it. Every module must be placed: a new one is placed here first.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("kava.runtime", "kava.methods")),
    ("data, method config, compression and losses", ("kava.data", "kava.config", "kava.curricula", "kava.compression", "kava.losses")),
    ("model", ("kava.model",)),
    ("training and evaluation", ("kava.training", "kava.evaluation")),
    ("inspection", ("kava.inspection",)),
    ("demo (the synthetic-task backend)", ("kava.demo",)),
    ("experiments and benchmark", ("kava.experiments", "kava.benchmark")),
    ("API and commands", ("kava.api", "kava.infer_cli", "kava.cli")),
]

# The layering rules of docs/design.md, checked on their own so a failure names them plainly.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "kava.model": ("kava.evaluation", "kava.inspection", "kava.training", "kava.experiments", "kava.demo",
                   "kava.benchmark", "kava.api", "kava.cli", "kava.infer_cli"),
    "kava.evaluation": ("kava.inspection", "kava.experiments", "kava.demo", "kava.benchmark", "kava.api",
                        "kava.infer_cli", "kava.cli"),
}


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules: set[str]) -> str | None:
    """The kava module ``name`` refers to: itself, or the longest known module containing it
    (``from kava.model.cache import KV`` → ``kava.model.cache``); None outside kava."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(src: Path = SRC) -> dict[str, dict[str, int]]:
    """module → {imported kava module: line of the first such import}, every import counted."""
    files = {module_name(p, src): p for p in (src / "kava").rglob("*.py")}
    modules = set(files)
    graph: dict[str, dict[str, int]] = {}
    for mod, path in sorted(files.items()):
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1 packages
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import sub` imports the submodule; `from mod import name` the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                found = resolve(target, modules)
                if found is not None and found != mod:
                    edges.setdefault(found, node.lineno)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    if module == "kava":  # the package's own __init__ (public re-exports, if any): above everything it names
        return len(LAYERS) - 1
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(inside(module, p) for p in prefixes):
            return rank
    return None


def upward_edges(graph: dict[str, dict[str, int]]) -> list[str]:
    """Each import of a higher layer, as one readable line."""
    bad = []
    for mod, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            a, b = layer_of(mod), layer_of(target)
            if a is not None and b is not None and b > a:
                bad.append(f"{mod} ({LAYERS[a][0]}) imports {target} ({LAYERS[b][0]}) at line {line}")
    return bad


def forbidden_edges(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{mod} imports {target} at line {line}"
            for mod, edges in sorted(graph.items()) for target, line in sorted(edges.items())
            for low, banned in FORBIDDEN.items() if inside(mod, low) and any(inside(target, b) for b in banned)]


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(graph):
    """Function-level imports count (a graph of top-level imports only would pass a package full of
    lazy back-references); so do TYPE_CHECKING ones (`test_the_checks_catch_a_bad_import`)."""
    assert "kava.config" in graph["kava.model.sequences"]  # module level
    assert "kava.curricula" in graph["kava.demo.run"]  # inside a function (DemoSettings.curriculum_knobs)
    assert "kava.evaluation.resumable" in graph["kava.evaluation.cli"]  # inside a function
    assert "kava.model.teacher_compression" in graph["kava.inspection.kept_tokens"]  # `from pkg.mod import name`


def test_every_module_has_a_layer(graph):
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    assert not unplaced, "modules missing from LAYERS in tests/test_import_graph.py: " + ", ".join(unplaced)


def test_no_import_cycles(graph):
    found = cycles(graph)
    lines = [" <-> ".join(c) + ": " + "; ".join(f"{a} -> {b} (line {graph[a][b]})" for a in c for b in graph[a] if b in c)
             for c in found]
    assert not found, "import cycles:\n" + "\n".join(lines)


def test_imports_point_down_the_layers(graph):
    bad = upward_edges(graph)
    assert not bad, "imports of a higher layer:\n" + "\n".join(bad)


def test_the_demo_is_a_backend_below_the_experiments(graph):
    """`kava demo` is a preset grid of the sweep: the sweep and its report call the demo's backend,
    never the reverse (an import of experiments from demo/ would be the loop this layering removed)."""
    assert "kava.demo.run" in graph["kava.experiments.sweep"]
    assert not [t for m, e in graph.items() if inside(m, "kava.demo") for t in e if inside(t, "kava.experiments")]


def test_model_and_evaluation_import_nothing_above_them(graph):
    bad = forbidden_edges(graph)
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def is_command(module: str) -> bool:
    """A command module: ``kava.cli`` and each subcommand's ``*cli`` module (argparse in, exit status out)."""
    return module.rpartition(".")[2].endswith("cli")


def command_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{mod} imports {target} at line {line}" for mod, edges in sorted(graph.items()) if not is_command(mod)
            for target, line in sorted(edges.items()) if is_command(target)]


def test_library_code_calls_functions_not_commands(graph):
    """Every command is a thin layer over a Python function, and library code (the sweep, the demo)
    calls the function: no module but a command imports a command module (and its argparse)."""
    bad = command_imports(graph)
    assert not bad, "command modules imported by library code:\n" + "\n".join(bad)


def test_the_checks_catch_a_bad_import(tmp_path):
    """The checks fail on a package with a lazy back-reference (and name it): they are not vacuous."""
    pkg = tmp_path / "kava"
    for sub in ("model", "inspection"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "kava_model.py").write_text("def inspect():\n    from kava.inspection.api import run\n")
    (pkg / "inspection" / "api.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                              "    from kava.model.kava_model import KavaModel\n")
    g = import_graph(tmp_path)
    assert cycles(g) == [["kava.inspection.api", "kava.model.kava_model"]]
    assert upward_edges(g) == ["kava.model.kava_model (model) imports kava.inspection.api (inspection) at line 2"]
    assert forbidden_edges(g) == ["kava.model.kava_model imports kava.inspection.api at line 2"]
    (pkg / "inspection" / "cli.py").write_text("")
    (pkg / "inspection" / "api.py").write_text("import kava.inspection.cli\n")
    assert command_imports(import_graph(tmp_path)) == ["kava.inspection.api imports kava.inspection.cli at line 1"]
