"""A campaign end to end in-process: spec or feed → manifest → localized MP4s → events → progress.

The campaign job's loop (`render_concurrently`) at concurrency 1, as `farm demo
--in-process` runs it, on the one render path (`farm.output.render`).
"""

import hashlib
import json
from pathlib import Path

import pytest

from farm.jobs.client import prepare_campaign
from farm.jobs.inputs import Campaign, load_campaign
from farm.jobs.loop import failure_code, render_concurrently
from farm.jobs.options import JobOptions
from farm.output.media import probe_mp4
from farm.output.render import render_video, variant_order
from farm.output.watermark import verify_file
from farm.render.executors import LocalExecutor
from farm.storage import StorageUnavailable
from tests.helpers.campaigns import write_feed

ONE_AT_A_TIME = JobOptions(concurrency=1)


@pytest.fixture(scope="module")
def executor():
    return LocalExecutor("tiny")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("farm"))
    return root, prepare_campaign(load_campaign("examples/campaign.yaml"), root)


def test_campaign_renders_every_variant_once(campaign, executor):
    root, manifest = campaign
    first = render_concurrently(manifest, executor, root, ONE_AT_A_TIME, limit=5)
    assert (first.completed, first.failed) == (5, 0)
    assert manifest.progress().by_status["completed"] == 5
    # A second pass (think: a restarted job) finishes the rest and re-renders nothing.
    done = {r["variant_id"]: r["sha256"] for r in manifest.status().to_pylist() if r["sha256"]}
    second = render_concurrently(manifest, executor, root, ONE_AT_A_TIME)
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
    assert render_concurrently(manifest, executor, root, ONE_AT_A_TIME).completed == 0
    # Each pass left its run record; the passes took turns as writers.
    runs = manifest.runs()
    assert [r["completed"] for r in runs] == [5, 7, 0]
    assert [r["epoch"] for r in runs] == sorted({r["epoch"] for r in runs})


def test_the_loop_writes_what_the_render_path_writes(campaign, executor, tmp_path):
    """The job's file for a variant is, byte for byte, `render_video` of that variant."""
    root, manifest = campaign
    if not manifest.progress().by_status["completed"]:
        render_concurrently(manifest, executor, root, ONE_AT_A_TIME, limit=1)
    row = next(r for r in manifest.status().to_pylist() if r["status"] == "completed")
    variant = next(v for v in manifest.variants.to_pylist() if v["variant_id"] == row["variant_id"])
    again = render_video(executor, variant_order(variant), str(tmp_path))
    assert again.sha256 == row["sha256"]
    assert Path(again.mp4_url).read_bytes() == Path(row["output_url"]).read_bytes()


def test_a_feed_renders_through_the_same_loop(tmp_path, executor):
    campaign = load_campaign(write_feed(tmp_path / "feed.csv"))
    assert campaign.spec is None and campaign.variants.num_rows == 3
    root = str(tmp_path / "root")
    manifest = prepare_campaign(campaign, root)
    assert manifest.campaign_id == campaign.campaign_id
    report = render_concurrently(manifest, executor, root, ONE_AT_A_TIME)
    assert (report.completed, report.failed) == (3, 0)
    for r in manifest.status().to_pylist():
        info = probe_mp4(Path(r["output_url"]).read_bytes())
        assert (info.frames, info.width, info.height) == (r["frames"], r["width"], r["height"])
        assert r["output_url"].startswith(f"{root}/outputs/{campaign.campaign_id}/")
    pinned = next(r for r in manifest.variants.to_pylist() if r["locale"] == "en-US")
    assert pinned["seed"] == 7  # the feed's own seed, not a derived one
    # The same feed is the same campaign: preparing it again finds the same manifest.
    assert prepare_campaign(load_campaign(tmp_path / "feed.csv"), root).campaign_id == (
        campaign.campaign_id
    )


def test_failures_are_recorded_with_a_reason(tmp_path):
    campaign = load_campaign("examples/campaign.yaml")
    manifest = prepare_campaign(campaign, str(tmp_path))
    bad = LocalExecutor("tiny")
    report = render_concurrently(
        manifest, bad, str(tmp_path), ONE_AT_A_TIME, limit=1, window=4, overlap=4
    )
    assert (report.failed, report.retries) == (1, 0)  # invalid input is not retried
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


def test_job_options_have_one_set_of_defaults():
    from jobs.render_campaign import parse_args

    options = JobOptions(concurrency=3, max_attempts=1, serve_app="farm")
    _, parsed = parse_args(["--root", "r", "--campaign-id", "c", *options.argv()])
    assert parsed == options  # the entrypoint reads back exactly what the client sent
    _, defaults = parse_args(["--root", "r", "--campaign-id", "c"])
    assert defaults == JobOptions()
    assert JobOptions.given(concurrency=None, preset="", actors=4) == JobOptions(actors=4)
    with pytest.raises(ValueError, match="concurrency"):
        JobOptions(concurrency=0)


def test_a_campaign_is_typed_once_it_has_entered(tmp_path):
    spec_file = tmp_path / "campaign.yaml"
    spec_file.write_bytes(Path("examples/campaign.yaml").read_bytes())
    campaign = load_campaign(spec_file)
    spec_file.unlink()  # nothing downstream reads the file again
    manifest = prepare_campaign(campaign, str(tmp_path / "root"))
    assert manifest.campaign_id == Campaign.of_spec(campaign.spec).campaign_id
    assert manifest.spec["name"] == campaign.name and manifest.variants.num_rows == 12
