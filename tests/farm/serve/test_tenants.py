"""Two tenants post one spec: two campaigns, two Ray jobs; neither joins nor stops the other's.

The real app on the session's Serve, its campaign jobs on the session head's Jobs API, as
`farm serve` runs them. The campaign id is a hash of the spec, so both tenants get the
same id; everything keyed by it (the job's submission id, its lookups, the cancel marker)
must also be keyed by the tenant's storage root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from farm.campaign.manifest import Manifest
from farm.jobs.client import wait_for
from farm.serve.campaigns import tenant_root
from farm.settings import hash_token
from tests.helpers.campaigns import wait_until, write_spec
from tests.helpers.cluster import deployed, tiny_farm_app

pytestmark = pytest.mark.slow

APP = "tenants"
TOKENS = {hash_token("acme-token"): "acme", hash_token("globex-token"): "globex"}
ACME = {"Authorization": "Bearer acme-token"}
GLOBEX = {"Authorization": "Bearer globex-token"}
YAML = {"content-type": "application/yaml"}


@dataclass(frozen=True)
class Farm:
    url: str
    jobs: str  # the Jobs API
    root: Path


@pytest.fixture(scope="module")
def farm(ray_cluster, serve_http, tmp_path_factory):
    """The farm's app, two tenants' tokens, campaign jobs on the session head."""
    root = tmp_path_factory.mktemp("tenants") / "farm-data"
    app = tiny_farm_app(
        str(root),
        tokens=TOKENS,
        jobs_address=ray_cluster.dashboard_url,
        app_name=APP,
    )
    with deployed(app, APP, "/", http=serve_http):
        yield Farm(serve_http, ray_cluster.dashboard_url, root)


def _spec(tmp_path: Path, name: str, *, slow: bool) -> bytes:
    """A tiny campaign; `slow`: 16 variants of 2 s at 100 steps (tens of seconds per job)."""
    path = write_spec(tmp_path / f"{name}.yaml", name, products=4 if slow else 1, formats=2)
    text = path.read_text(encoding="utf-8")
    if slow:
        text = text.replace("steps: 2", "steps: 100").replace("[0.5]", "[2.0]")
    return text.encode()


def _post(farm: Farm, body: bytes, tenant: dict) -> dict:
    r = requests.post(f"{farm.url}/v1/campaigns", data=body, headers=tenant | YAML, timeout=120)
    assert r.status_code == 201, r.text
    return r.json()


def _manifest(farm: Farm, tenant: str, cid: str) -> Manifest:
    return Manifest.open(tenant_root(str(farm.root), tenant), cid)


def _job_status(farm: Farm, sid: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(farm.jobs).get_job_status(sid).value)


def test_two_tenants_one_spec_get_separate_jobs_and_both_complete(farm: Farm, tmp_path):
    body = _spec(tmp_path, "tenants-same", slow=False)
    acme, globex = _post(farm, body, ACME), _post(farm, body, GLOBEX)
    assert acme["id"] == globex["id"]  # the same spec, so the same content hash
    assert acme["job_id"] != globex["job_id"], "globex was handed acme's job"
    cid = acme["id"]
    for job in (acme["job_id"], globex["job_id"]):
        assert wait_for(farm.jobs, job, timeout=240) == "SUCCEEDED"
    for name, headers in (("acme", ACME), ("globex", GLOBEX)):
        r = requests.get(f"{farm.url}/v1/campaigns/{cid}", headers=headers, timeout=30)
        assert r.status_code == 200 and r.json()["by_status"]["completed"] == 4, r.text
        assert _manifest(farm, name, cid).progress().by_status["completed"] == 4
    # Posting again finds each tenant's own (finished) job, never the other's.
    assert _post(farm, body, GLOBEX)["job_id"] == globex["job_id"]
    assert _post(farm, body, ACME)["job_id"] == acme["job_id"]


def test_a_tenants_cancel_leaves_the_other_tenants_job_running(farm: Farm, tmp_path):
    body = _spec(tmp_path, "tenants-cancel", slow=True)
    acme, globex = _post(farm, body, ACME), _post(farm, body, GLOBEX)
    cid, theirs = acme["id"], globex["job_id"]
    assert acme["job_id"] != theirs
    mine = _manifest(farm, "acme", cid)
    other = _manifest(farm, "globex", cid)

    def started(manifest: Manifest) -> bool:
        by_status = manifest.progress().by_status
        return by_status["in_progress"] + by_status["completed"] > 0

    # globex's own manifest moves: its job renders it (it is not left `queued`).
    wait_until(lambda: started(other), timeout=120, what="globex's job to start rendering")
    r = requests.post(f"{farm.url}/v1/campaigns/{cid}/cancel", headers=ACME, timeout=30)
    assert r.status_code == 200, r.text
    assert theirs not in r.json()["message"]
    assert wait_for(farm.jobs, acme["job_id"], timeout=240) == "SUCCEEDED"
    assert mine.progress().by_status["cancelled"] > 0
    # acme's job is over; globex's is not stopped and nothing of globex's is cancelled.
    assert _job_status(farm, theirs) == "RUNNING"
    assert not (
        Path(tenant_root(str(farm.root), "globex")) / "campaigns" / cid / "cancel.json"
    ).exists()
    assert other.progress().by_status["cancelled"] == 0
    assert wait_for(farm.jobs, theirs, timeout=300) == "SUCCEEDED"
    assert other.progress().by_status["completed"] == 16
