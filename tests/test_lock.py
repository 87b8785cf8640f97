"""The lock pins every Python package of the venv the tests run in, at its installed version."""

from __future__ import annotations

import subprocess
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.paths import REPO


def _lock(name: str) -> dict[str, Requirement]:
    pins = {}
    for line in (REPO / name).read_text("utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "-r")):
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req
    return pins


def test_every_installed_package_is_pinned_at_its_version():
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    pins = _lock("requirements.lock")
    unpinned, wrong = [], []
    for line in frozen:
        if not line or line.startswith("#") or "==" not in line:
            continue
        name, version = line.split("==", 1)
        if canonicalize_name(name) == "video-farm":
            continue
        pin = pins.get(canonicalize_name(name))
        if pin is None:
            unpinned.append(line)
        elif not pin.specifier.contains(version, prereleases=True):
            wrong.append(f"{line} (lock: {pin})")
    assert not unpinned, f"installed but not in requirements.lock: {unpinned}"
    assert not wrong, f"installed at another version than the lock: {wrong}"


def test_lock_pins_exact_versions_and_cpu_torch():
    pins = _lock("requirements.lock")
    loose = [str(r) for r in pins.values() if [s.operator for s in r.specifier] != ["=="]]
    assert not loose, f"every lock line must be name==version: {loose}"
    # torch==X matches the CPU wheel here (X+cpu) and the CUDA build on PyPI elsewhere.
    assert "+" not in str(pins["torch"].specifier)
    cuda = _lock("requirements-cuda.lock")
    assert set(cuda) == {"xformers"} and "-r requirements.lock" in (
        REPO / "requirements-cuda.lock"
    ).read_text("utf-8")
