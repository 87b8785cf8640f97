"""Manifest benchmarks: write, reopen, progress and 10k status events at 10k / 100k / 1M variants.

    python -m benchmarks.bench_manifest                 # 10k, 100k and 1M variants
    python -m benchmarks.bench_manifest 10000 100000    # chosen sizes

Storage is a local temp dir (the default root is a local dir too). Each operation is set
beside the naive way: the variants as one JSON array and every variant's state in one JSON
file that is read, changed and rewritten whole on each update. The naive 10k updates are
too slow to run in full, so a few are timed and the mean is multiplied up to 10k.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from itertools import count
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.common import median_time, report, table
from farm.campaign.manifest import Manifest
from farm.campaign.tables import EVENTS, VARIANTS, VARIANTS_OPTIONAL

SIZES = (10_000, 100_000, 1_000_000)
EVENTS_TOTAL, PARTS = 10_000, 10
TARGETS_100K = {"write variants": 2.0, "progress()": 0.2, "10k events (10 parts)": 1.0}
LOCALES = np.array(["en-US", "ar-SA", "ja-JP", "de-DE", "fr-FR", "es-MX", "zh-CN", "hi-IN"])
FORMATS = np.array(["tiktok", "feed", "story", "banner", "square"])
PROMPT = "A red bottle turns slowly on a white table, soft studio light, product close-up, "


def synthetic_variants(n: int, campaign_id: str) -> pa.Table:
    """A VARIANTS table shaped like an expanded campaign: 8 locales x 5 formats x products."""
    i = np.arange(n)
    ids = pc.binary_join_element_wise("v", pc.utf8_lpad(pa.array(i.astype(str)), 8, "0"), "")
    product = pc.binary_join_element_wise("p", pa.array((i // 40 % 500).astype(str)), "")

    def text(prefix: str) -> pa.Array:
        return pc.binary_join_element_wise(prefix, product, pa.array(LOCALES[i % 8]), " ")

    def num(values: np.ndarray, field: str) -> pa.Array:
        return pa.array(values).cast(VARIANTS.field(field).type)

    columns = {
        "variant_id": ids,
        "campaign_id": pa.array(np.full(n, campaign_id)),
        "product_id": product,
        "product_name": text("Bottle"),
        "locale": pa.array(LOCALES[i % 8]),
        "format": pa.array(FORMATS[i // 8 % 5]),
        "aspect": pa.array(np.full(n, "9:16")),
        "width": num(np.full(n, 144), "width"),
        "height": num(np.full(n, 256), "height"),
        "duration_s": num(np.full(n, 6.0), "duration_s"),
        "fps": num(np.full(n, 24), "fps"),
        "frames": num(np.full(n, 145), "frames"),
        "seed": num(i * 7919, "seed"),
        "prompt": text(PROMPT),
        "negative_prompt": pa.array(np.full(n, "blurry, watermark")),
        "headline": text("Fresh for summer"),
        "cta": pa.array(np.full(n, "Shop now")),
        "preset": pa.array(np.full(n, "small")),
        "steps": num(np.full(n, 20), "steps"),
        "guidance": num(np.full(n, 5.0), "guidance"),
        "priority": num(i % 3, "priority"),
        "work": num(30.0 + i % 7, "work"),
    }
    for name in VARIANTS_OPTIONAL:  # no product images: no end cards
        columns[name] = pa.nulls(n, VARIANTS.field(name).type)
    return pa.table(columns, schema=VARIANTS)


def status_events(ids: pa.Array) -> pa.Table:
    """A part's worth of `completed` events, the columns a campaign job would fill in."""
    n = len(ids)
    columns = {
        "variant_id": ids,
        "status": pa.array(np.full(n, "completed")),
        "attempt": pa.array(np.ones(n, np.int32)),
        "output_url": pc.binary_join_element_wise("s3://out/", ids, ".mp4", ""),
        "gpu_seconds": pa.array(np.full(n, 31.5, np.float32)),
    }
    return pa.table(columns, schema=pa.schema([EVENTS.field(k) for k in columns]))


class NaiveJson:
    """The naive manifest: variants in one JSON array, all states in one JSON object."""

    def __init__(self, root: Path) -> None:
        self.variants_path, self.state_path = root / "variants.json", root / "state.json"

    def write(self, variants: pa.Table) -> None:
        self.variants_path.write_text(json.dumps(variants.to_pylist()))
        keep = variants.select(["variant_id", "locale", "format", "work"]).to_pylist()
        state = {r.pop("variant_id"): {**r, "status": "queued", "attempt": 0} for r in keep}
        self.state_path.write_text(json.dumps(state))

    def reopen(self) -> int:
        return len(json.loads(self.variants_path.read_text()))

    def progress(self) -> tuple[Counter, Counter]:
        state = json.loads(self.state_path.read_text())
        by_status = Counter(s["status"] for s in state.values())
        by_group = Counter((s["status"], s["locale"], s["format"]) for s in state.values())
        return by_status, by_group

    def update(self, variant_id: str) -> None:
        state = json.loads(self.state_path.read_text())
        state[variant_id].update(status="completed", attempt=1, gpu_seconds=31.5)
        self.state_path.write_text(json.dumps(state))


