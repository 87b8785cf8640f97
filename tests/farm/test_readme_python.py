"""The README's Python example that reads a manifest runs, as written, with this venv."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

from farm.campaign.manifest import Manifest
from farm.campaign.spec import load_spec
from farm.jobs.inputs import Campaign
from tests.helpers.paths import EXAMPLE_SPEC, REPO


def manifest_block() -> str:
    """The ```python block right after "The manifest is plain Parquet" in the README."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    after = text.split("The manifest is plain Parquet", 1)[1]
    return after.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_readmes_manifest_query_runs_against_a_real_manifest(tmp_path: Path) -> None:
    campaign = Campaign.of_spec(load_spec(EXAMPLE_SPEC.read_text("utf-8")))
    root = str(tmp_path / "farm-data")  # where the README's `farm demo` writes
    manifest = Manifest.create(root, campaign.campaign_id, {}, campaign.variants)
    ids = campaign.variants["variant_id"].to_pylist()
    writer = manifest.writer(worker="readme")
    writer.commit([{"variant_id": v, "status": "in_progress", "attempt": 1} for v in ids[:5]])
    writer.commit([{"variant_id": v, "status": "completed", "attempt": 1} for v in ids[:3]])
    out, names = io.StringIO(), {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(manifest_block(), "README.md", "exec"), names)
    finally:
        os.chdir(cwd)
    assert names["events"].num_rows == 8  # every event part of the campaign was read
    printed = dict(
        line.split(": ", 1) for line in out.getvalue().splitlines() if line.endswith("]]")
    )  # pyarrow prints a table's columns as `name: [[v, ...]]`
    statuses = json.loads(printed["status"])[0]
    counts = json.loads(printed["variant_id_count_distinct"])[0]
    assert dict(zip(statuses, counts, strict=True)) == {"in_progress": 5, "completed": 3}
