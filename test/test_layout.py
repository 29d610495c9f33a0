"""The project's modules import each other without a circle (lazy imports inside functions included), and nothing
switches matplotlib's global backend at import time."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from conftest import REPO

PACKAGES = ("model", "app", "training", "evaluation", "wsi", "benchmarks")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, subpackages included (a package's `__init__` under the package's name)."""
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def project_imports() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] not in PACKAGES:
                    continue
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
                found |= submodules or {node.module}  # `from training.data import real_data` or `from x.y import f`
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


def test_the_detector_imports_no_application():
    """timm's rule: the library holds the detector and imports none of its applications (the container app, training,
    whole-slide counting, evaluation, benchmarks); they import it."""
    imports = project_imports()
    library = [module for module in imports if module.split(".")[0] == "model"]
    assert len(library) >= 15
    arrows = {(module, name) for module in library for name in imports[module] if name.split(".")[0] != "model"}
    assert not arrows, sorted(arrows)


def test_the_container_app_imports_no_training():
    """The container installs only what inference needs: `app` and `process.py` import nothing from training."""
    imports = project_imports()
    app = [module for module in imports if module.split(".")[0] == "app"]
    assert len(app) >= 5
    assert not {name for module in app for name in imports[module] if name.split(".")[0] in ("training", "benchmarks")}


def test_app_modules_live_in_app():
    """The grand-challenge app's modules live in `app/`, not in the detector library (`model.score_patches` is only
    the contract's command alias, running `app.score_patches`)."""
    for name in ("algorithm", "preflight", "output", "overlay"):
        assert (REPO / "app" / f"{name}.py").is_file() and not (REPO / "model" / f"{name}.py").exists()
    alias = (REPO / "model" / "score_patches.py").read_text()
    assert "app.score_patches" in alias and "import app" not in alias and "from app" not in alias


def test_offline_evaluation_imports_nothing_from_training():
    """People who never train use the offline evaluation: no module of `evaluation` pulls in the recipe."""
    imports = project_imports()
    evaluation = [module for module in imports if module.startswith("evaluation")]
    assert len(evaluation) >= 3
    assert not {name for module in evaluation for name in imports[module] if name.startswith("training")}


def test_no_matplotlib_global_state():
    """Figures use matplotlib's object API: no module switches the global backend (at import or in a function, where
    it would change it for the caller too) or goes through pyplot's figure registry."""
    for path in project_modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use":
                assert getattr(node.func.value, "id", "") != "matplotlib", f"{path.name} sets matplotlib's backend"
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [getattr(node, "module", None) or ""] + [alias.name for alias in node.names]
                assert not any("pyplot" in name for name in names), f"{path.name} imports pyplot"


README_MAX_LINES = 200


def documentation_pages() -> list[Path]:
    """The README, the model card and the pages under docs/."""
    return [REPO / "README.md", REPO / "model" / "weights" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_documented_commands_and_files_exist():
    """Every `python -m X` and every `training/...py` path the README, the model card, the docs pages and the
    examples name exists, so that moving a module cannot leave the documentation pointing at nothing."""
    documents = [*documentation_pages(), *(REPO / "examples").glob("*.sh")]
    assert len(documents) > 4, "docs/*.md pages not found"
    text = "\n".join(path.read_text() for path in documents)
    modules = set(re.findall(r"python -m ((?:model|app|training|evaluation|wsi|benchmarks)[\w.]*)", text))
    files = set(re.findall(r"\b((?:model|app|training|evaluation|wsi|benchmarks)/[\w/]+\.py)\b", text))
    assert "training.pipeline" in modules and "evaluation.evaluate" in modules
    assert not {name for name in modules if importlib.util.find_spec(name) is None}
    assert not {name for name in files if not (REPO / name).is_file()}


def test_readme_is_short():
    """The README is the way in: what it is, set-up, main commands, results, links. Details live in docs/."""
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_documentation_links_resolve():
    """Every relative link and picture in the README, the model card and docs/ names a file that exists."""
    broken = []
    for page in documentation_pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#")[0]
            if path and "://" not in path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken


def test_figure_code_lives_in_training_figures():
    """Training draws in one place: no training module other than `training.figures` imports matplotlib or PIL's
    ImageDraw (the synthetic data generator paints its images with ImageDraw; that is data, not a figure)."""
    drawing = ("matplotlib", "PIL.ImageDraw")
    allowed = {"training.figures", "training.data.synthetic"}
    offenders = []
    for name, path in project_modules().items():
        if not name.startswith("training.") or name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(n == d or n.startswith(d + ".") for n in names for d in drawing):
                offenders.append(name)
    assert not offenders, f"figure code outside training/figures.py: {sorted(set(offenders))}"


def test_commands_name_themselves_as_they_are_run():
    """`--help` of a `python -m` command says `usage: python -m package.module`, not the file's name: every parser
    of a command is `model.command_line.command_parser("<its own module>", ...)`."""
    wrong = []
    for name, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or name == "model.command_line":
                continue
            called = getattr(node.func, "attr", getattr(node.func, "id", ""))
            named = node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == name
            if called == "command_parser" and not named:
                wrong.append(f"{name}: command_parser names another module")
            if called == "ArgumentParser" and name.split(".")[0] != "benchmarks":  # benchmarks run as scripts too
                wrong.append(f"{name}: ArgumentParser instead of command_parser")
    assert not wrong, wrong


def code_map() -> str:
    text = (REPO / "docs" / "how-it-works.md").read_text()
    return text[text.index("## Code map") :]


def test_code_map_lists_every_module():
    """docs/how-it-works.md's code map follows the rooms: every module of the detector, the app and the training
    recipe's top level by its path, the deeper rooms (training/data, training/validation, wsi, evaluation, benchmarks)
    by their folder."""
    listed = code_map()
    by_folder = ("training/data/", "training/validation/", "wsi/", "evaluation/", "benchmarks/")
    missing = [folder for folder in by_folder if f"`{folder}" not in listed]
    for folder in ("model", "app", "training"):
        for path in sorted((REPO / folder).glob("*.py")):
            if path.name != "__init__.py" and path.relative_to(REPO).as_posix() not in listed:
                missing.append(path.relative_to(REPO).as_posix())
    assert not missing, f"not in docs/how-it-works.md's code map: {missing}"


FUNCTION_MAX_LINES = 60


def test_functions_stay_short_in_the_library_and_the_apps():
    """A newcomer reads a function of `model`, `app`, `wsi` or `evaluation` on one screen: at most 60 lines,
    signature and docstring included (cut longer ones into named steps)."""
    long = []
    for name, path in project_modules().items():
        if name.split(".")[0] in ("model", "app", "wsi", "evaluation"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > FUNCTION_MAX_LINES:
                        long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def test_the_docker_build_context_holds_what_the_dockerfile_copies():
    """.dockerignore is an allowlist: every folder or file the Dockerfile copies into the image must be on it (a
    forgotten package fails only when the image is built, minutes into CI)."""
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line[:1] == "!"}
    copied = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied += [source.rstrip("/").replace("[m]", "m") for source in line.split()[1:-1]]
    assert {"process.py", "app", "model"} <= set(copied)
    assert not [source for source in copied if source not in allowed], (copied, allowed)
