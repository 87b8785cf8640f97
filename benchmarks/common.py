"""Timing helpers shared by the benchmarks: medians of repeats, markdown tables."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    """One line naming the hardware the numbers were measured on."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {gpu}"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, text: str, data: dict) -> None:
    """Print a benchmark's table and save it with its raw numbers under results/."""
    RESULTS.mkdir(exist_ok=True)
    header = f"## {name}\n\nMeasured on: {machine()}\n\n"
    print(header + text)
    (RESULTS / f"{name}.md").write_text(header + text + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
