"""Per-tenant quotas: past each one a 429 with Retry-After naming the limit; no request hangs.

The real app runs on the session's Serve (`deployed`), with five tenants whose quotas
differ ("*" plus overrides). Campaigns refused by a quota never reach the Jobs API, which
nothing serves here: a campaign that passes its quotas ends at a 503 ``jobs_unavailable``.
The counting of running campaigns, queued variants and GPU-seconds is checked on a real
manifest in storage, with the job's liveness given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from farm.campaign.spec import load_spec
from farm.jobs.client import prepare_campaign
from farm.jobs.inputs import Campaign
from farm.serve.campaigns import resume, tenant_root
from farm.serve.quotas import campaign_usage, seconds_to_midnight
from farm.serve.wire import RequestError
from farm.settings import Quota, hash_token
from tests.helpers.cluster import deployed, tiny_farm_app
from tests.helpers.paths import EXAMPLE_SPEC

TENANTS = ["acme", "globex", "initech", "hooli", "loop", "burst"]
QUOTAS = {
    "*": {"max_concurrent_videos": 2},
    "globex": {"max_concurrent_videos": 1},
    "initech": {"max_concurrent_campaigns": 0},
    "hooli": {"gpu_seconds_per_day": 0.001},
    "acme": {"max_queued_variants": 5},
    "burst": {"max_concurrent_videos": None},
}
# Long renders (the most steps the app allows), so videos stay unfinished while we look.
SLOW = {"prompt": "a red bottle", "size": "64x32", "seconds": 2, "fps": 8, "steps": 100}
QUICK = {"prompt": "a red bottle", "size": "64x32", "seconds": 0.5, "fps": 32, "steps": 2}
# The example campaign on the model this farm serves (a spec may name only that one).
SPEC = EXAMPLE_SPEC.read_bytes().replace(b"preset: small", b"preset: tiny")
EXAMPLE_VARIANTS = Campaign.of_spec(load_spec(SPEC, fmt="yaml")).variants


@pytest.fixture(scope="module")
def url(serve_http, tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("quotas") / "root"
    app = tiny_farm_app(
        str(root),
        # More render slots than the event loop's default thread pool has threads (at most
        # 32): renders there left no thread for a create's storage check.
        director_max_videos=40,
        tokens={hash_token(t): t for t in TENANTS},
        quotas=QUOTAS,
        jobs_address="http://127.0.0.1:9",  # nothing listens: quota refusals come first
    )
    with deployed(app, "quotas", "/quotas", http=serve_http):
        base = f"{serve_http}/quotas"
        yield base
        for tenant in TENANTS:  # free the Renderer before the app goes
            for video_id in _created.get(tenant, []):
                requests.delete(f"{base}/v1/videos/{video_id}", headers=_auth(tenant), timeout=30)


_created: dict[str, list[str]] = {}


def _auth(tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tenant}"}


def post_video(url: str, tenant: str, seed: int, body: dict | None = None) -> requests.Response:
    r = requests.post(
        f"{url}/v1/videos", json={**(body or SLOW), "seed": seed}, headers=_auth(tenant), timeout=60
    )
    if r.status_code == 201:
        _created.setdefault(tenant, []).append(r.json()["id"])
    return r


def assert_quota(r: requests.Response, limit: str, tenant: str) -> dict[str, Any]:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["code"] == "quota_exceeded" and body["param"] == limit, body
    assert limit in body["message"] and tenant in body["message"], body
    assert int(r.headers["Retry-After"]) >= 1
    return body


def test_videos_over_the_tenants_quota_get_429_and_other_tenants_go_on(url: str):
    for seed in (1, 2):
        assert post_video(url, "acme", seed).status_code == 201
    assert_quota(post_video(url, "acme", 3), "max_concurrent_videos", "acme")
    # The same request again is the same video, not a new one: still answered.
    assert post_video(url, "acme", 1).status_code == 201
    # globex's own override (1), while acme is at its limit; initech has the default (2).
    assert post_video(url, "globex", 1).status_code == 201
    assert_quota(post_video(url, "globex", 2), "max_concurrent_videos", "globex")
    assert post_video(url, "initech", 1).status_code == 201
    # A cancelled video frees its slot.
    video_id = _created["acme"][0]
    requests.delete(f"{url}/v1/videos/{video_id}", headers=_auth("acme"), timeout=30)
    assert post_video(url, "acme", 3).status_code == 201


def test_a_tight_loop_of_posts_is_answered_promptly(url: str):
    latencies, statuses = [], []
    for seed in range(60):
        t0 = time.perf_counter()
        statuses.append(post_video(url, "loop", 1000 + seed).status_code)
        latencies.append(time.perf_counter() - t0)
    assert statuses[:2] == [201, 201] and set(statuses[2:]) == {429}, statuses
    assert max(latencies) < 5, f"slowest POST took {max(latencies):.1f} s"

    def burst(seed: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        code = post_video(url, "loop", 2000 + seed).status_code
        return code, time.perf_counter() - t0

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(burst, range(60)))
    assert {code for code, _ in answers} == {429}, answers
    assert max(s for _, s in answers) < 5, answers


def test_campaigns_over_the_tenants_quotas_get_429(url: str):
    spec = SPEC
    headers = {"content-type": "application/yaml"}
    r = requests.post(
        f"{url}/v1/campaigns", data=spec, headers=headers | _auth("initech"), timeout=60
    )
    assert_quota(r, "max_concurrent_campaigns", "initech")
    r = requests.post(f"{url}/v1/campaigns", data=spec, headers=headers | _auth("acme"), timeout=60)
    body = assert_quota(r, "max_queued_variants", "acme")
    assert f"{len(EXAMPLE_VARIANTS)} new" in body["message"], body
    # globex's quotas let it through, up to the (unreachable) Jobs API.
    r = requests.post(
        f"{url}/v1/campaigns", data=spec, headers=headers | _auth("globex"), timeout=60
    )
    assert r.status_code == 503 and r.json()["code"] == "jobs_unavailable", r.text


def test_a_resume_counts_against_the_campaign_quotas(ray_cluster, tmp_path: Path):
    """Resuming a stalled campaign queues its variants again: the same quotas hold."""
    campaign = Campaign.of_spec(load_spec(EXAMPLE_SPEC.read_bytes(), fmt="yaml"))
    cid, pending = campaign.campaign_id, campaign.variants.num_rows
    for tenant, quota, limit in (
        ("initech", Quota(max_concurrent_campaigns=0), "max_concurrent_campaigns"),
        ("acme", Quota(max_queued_variants=pending - 1), "max_queued_variants"),
    ):
        prepare_campaign(campaign, tenant_root(str(tmp_path), tenant))  # never ran: stalled
        with pytest.raises(RequestError) as refused:
            resume(str(tmp_path), cid, ray_cluster.dashboard_url, "none", tenant, quota=quota)
        assert (refused.value.status, refused.value.param) == (429, limit)
        assert "Retry-After" in refused.value.headers


def test_the_daily_gpu_budget_gets_429_until_utc_midnight(url: str):
    r = post_video(url, "hooli", 1, QUICK)
    assert r.status_code == 201, r.text
    video_id = r.json()["id"]
    done = requests.get(
        f"{url}/v1/videos/{video_id}", params={"wait": 60}, headers=_auth("hooli"), timeout=90
    )
    assert done.json()["status"] == "completed", done.text
    r = post_video(url, "hooli", 2, QUICK)
    assert_quota(r, "gpu_seconds_per_day", "hooli")
    assert abs(int(r.headers["Retry-After"]) - seconds_to_midnight()) <= 60
    spec = SPEC
    headers = {"content-type": "application/yaml"} | _auth("hooli")
    r = requests.post(f"{url}/v1/campaigns", data=spec, headers=headers, timeout=60)
    assert_quota(r, "gpu_seconds_per_day", "hooli")
    assert post_video(url, "initech", 9, QUICK).status_code == 201  # no budget of its own


def test_campaign_usage_counts_running_campaigns_queue_and_todays_gpu_seconds(tmp_path: Path):
    root = str(tmp_path)
    spec = load_spec(EXAMPLE_SPEC.read_bytes(), fmt="yaml")
    campaign = Campaign.of_spec(spec)
    manifest = prepare_campaign(campaign, root)
    ids = campaign.variants["variant_id"].to_pylist()
    yesterday = datetime.now(UTC) - timedelta(days=1, hours=1)
    manifest.writer(worker="t").commit(
        [
            {"variant_id": ids[0], "status": "failed", "attempt": 1, "gpu_seconds": 5.0},
            {"variant_id": ids[0], "status": "completed", "attempt": 2, "gpu_seconds": 2.5},
            {"variant_id": ids[1], "status": "completed", "attempt": 1, "gpu_seconds": 100.0}
            | {"ts": yesterday},
        ]
    )
    cid = campaign.campaign_id
    usage = campaign_usage(root, lambda c: c == cid, gpu_seconds=True)
    assert usage.running == [cid] and usage.queued == len(ids) - 2
    assert usage.gpu_seconds_today == pytest.approx(7.5)  # every attempt today, not yesterday's
    assert campaign_usage(root, lambda c: False).running == []  # its job is over
    assert campaign_usage(root, lambda c: True, cancelled=lambda c: True).running == []


def test_without_a_video_quota_a_post_never_waits_for_renders(url: str):
    latencies = []
    try:
        for seed in range(40):
            t0 = time.perf_counter()
            assert post_video(url, "burst", seed).status_code == 201
            latencies.append(time.perf_counter() - t0)
    finally:
        for video_id in _created.get("burst", []):
            requests.delete(f"{url}/v1/videos/{video_id}", headers=_auth("burst"), timeout=30)
    assert max(latencies) < 5, f"slowest POST took {max(latencies):.1f} s"
