"""Module boundaries: specs, feeds and wire schemas validate without torch or Ray.

A spec is checked on a laptop and an HTTP body at the ingress, where loading torch or Ray
would cost seconds and gigabytes; the model's rules come from `model.geometry`, which
needs neither. Each import runs in a fresh interpreter, so other tests cannot hide one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import farm.campaign

LIGHT = [
    "farm.campaign.fields",
    "farm.campaign.images",
    "farm.campaign.spec",
    "farm.campaign.feed",
    "farm.serve.wire",
]


@pytest.mark.parametrize("module", LIGHT)
def test_module_imports_neither_torch_nor_ray(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = {'torch', 'ray'} & set(sys.modules)\n"
        "assert not heavy, f'imports {sorted(heavy)}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _campaign_imports(path: Path) -> set[str]:
    """The farm.campaign modules `path` imports, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("farm.campaign."):
            names.add(node.module.rsplit(".", 1)[1])
    return names


def test_spec_and_feed_share_fields_and_import_neither_each_other() -> None:
    folder = Path(farm.campaign.__file__).parent
    spec, feed = _campaign_imports(folder / "spec.py"), _campaign_imports(folder / "feed.py")
    assert "fields" in spec and "fields" in feed
    assert "feed" not in spec and "spec" not in feed
    # fields checks images through farm.campaign.images, the one owner of image rules
    assert _campaign_imports(folder / "fields.py") <= {"images"}
    assert _campaign_imports(folder / "images.py") == set()
    import farm.campaign.spec as spec_module

    assert not hasattr(spec_module, "load_feed")  # callers import it from farm.campaign.feed
