"""The package's layers: the library never imports the course, no import cycles, a light import."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "minisoftpick"
COURSE_LAYER = ("minisoftpick.course", "minisoftpick.checks", "minisoftpick.solutions")
# What `import minisoftpick` may load of the package itself: the functional core, nothing else.
LIGHT_IMPORT = {"minisoftpick", "minisoftpick.attention", "minisoftpick.normalizers", "minisoftpick.online"}
HEAVY_DEPENDENCIES = ("matplotlib", "triton", "tokenizers", "IPython")


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name; kernels/ is installed as minisoftpick.kernels."""
    files = {}
    for folder, prefix in ((ROOT / "minisoftpick", PACKAGE), (ROOT / "kernels", f"{PACKAGE}.kernels")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([prefix, *parts])] = path
    return files


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that `name` imports anywhere in its file: at its top or deferred into a
    function, which is as much a dependency (it only runs later)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def in_course_layer(module: str) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in COURSE_LAYER)


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "minisoftpick.kernels.flash_softpick" in graph
    assert "minisoftpick.attention" in graph["minisoftpick.online"]
    assert "minisoftpick.checks.core" in graph["minisoftpick.course"]
    assert "minisoftpick.kernels.flash_softpick" in graph["minisoftpick.model"]  # deferred into a function


def test_library_never_imports_the_course_layer():
    offenders = {
        module: sorted(target for target in targets if in_course_layer(target))
        for module, targets in import_graph().items()
        if not in_course_layer(module)
    }
    assert not {m: t for m, t in offenders.items() if t}, "library modules import the course layer"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of modules, or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def without_package_init(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges into the package's own __init__: every `from . import x` names it, and it only re-exports."""
    return {module: targets - {PACKAGE} for module, targets in graph.items()}


def test_no_import_cycle_anywhere_in_the_package():
    """No module needs another that needs it back, counting imports deferred into functions: a
    deferred import hides a cycle from the interpreter, not from the reader."""
    assert find_cycle(without_package_init(import_graph())) is None


def test_import_is_light_and_has_no_side_effects():
    probe = "\n".join(
        [
            "import json, os, sys",
            "before = dict(os.environ)",
            "import minisoftpick",
            f"roots = ({PACKAGE!r},) + {HEAVY_DEPENDENCIES!r}",
            "modules = sorted(m for m in sys.modules if m.split('.')[0] in roots)",
            "print(json.dumps({'modules': modules, 'environ_changed': dict(os.environ) != before}))",
        ]
    )
    result = json.loads(
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    )
    assert not result["environ_changed"], "import minisoftpick changed os.environ"
    assert set(result["modules"]) == LIGHT_IMPORT, f"import minisoftpick loaded {result['modules']}"


@pytest.mark.parametrize("name", ["checks", "course", "solutions"])
def test_the_course_layer_loads_on_first_use(name):
    import minisoftpick as msp

    assert getattr(msp, name).__name__ == f"{PACKAGE}.{name}"


README_ROW = re.compile(r"^\| \w+ \| `(minisoftpick[\w.<>]*)` \|", re.MULTILINE)


def test_the_readme_shows_every_module_below_what_it_imports():
    """README.md's package table has one row per module (``checks.<notebook>`` stands for each
    notebook's), and every module imports only from its own row or the rows above it."""
    rows = README_ROW.findall((ROOT / "README.md").read_text())
    graph = without_package_init(import_graph())

    def row(module: str) -> int:
        pattern = re.sub(r"\.(checks|solutions)\.(?!core$|cases$)\w+$", r".\1.<notebook>", module)
        assert pattern in rows, f"README.md's package table has no row for {module}"
        return rows.index(pattern)

    assert sorted({row(module) for module in graph}) == list(range(len(rows))), "rows without a module"
    below = {m: sorted(t for t in targets if row(t) > row(m)) for m, targets in graph.items()}
    assert not {m: t for m, t in below.items() if t}, "modules that import a module listed below them"
