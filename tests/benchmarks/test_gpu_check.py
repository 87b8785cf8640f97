"""benchmarks/gpu_check.py: without CUDA it says so and exits 0; its code path runs (tiny)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import peak_tflops

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU, even on a GPU machine
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_without_cuda_it_says_so_and_exits_0(tmp_path: Path):
    result = _run("--out", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "needs CUDA" in result.stdout
    assert not any(tmp_path.iterdir()), "nothing is written without a measurement"


@pytest.mark.slow
def test_smoke_run_writes_the_report(tmp_path: Path):
    """The whole measurement path on a tiny config, so a GPU run does not fail on a typo."""
    result = _run("--smoke", "--out", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = (tmp_path / "gpu.md").read_text()
    assert "smoke run" in text  # never mistaken for a measurement
    for heading in ("ms / forward", "MFU", "batch 4 vs 1", "VAE decode", "peak GiB"):
        assert heading in text, heading
    data = json.loads((tmp_path / "gpu.json").read_text())
    assert [f["batch"] for f in data["forwards"]] == [1, 4]
    video = data["video"]
    assert video["windows"] > 1 and video["forwards_per_step"] == 2 * video["windows"]
    assert video["steps_run"] == video["steps"] and video["finite"]


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA GeForce RTX 3060", None),
    ],
)
def test_peak_by_device_name(name: str, peak: float | None):
    assert peak_tflops(name) == peak
