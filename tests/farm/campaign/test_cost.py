"""Render estimates are priced by measured renders of the model on its device (issue 19,
defect 9: `validate` estimated 0.4 GPU-seconds for a campaign that measured 295.8 s)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.campaign import cost
from farm.cli import app
from farm.jobs.client import prepare_campaign
from farm.jobs.inputs import load_campaign
from farm.jobs.loop import render_concurrently
from farm.jobs.options import JobOptions
from farm.render.executors import LocalExecutor
from tests.helpers.campaigns import write_spec

runner = CliRunner()


def _validate(spec: Path, root: str) -> tuple[float, str]:
    result = runner.invoke(app, ["campaign", "validate", str(spec), "--root", root])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    m = re.search(r"estimated GPU time: ([\d.,]+) GPU-seconds \(([^)]*)\)", text)
    assert m, text
    return float(m.group(1).replace(",", "")), text


def test_record_adds_renders_and_load_finds_the_latest_device() -> None:
    root = f"memory://cost-{uuid.uuid4().hex}"
    assert cost.load(root, "tiny") is None
    cost.record(root, "tiny", "cpu", seconds=10.0, work=1000.0, renders=2)
    both = cost.record(root, "tiny", "cpu", seconds=20.0, work=1000.0, renders=3)
    assert (both.renders, both.seconds, both.work) == (5, 30.0, 2000.0)
    assert both.seconds_per_unit == pytest.approx(0.015) and both.source == "renders"
    gpu = cost.record(root, "tiny", "cuda:NVIDIA H200", seconds=1.0, work=1000.0, renders=1)
    assert cost.load(root, "tiny") == gpu  # the one measured last
    assert cost.load(root, "tiny", "cpu") == both
    assert cost.load(root, "small") is None
    assert float(both.seconds_for(400.0)) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="nothing to record"):
        cost.record(root, "tiny", "cpu", seconds=1.0, work=0.0, renders=1)


def test_validate_prices_the_campaign_by_the_renders_the_job_measured(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", f"cost-{uuid.uuid4().hex[:8]}")
    root = str(tmp_path / "farm-data")
    campaign = load_campaign(str(spec))
    # Nothing rendered yet: one render timed here, and the output says so.
    probed, text = _validate(spec, root)
    assert probed > 0 and "one 'tiny' render timed on this machine (cpu)" in text, text
    manifest = prepare_campaign(campaign, root)
    report = render_concurrently(manifest, LocalExecutor("tiny"), root, JobOptions(concurrency=1))
    assert report.completed == campaign.variants.num_rows == 4
    stored = cost.load(root, "tiny", "cpu")
    assert stored is not None and stored.renders == 4
    measured = manifest.progress().completed_gpu_s
    assert stored.seconds == pytest.approx(measured, rel=0.2)  # the events' gpu_seconds
    # Now the estimate is those renders' rate times the campaign's work: what it measured.
    estimated, text = _validate(spec, root)
    assert "measured on 4 finished renders of 'tiny' on cpu" in text, text
    assert f"measured so far: {measured:.1f} GPU-seconds for 4 of 4 variants" in text, text
    assert estimated == pytest.approx(measured, rel=0.2, abs=0.1), (estimated, measured)
    # The probe was a measurement too, not a constant: the same order as the renders.
    assert 0.1 < probed / measured < 10, (probed, measured)
