"""Layer boundaries: `model` runs without the farm or Ray; shipped code never imports tests."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.paths import REPO

IMPORT_ALL_OF_MODEL = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import model
    names = ["model"] + [
        m.name for m in pkgutil.walk_packages(model.__path__, "model.", onerror=print)
    ]
    for name in names:
        importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("farm", "ray", "jobs"))
    print(json.dumps({"imported": names, "loaded": loaded}))
    """
)


def test_every_model_module_imports_without_farm_or_ray():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_OF_MODEL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "model.training.eval" in result["imported"]  # the walk reached the subpackages
    assert result["loaded"] == []


def _imported_modules(path) -> set[str]:
    """Top-level names of every module a file imports (at any depth, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["farm", "model", "jobs", "benchmarks"])
def test_shipped_code_and_benchmarks_never_import_tests(package):
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in mods if m.split(".")[0] == "tests")
        for path in sorted((REPO / package).rglob("*.py"))
        if (mods := _imported_modules(path))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_model_never_imports_farm_or_ray_even_lazily():
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0] in ("farm", "ray", "jobs")
        )
        for path in sorted((REPO / "model").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
