"""A campaign whose job died says so: the API and the page show the job failed and offer Resume.

The real app on the session's Serve, the campaign job on the session head's Jobs API. The
job's driver is SIGKILLed mid-campaign (a lost node, an OOM kill); the manifest still has
variants `in_progress`, so the manifest alone would say "running" with an ETA. The API and
the page must join it with the job's state: failed, work left, resumable; and Resume,
pressed on the page, finishes the campaign without rendering a finished variant again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest
import requests

from farm.campaign.manifest import Manifest
from farm.jobs.client import wait_for
from farm.jobs.state import submission_id
from farm.serve.campaigns import tenant_root
from farm.settings import hash_token
from tests.helpers.campaigns import completed_events, count, wait_until, write_spec
from tests.helpers.cluster import deployed, tiny_farm_app

pytestmark = pytest.mark.slow

APP = "jobstate"
TOKEN = "acme-jobstate-token"
ACME = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def farm(ray_cluster, serve_http, tmp_path_factory):
    """(API base URL, Jobs API address, storage root) of the app, campaign jobs on the head."""
    root = tmp_path_factory.mktemp("job-state") / "farm-data"
    app = tiny_farm_app(
        str(root),
        tokens={hash_token(TOKEN): "acme"},
        jobs_address=ray_cluster.dashboard_url,
        app_name=APP,
    )
    with deployed(app, APP, "/", http=serve_http):
        yield serve_http, ray_cluster.dashboard_url, root


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system (scripts/install-system-deps.sh installs it)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("no chromium on PATH: run scripts/install-system-deps.sh (make install does)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _driver_pids(root: str, cid: str) -> list[int]:
    """The job driver's processes: `python -m jobs.render_campaign --root R --campaign-id C`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if "jobs.render_campaign" in args and cid in args and root in args:
                    pids.append(int(entry.name))
    return pids


def _campaign(url: str, cid: str) -> dict:
    r = requests.get(f"{url}/v1/campaigns/{cid}", headers=ACME, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_killed_driver_shows_as_failed_and_resume_finishes_it(farm, browser, tmp_path):
    url, jobs, root = farm
    spec = write_spec(tmp_path / "spec.yaml", "job-state", products=4)
    slow = spec.read_text(encoding="utf-8").replace("steps: 2", "steps: 100")
    r = requests.post(
        f"{url}/v1/campaigns",
        data=slow.replace("[0.5]", "[2.0]").encode(),
        headers=ACME | {"content-type": "application/yaml"},
        timeout=120,
    )
    assert r.status_code == 201, r.text
    cid, sid = r.json()["id"], r.json()["job_id"]
    base = tenant_root(str(root), "acme")
    manifest = Manifest.open(base, cid)
    wait_until(lambda: count(manifest, "completed") >= 1, timeout=180, what="a finished variant")
    live = _campaign(url, cid)
    assert (live["state"], live["job"]["status"], live["resumable"]) == (
        "running",
        "running",
        False,
    )

    pids = _driver_pids(base, cid)
    assert pids, "no driver process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert wait_for(jobs, sid, timeout=120) == "FAILED"
    left = manifest.pending().num_rows
    assert 0 < left < 8, "the driver must die mid-way"

    dead = _campaign(url, cid)
    assert dead["job"]["id"] == sid and dead["job"]["status"] == "failed", dead["job"]
    assert dead["job"]["message"]  # Ray's words for why
    assert (dead["state"], dead["resumable"], dead["eta_s"]) == ("stalled", True, None)
    (row,) = requests.get(f"{url}/v1/campaigns", headers=ACME, timeout=60).json()
    assert (row["state"], row["job"]["status"]) == ("stalled", "failed")
    finished = {
        r["variant_id"] for r in manifest.status().to_pylist() if r["status"] == "completed"
    }

    context = browser.new_context()
    context.add_cookies([{"name": "farm_token", "value": TOKEN, "url": url}])
    page = context.new_page()
    try:
        assert page.goto(f"{url}/dashboard/campaigns/{cid}").status == 200
        page.wait_for_selector("#app[data-loaded='true']", timeout=30_000)
        assert page.text_content("#state") == "stalled"
        assert page.get_attribute("#job-status", "data-job-status") == "failed"
        assert "no job is rendering" in page.text_content("#job")
        assert page.text_content("#eta .card-value") != "unknown"
        page.screenshot(path=str(tmp_path / "stalled.png"), full_page=True)
        page.click("#resume")  # POST /v1/campaigns/{id}/resume with the page's cookie
        page.wait_for_function(
            "() => ['queued', 'running', 'finished'].includes("
            "document.getElementById('state')?.textContent)",
            timeout=60_000,
        )
    finally:
        context.close()

    resumed = submission_id(cid, 2, root=base)
    assert wait_for(jobs, resumed, timeout=300) == "SUCCEEDED"
    done = _campaign(url, cid)
    assert (done["state"], done["job"]["id"], done["job"]["status"]) == (
        "finished",
        resumed,
        "succeeded",
    )
    assert done["by_status"]["completed"] == 8 and not done["resumable"]
    assert all(completed_events(manifest)[vid] == 1 for vid in finished)  # not re-rendered
