"""A campaign end to end in-process: spec → manifest → localized MP4s → events → progress."""

import hashlib
import json
from pathlib import Path

import pytest

from farm.campaign.expand import campaign_id, expand
from farm.campaign.manifest import Manifest
from farm.campaign.spec import load_spec
from farm.jobs.loop import failure_code, render_pending
from farm.output.media import probe_mp4
from farm.output.watermark import verify_file
from farm.render.executors import LocalExecutor
from farm.storage import StorageUnavailable


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("farm"))
    spec = load_spec(Path("examples/campaign.yaml").read_bytes())
    variants = expand(spec)
    manifest = Manifest.create(root, campaign_id(spec), spec.model_dump(mode="json"), variants)
    return root, manifest


def test_campaign_renders_every_variant_once(campaign):
    root, manifest = campaign
    ex = LocalExecutor("tiny")
    first = render_pending(manifest, ex, root, limit=5)
    assert (first.completed, first.failed) == (5, 0)
    assert manifest.progress().by_status["completed"] == 5
    # A second pass (think: a restarted job) finishes the rest and re-renders nothing.
    done = {r["variant_id"]: r["sha256"] for r in manifest.status().to_pylist() if r["sha256"]}
    second = render_pending(manifest, ex, root)
    assert second.completed == 7
    status = manifest.status().to_pylist()
    assert all(r["status"] == "completed" for r in status)
    assert all(r["attempt"] == 1 for r in status)
    for r in status:
        mp4 = Path(r["output_url"]).read_bytes()
        assert hashlib.sha256(mp4).hexdigest() == r["sha256"]
        info = probe_mp4(mp4)
        assert (info.frames, info.width, info.height) == (r["frames"], r["width"], r["height"])
        if r["variant_id"] in done:
            assert done[r["variant_id"]] == r["sha256"]
        # Every frame carries the variant id, checked on the file when it was written.
        mark = json.loads(Path(r["output_url"]).with_suffix(".json").read_text())["watermark"]
        assert mark["payload"] == r["variant_id"][:16] and mark["verified"], mark
        assert verify_file(mp4, expected=r["variant_id"]).matches
    progress = manifest.progress()
    assert progress.by_status["completed"] == 12 and progress.eta_s == 0
    assert render_pending(manifest, ex, root).completed == 0  # nothing left to do


def test_failures_are_recorded_with_a_reason(tmp_path):
    spec = load_spec(Path("examples/campaign.yaml").read_bytes())
    manifest = Manifest.create(str(tmp_path), campaign_id(spec), {}, expand(spec))
    bad = LocalExecutor("tiny")
    report = render_pending(manifest, bad, str(tmp_path), limit=1, window=4, overlap=4)
    assert report.failed == 1
    (row,) = [r for r in manifest.status().to_pylist() if r["status"] == "failed"]
    assert row["error_code"] == "invalid_input" and "overlap (4)" in row["error_message"]
    assert failure_code(MemoryError()) == "oom" and failure_code(OSError()) == "storage_error"
    assert failure_code(TimeoutError()) == "timeout"
    assert failure_code(StorageUnavailable("s3 down")) == "storage_error"
    assert failure_code(RuntimeError("CUDA out of memory")) == "oom"
    blocked = ValueError("prompt names a real person")
    blocked.failure_code = "policy_violation"  # how a policy check names its code
    assert failure_code(blocked) == "policy_violation"
    assert failure_code(RuntimeError("nan in latents")) == "model_error"