def _ratio(r: float) -> str:
    return f"{r:.1f}x" if r < 10 else f"{r:,.0f}x"


def bench_size(n: int, tmp: Path) -> tuple[list[list[object]], dict]:
    """Time every operation at `n` variants, manifest and naive; returns rows and raw numbers."""
    root = str(tmp / "farm")
    repeats = 3 if n <= 100_000 else 1
    warmup = 1 if n <= 100_000 else 0
    base = synthetic_variants(n, "bench-0")
    # create() of an existing campaign only opens it, so every timed write gets a new one.
    write_times = []
    for k in range(warmup + repeats):
        named = base.set_column(1, "campaign_id", pa.array(np.full(n, f"bench-{k}")))
        start = time.perf_counter()
        Manifest.create(root, f"bench-{k}", {"n": n}, named)
        write_times.append(time.perf_counter() - start)
    t_write = statistics.median(write_times[warmup:])
    t_reopen = median_time(
        lambda: Manifest.open(root, "bench-0").variants, repeats=repeats, warmup=warmup
    )

    m = Manifest.open(root, "bench-0")
    writer = m.writer("bench")
    all_ids = m.variants["variant_id"]
    offset, part_times = count(step=EVENTS_TOTAL), []

    def commit_10k() -> None:
        start = next(offset)
        for k in range(PARTS):
            chunk = all_ids.slice((start + k * 1000) % n, EVENTS_TOTAL // PARTS)
            t0 = time.perf_counter()
            writer.commit(status_events(chunk))
            part_times.append(time.perf_counter() - t0)

    t_events = median_time(commit_10k, repeats=repeats, warmup=warmup)
    t_part = statistics.median(part_times)
    t_progress = median_time(m.progress, repeats=5, warmup=1)
    t_progress_cold = median_time(lambda: Manifest.open(root, "bench-0").progress(), repeats, 0)
    assert m.progress().by_status["completed"] > 0

    naive = NaiveJson(tmp)
    n_write = median_time(lambda: naive.write(base), repeats=1, warmup=0)
    n_reopen = median_time(naive.reopen, repeats=1, warmup=0)
    n_progress = median_time(naive.progress, repeats=1, warmup=0)
    sample = 100 if n <= 10_000 else 10 if n <= 100_000 else 2
    id_list = all_ids.slice(0, sample).to_pylist()
    start = time.perf_counter()
    for vid in id_list:
        naive.update(vid)
    n_update = (time.perf_counter() - start) / sample

    target = TARGETS_100K if n == 100_000 else {}
    rows_in = [
        ("write variants", t_write, n_write),
        ("reopen (read variants)", t_reopen, n_reopen),
        ("progress()", t_progress, n_progress),
        ("open + progress() (cold)", t_progress_cold, n_progress),
        ("10k events (10 parts)", t_events, n_update * EVENTS_TOTAL),
        ("one commit of 1k events (naive: 1 update)", t_part, n_update),
    ]
    rows = []
    for name, ours, theirs in rows_in:
        goal = f"<= {target[name]} s" if name in target else ""
        ok = ("ok" if ours <= target[name] else "MISSED") if name in target else ""
        rows.append(
            [f"{n:,}", name, f"{ours:.4f}", f"{theirs:.4f}", _ratio(theirs / ours), goal, ok]
        )
    data = {name: {"manifest_s": ours, "naive_s": theirs} for name, ours, theirs in rows_in}
    data["naive_updates_timed"] = sample
    return rows, data


def main(argv: list[str] | None = None) -> None:
    sizes = [int(a) for a in (argv if argv is not None else sys.argv[1:])] or list(SIZES)
    rows, data = [], {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            size_rows, data[n] = bench_size(n, Path(tmp))
        rows += size_rows
        print(f"done {n:,} variants", file=sys.stderr)
    headers = ["variants", "operation", "manifest s", "naive JSON s", "naive / manifest"]
    text = table([*headers, "target", "met"], rows)
    timed = ", ".join(f"{data[n]['naive_updates_timed']} at {n:,}" for n in sizes)
    notes = (
        "Storage: a local temp dir. `progress()` is the steady call on an open manifest (it "
        "re-lists storage and reads only new parts); cold adds `Manifest.open` and reading "
        "variants.parquet. Naive: every update reads and rewrites the whole state JSON, so "
        f"its 10k-update time is extrapolated: mean of a few timed updates ({timed} "
        "variants) x 10,000."
    )
    report("manifest", text + "\n\n" + notes, {str(k): v for k, v in data.items()})


if __name__ == "__main__":
    main()
