"""The project's modules import each other without a circle (lazy imports inside functions included), and nothing
switches matplotlib's global backend at import time."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGES = ("model", "training", "benchmarks")


def project_imports() -> dict[str, set[str]]:
    graph = {}
    for package in PACKAGES:
        for path in (REPO / package).glob("*.py"):
            name = f"{package}.{path.stem}"
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    if node.module in PACKAGES:  # from training import real_data
                        found |= {f"{node.module}.{alias.name}" for alias in node.names}
                    elif node.module.split(".")[0] in PACKAGES:
                        found.add(node.module)
                elif isinstance(node, ast.Import):
                    found |= {alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES}
            graph[name] = found - {name}
    return graph


def test_no_import_circle():
    graph = project_imports()
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dependency in sorted(graph.get(name, ())):
            assert state.get(dependency) != "open", "import circle: " + " -> ".join([*path, dependency])
            if dependency not in state:
                visit(dependency, [*path, dependency])
        state[name] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert "training.pipeline" in graph and "training.threshold" in graph["training.pipeline"]


def test_offline_evaluation_imports_nothing_from_training():
    """People who never train use `python -m training.evaluate`: it must not pull in the recipe."""
    assert not {name for name in project_imports()["training.evaluate"] if name.startswith("training")}


def test_no_matplotlib_backend_switch_at_import_time():
    for package in PACKAGES:
        for path in (REPO / package).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in tree.body:  # module level only; inside a function it is the caller's choice
                call = node.value if isinstance(node, ast.Expr) else None
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "use":
                    assert getattr(call.func.value, "id", "") != "matplotlib", f"{path.name} sets a backend on import"
