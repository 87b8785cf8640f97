"""The campaign page in a real browser, on the real Serve app, behind the Api's auth.

A campaign is rendered for tenant `acme` (three variants finish, one fails for real);
headless Chromium (Debian's, driven by Playwright) signs in through the page's token
form and must show the manifest's counts, load every thumbnail and play a video.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import playwright.sync_api as playwright_api
import pyarrow.compute as pc
import pytest
import requests
import yaml

from farm.campaign import cost
from farm.campaign.manifest import Manifest
from farm.campaign.spec import load_spec
from farm.jobs.client import prepare_campaign
from farm.jobs.inputs import Campaign
from farm.jobs.loop import render_concurrently
from farm.jobs.options import JobOptions
from farm.render.executors import LocalExecutor
from farm.serve.campaigns import tenant_root
from tests.helpers.cluster import deployed, tiny_farm_app
from tests.helpers.paths import REPO

TOKEN, OTHER = "acme-dashboard-token", "globex-dashboard-token"


@dataclass(frozen=True)
class Farm:
    url: str
    manifest: Manifest
    campaign_id: str
    base: str  # acme's storage root


def _spec() -> dict:
    spec = yaml.safe_load((REPO / "examples/campaign.yaml").read_text(encoding="utf-8"))
    spec["name"] = "dashboard-campaign"
    spec["products"] = spec["products"][:1]
    spec["locales"] = {k: spec["locales"][k] for k in ("en-US", "ar-SA")}
    spec["formats"] = [
        {"name": "square", "aspect": "1:1", "width": 64, "height": 64},
        {"name": "portrait", "aspect": "4:5", "width": 64, "height": 80},
    ]
    return spec | {"durations": [0.5], "fps": 32, "steps": 2, "preset": "tiny"}


@pytest.fixture(scope="module")
def farm(serve_http, tmp_path_factory) -> Farm:
    """The Serve app (tokens for tenants acme and globex) and a finished acme campaign."""
    root = str(tmp_path_factory.mktemp("dashboard") / "farm-data")
    manifest = prepare_campaign(Campaign.of_spec(load_spec(_spec())), tenant_root(root, "acme"))
    base = tenant_root(root, "acme")
    executor = LocalExecutor("tiny")
    # One variant fails for real (a window no longer than its overlap), the rest finish.
    once = JobOptions(concurrency=1, max_attempts=1)
    failed = render_concurrently(manifest, executor, base, once, limit=1, window=4, overlap=4)
    done = render_concurrently(manifest, executor, base, once)
    assert (failed.failed, done.completed) == (1, 3)

    tokens = {
        hashlib.sha256(t.encode()).hexdigest(): n for t, n in [(TOKEN, "acme"), (OTHER, "globex")]
    }
    app = tiny_farm_app(
        root,
        tokens=tokens,
    )
    # At /: the page's links and the media URLs are absolute.
    with deployed(app, "dashboard", "/", http=serve_http):
        yield Farm(serve_http, manifest, manifest.campaign_id, base)


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


def _get(farm: Farm, path: str, token: str | None = None, **headers) -> requests.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(farm.url + path, headers=headers, timeout=60)


def test_dashboard_refuses_requests_without_a_valid_token(farm: Farm):
    cid = farm.campaign_id
    vid = farm.manifest.status().to_pylist()[0]["variant_id"]
    for path in [
        "/dashboard",
        f"/dashboard/campaigns/{cid}",
        f"/dashboard/api/campaigns/{cid}/variants",
        f"/dashboard/media/{cid}/{vid}.jpg",
        "/dashboard/static/dashboard.js",
    ]:
        for token in (None, "not-a-token"):
            r = _get(farm, path, token)
            assert r.status_code == 401, (path, token, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert vid not in r.text and "dashboard-campaign" not in r.text
    page = _get(farm, f"/dashboard/campaigns/{cid}")
    assert "text/html" in page.headers["content-type"] and 'id="token-form"' in page.text
    api = _get(farm, f"/dashboard/api/campaigns/{cid}/variants")
    assert api.json()["code"] == "unauthorized"
    # Another tenant's valid token does not see acme's campaign or files.
    assert _get(farm, f"/dashboard/api/campaigns/{cid}/variants", OTHER).status_code == 404
    assert _get(farm, f"/dashboard/media/{cid}/{vid}.jpg", OTHER).status_code == 404
    assert _get(farm, f"/dashboard/campaigns/{cid}", OTHER).status_code == 200  # page shell


def test_media_ids_are_checked_and_ranges_served(farm: Farm):
    cid = farm.campaign_id
    done = [r for r in farm.manifest.status().to_pylist() if r["status"] == "completed"]
    vid = done[0]["variant_id"]
    for bad in [f"{vid}.json", f"{vid}.MP4", "..%2F..%2Fspec.json", f"{vid[:-1]}.mp4", "x.mp4"]:
        assert _get(farm, f"/dashboard/media/{cid}/{bad}", TOKEN).status_code == 404, bad
    assert _get(farm, f"/dashboard/media/{'0' * 16}/{vid}.mp4", TOKEN).status_code == 404
    whole = _get(farm, f"/dashboard/media/{cid}/{vid}.mp4", TOKEN)
    assert whole.status_code == 200 and whole.content == Path(done[0]["output_url"]).read_bytes()
    part = _get(farm, f"/dashboard/media/{cid}/{vid}.mp4", TOKEN, Range="bytes=10-99")
    assert part.status_code == 206 and part.content == whole.content[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(whole.content)}"
    beyond = _get(farm, f"/dashboard/media/{cid}/{vid}.mp4", TOKEN, Range="bytes=99999999-")
    assert beyond.status_code == 416


def test_campaign_page_in_a_browser(farm: Farm, browser, tmp_path: Path):
    progress = farm.manifest.progress()
    status = farm.manifest.status().to_pylist()
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        first = page.goto(f"{farm.url}/dashboard/campaigns/{farm.campaign_id}")
        assert first.status == 401  # no cookie yet: the token form
        page.fill("#token", TOKEN)
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#app[data-loaded='true']", timeout=30_000)

        # Counts shown equal the manifest's: by status, and by locale x format.
        shown = page.eval_on_selector_all(
            "#summary [data-status]",
            "cards => Object.fromEntries(cards.map(c => "
            "[c.dataset.status, Number(c.querySelector('.card-value').dataset.count)]))",
        )
        assert shown == {"total": progress.total, **progress.by_status}, shown
        cells = page.eval_on_selector_all(
            "#progress-matrix td.cell",
            "cells => cells.map(c => [c.dataset.locale, c.dataset.format, "
            "Number(c.dataset.completed), Number(c.dataset.failed), Number(c.dataset.total)])",
        )
        expected = {}
        for g in progress.by_group.to_pylist():
            cell = expected.setdefault((g["locale"], g["format"]), {"completed": 0, "failed": 0})
            cell[g["status"]] = cell.get(g["status"], 0) + g["count"]
        assert len(cells) == len(expected) == 4
        for locale, fmt, completed, failed, total in cells:
            want = expected[(locale, fmt)]
            assert (completed, failed, total) == (want["completed"], want["failed"], 1)
        assert page.text_content("#eta .card-value")

        # GPU-seconds of the finished variants: estimated (their work priced by the renders
        # the job measured under acme's root) beside measured.
        calibration = cost.load(farm.base, "tiny")
        assert calibration is not None and calibration.source == "renders"
        assert calibration.renders == 3 and calibration.device == "cpu"
        rows = farm.manifest.status()
        done = rows.filter(pc.equal(rows["status"], "completed"))
        measured = float(page.get_attribute("#gpu-seconds", "data-measured"))
        estimated = float(page.get_attribute("#gpu-estimate", "data-estimate"))
        assert measured == pytest.approx(progress.completed_gpu_s, rel=1e-5)
        assert estimated == pytest.approx(calibration.seconds_for(cost.variant_work(done).sum()))
        assert 0.5 < estimated / measured < 2, (estimated, measured)
        assert "measured on 3 finished renders" in page.get_attribute("#gpu-estimate", "title")

        # Failures with their reasons.
        (bad,) = [r for r in status if r["status"] == "failed"]
        reason = page.text_content(f"#failures tr[data-variant='{bad['variant_id']}'] .reason")
        assert reason == bad["error_code"] == "invalid_input"
        assert (
            page.get_attribute("#failures .chip[data-reason='invalid_input']", "data-count") == "1"
        )

        # Every finished variant has a thumbnail, and every thumbnail loaded.
        finished = {r["variant_id"] for r in status if r["status"] == "completed"}
        thumbs = page.eval_on_selector_all(
            "#thumbnails a.thumb", "a => a.map(x => x.dataset.variant)"
        )
        assert set(thumbs) == finished and len(thumbs) == 3
        page.wait_for_function(
            "() => [...document.querySelectorAll('#thumbnails img')].every(i => i.complete)"
        )
        widths = page.eval_on_selector_all(
            "#thumbnails img", "imgs => imgs.map(i => i.naturalWidth)"
        )
        assert all(w > 0 for w in widths), widths
        # Each tile names its product, not only its locale and format.
        by_id = {r["variant_id"]: r for r in status}
        names = page.eval_on_selector_all(
            "#thumbnails a.thumb",
            "a => a.map(x => [x.dataset.variant, x.querySelector('.thumb-product')?.textContent])",
        )
        assert names == [[v, by_id[v]["product_name"]] for v in thumbs], names
        page.screenshot(path=str(tmp_path / "campaign-page.png"), full_page=True)

        # The player takes each variant's shape: the picture fills the box, no black strip.
        for vid in thumbs:
            page.click(f"#thumbnails a.thumb[data-variant='{vid}']")
            page.wait_for_function(
                "v => { const p = document.getElementById('player-video');"
                " return p.dataset.variant === v && p.readyState >= 1 && p.videoWidth > 0; }",
                arg=vid,
                timeout=30_000,
            )
            box = page.evaluate(
                "() => { const v = document.getElementById('player-video');"
                " const r = v.getBoundingClientRect();"
                " const d = document.getElementById('player').getBoundingClientRect();"
                " return [r.width, r.height, v.videoWidth, v.videoHeight, d.width]; }"
            )
            width, height, video_w, video_h, dialog_w = box
            fmt = by_id[vid]["width"] / by_id[vid]["height"]
            assert abs(width / height - fmt) < 0.02, (vid, box, fmt)
            assert abs(video_w / video_h - fmt) < 0.02, (vid, box, fmt)
            assert abs(dialog_w - width) <= 1, (vid, box)  # nothing beside the picture
            assert height >= 0.5 * 1000 * 0.8, (vid, box)  # as large as the window allows
            page.keyboard.press("Escape")
            page.wait_for_selector("#player:not([open])", state="attached")

        # Clicking a thumbnail opens a playable video.
        page.click(f"#thumbnails a.thumb[data-variant='{thumbs[0]}']")
        page.wait_for_selector("#player[open]")
        page.wait_for_function(
            "() => { const v = document.getElementById('player-video');"
            " return v.readyState >= 1 && v.duration > 0; }",
            timeout=30_000,
        )
        src = page.eval_on_selector("#player-video", "v => v.currentSrc")
        assert src.endswith(f"/{thumbs[0]}.mp4")
        video = page.request.get(src)  # the page's own cookie, no header
        assert video.status == 200 and video.headers["content-type"] == "video/mp4"
        assert video.body()[4:8] == b"ftyp"
        page.screenshot(path=str(tmp_path / "campaign-video.png"))
        assert (tmp_path / "campaign-page.png").stat().st_size > 0
    finally:
        page.close()


def test_campaign_list_links_to_the_campaign(farm: Farm, browser):
    context = browser.new_context()
    context.add_cookies([{"name": "farm_token", "value": TOKEN, "url": farm.url}])
    page = context.new_page()
    try:
        assert page.goto(f"{farm.url}/dashboard").status == 200
        page.wait_for_selector("#app[data-loaded='true']")
        row = f"#campaigns tr[data-campaign='{farm.campaign_id}']"
        assert page.text_content(f"{row} td[data-status='completed']") == "3"
        assert page.text_content(f"{row} td[data-status='failed']") == "1"
        page.click(f"{row} a")
        page.wait_for_selector("#app[data-loaded='true']")
        assert page.url.endswith(f"/dashboard/campaigns/{farm.campaign_id}")
    finally:
        context.close()
