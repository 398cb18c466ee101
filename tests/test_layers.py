"""The import graph of the project's own modules, imports inside functions included: no cycle, no upward import.

Layers, lowest first (README "Architecture" states the same picture):

    modeling_asarg   the Hub files and the model package; imports nothing of ours
    labeler          evaluation/report_labeler: the CheXpert labeler, pure Python; imports nothing of ours
    processing       data in: image/DICOM IO, loaders, SynthCXR, seg cache, checkpoints, output paths
    evaluation       the labeler, CE / NLG metrics, significance, grounding
    training         the SFT recipe, specialists, model set-up, resume
    experiments      the paper's reproduction (grid, continued regime, default model)
    asarg            the command line, publishing, the default model's home
    spaces_demo, benchmarks   applications: nothing imports them

A module may import its own layer or any lower one. Installed names are resolved to the repository's folders
(`asarg.processing` is `processing/`, see pyproject's package-dir).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["modeling_asarg", "labeler", "processing", "evaluation", "training", "experiments", "asarg", "apps"]
FOLDERS = {  # repository folder -> (installed package name, layer)
    "modeling_asarg": ("modeling_asarg", "modeling_asarg"),
    "processing": ("asarg.processing", "processing"),
    "evaluation": ("asarg.evaluation", "evaluation"),
    "evaluation/report_labeler": ("asarg.evaluation.report_labeler", "labeler"),
    "training": ("asarg.training", "training"),
    "experiments": ("asarg.experiments", "experiments"),
    "asarg": ("asarg", "asarg"),
    "spaces_demo": ("asarg.spaces_demo", "apps"),  # installed as data packages of asarg (`asarg push-space`)
    "metrics": ("asarg.metrics", "apps"),
    "benchmarks": ("benchmarks", "apps"),
}


def project_modules() -> dict[str, Path]:
    """Installed dotted name -> file, for every module of the project (tests excluded)."""
    modules = {}
    for folder, (package, _) in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def layer_of(module: str) -> str:
    for package, layer in sorted(FOLDERS.values(), key=lambda pair: -len(pair[0])):
        if module == package or module.startswith(package + "."):
            return layer
    raise KeyError(module)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported dotted name refers to (the longest known prefix), or None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that `module` imports anywhere in its file (top level, functions, TYPE_CHECKING blocks)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name`: the module pkg.name when it is one, else pkg itself (a name defined in it).
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if rank[layer_of(target)] > rank[layer_of(source)] or layer_of(target) == "apps" != layer_of(source):
                bad.append(f"{source} ({layer_of(source)}) -> {target} ({layer_of(target)})")
    return bad


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "modeling_asarg.configuration_asarg" in graph["modeling_asarg.modeling_asarg"]
    assert "asarg.processing.inference" in graph["asarg.experiments.default_model"]  # imported inside a function
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_no_upward_imports():
    assert upward_imports(import_graph()) == []


def test_the_cycle_and_layer_checks_can_fail():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert upward_imports({"modeling_asarg.x": {"asarg.cli"}, "asarg.cli": set()}) == [
        "modeling_asarg.x (modeling_asarg) -> asarg.cli (asarg)"
    ]
