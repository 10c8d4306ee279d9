"""The package tree is the data flow: check the allowed import directions and notebook hygiene."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cnnwidgets"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# What each layer may import from the package (zoo is a side package of models and data).
ALLOWED = {
    "core": {"core"},
    "methods": {"core", "methods"},
    "render": {"render"},
    "widgets": {"widgets"},
    "app": {"core", "methods", "render", "widgets", "app", "zoo"},
    "zoo": {"core", "zoo"},
}
TORCH_FREE = {"render", "widgets"}


def _imports(path: Path, package: str = "") -> set[str]:
    """Absolute names of the modules ``path`` imports; ``package`` is its own package (for
    relative imports). ``from cnnwidgets import render`` counts as ``cnnwidgets.render``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module == "cnnwidgets":
                names.update(f"cnnwidgets.{alias.name}" for alias in node.names)
            elif not node.module and node.level:
                names.update(f"{module}.{alias.name}" for alias in node.names)
            else:
                names.add(module)
    return names


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])


def _modules():
    for layer in ALLOWED:
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            yield layer, path


@pytest.mark.parametrize("layer, path", list(_modules()), ids=lambda v: str(v).split("cnnwidgets/")[-1])
def test_imports_follow_the_data_flow(layer, path):
    for name in _imports(path, _package_of(path)):
        parts = name.split(".")
        if parts[0] == "cnnwidgets":
            # the top-level package (or a name re-exported there) imports every layer
            assert len(parts) > 1 and parts[1] in ALLOWED[layer], f"{path.name} ({layer}) imports {name}"
        if layer in TORCH_FREE:
            assert parts[0] not in ("torch", "torchvision"), f"{path.name} ({layer}) must not import {name}"


def test_checker_sees_forbidden_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom cnnwidgets.core import Probe\nfrom cnnwidgets import Explorer, app\n"
                   "from ..methods import occlusion\nfrom . import grid\nfrom .encode import encode_png\n")
    found = _imports(bad, "cnnwidgets.render")
    assert {"torch", "cnnwidgets.core", "cnnwidgets.Explorer", "cnnwidgets.app", "cnnwidgets.methods",
            "cnnwidgets.render.grid", "cnnwidgets.render.encode"} <= found


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{notebook.name} cell {index} has outputs; clear them before committing"
            assert cell.get("execution_count") is None, f"{notebook.name} cell {index} has an execution count"
