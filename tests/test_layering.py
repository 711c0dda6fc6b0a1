"""Dependencies point one way: flows -> mlb -> storage (style.md, habit 7).

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
