"""Dependencies point one way: flows -> mlb -> storage (style.md, habit 7); inside mlb only
mlb.labels reaches storage; no module imports itself back through others.

Checked on the source text (every import statement), so a violation is caught even in a
module no other test imports.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import
FORBIDDEN = {
    "storage": {"torch", "torchvision", "prefect", "prefect_dask", "mlb", "flows", "cv2"},
    "mlb": {"prefect", "prefect_dask", "flows"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_direction(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files under {package}/"
    violations = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) & FORBIDDEN[package])
        for path in files
    }
    assert {k: v for k, v in violations.items() if v} == {}


def test_checker_sees_a_violation(tmp_path):
    # The check itself must be able to fail.
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom prefect import flow\n")
    assert imported_top_levels(bad) == {"torch", "prefect"}


# --------------------------------------------------------------------------- the import graph

PACKAGES = ("mlb", "storage", "flows")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (relative imports resolved; ``from a import b``
    counts ``a.b`` when that is a module, else ``a``), including imports inside functions and
    under TYPE_CHECKING: a deferred import is still a dependency."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(kept + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                break
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    # Every module of mlb, storage and flows, packages' __init__ included (a submodule that
    # imports its package's __init__ while the __init__ imports it is a cycle too).
    graph = import_graph()
    assert len(graph) > 50 and cycles(graph) == []


def test_only_mlb_labels_imports_storage():
    graph = import_graph()
    outside = {name: sorted(t for t in targets if t.split(".")[0] == "storage")
               for name, targets in graph.items()
               if name.split(".")[0] != "storage" and not name.startswith("mlb.labels")}
    assert {k: v for k, v in outside.items() if v} == {}


def test_flows_never_import_storage():
    files = sorted((ROOT / "flows").rglob("*.py"))
    assert {str(p.relative_to(ROOT)) for p in files if "storage" in imported_top_levels(p)} == set()


def test_cycle_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_relative_deferred_and_type_checking_imports(tmp_path, monkeypatch):
    package = tmp_path / "mlb" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("from . import two\n")
    (package / "two.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mlb.pkg.one import x\n"
        "def f():\n    import storage.draft\n")
    (tmp_path / "storage").mkdir()
    (tmp_path / "storage" / "draft.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    modules = project_modules()
    assert imported_modules(package / "one.py", modules) == {"mlb.pkg.two"}
    assert imported_modules(package / "two.py", modules) == {"mlb.pkg.one", "storage.draft"}
    assert cycles(import_graph()) == [["mlb.pkg.one", "mlb.pkg.two"]]
