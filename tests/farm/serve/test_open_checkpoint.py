"""A farm serving a diffusers checkpoint (tiny random Wan 2.1): the HTTP API names it, and a
campaign posted without a model renders end to end on the Serve Renderer pool.

The real app on the session's Serve, the campaign job on the session head's Jobs API; the
spec names no model, so it renders with the served one; naming another is a 422.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from farm.campaign.manifest import Manifest
from farm.output.media import probe_mp4
from farm.settings import hash_token
from tests.helpers.campaigns import statuses, wait_until, write_spec
from tests.helpers.cluster import deployed, tiny_farm_app

pytestmark = pytest.mark.slow

APP = "openckpt"
TOKEN = "acme-open-checkpoint"
ACME = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def farm(ray_cluster, serve_http, tmp_path_factory, tiny_wan):
    """(API base URL, storage root) of an app whose Renderer pool serves the tiny Wan."""
    root = tmp_path_factory.mktemp("open-checkpoint") / "farm-data"
    app = tiny_farm_app(
        str(root),
        model=tiny_wan,
        tokens={hash_token(TOKEN): "acme"},
        jobs_address=ray_cluster.dashboard_url,
        app_name=APP,
    )
    with deployed(app, APP, "/", http=serve_http):
        yield serve_http, root


def _post_spec(url: str, text: str) -> requests.Response:
    headers = ACME | {"content-type": "application/yaml"}
    return requests.post(f"{url}/v1/campaigns", data=text.encode(), headers=headers, timeout=120)


def test_the_api_names_the_served_model_and_refuses_another(farm, tiny_wan, tmp_path):
    url, _ = farm
    (served,) = requests.get(f"{url}/v1/models", headers=ACME, timeout=30).json()["data"]
    assert served["id"] == tiny_wan and served["frame_rule"] == "4n+1"
    assert served["pixel_multiple"] == 16
    video = {"prompt": "a bottle", "size": "32x32", "seconds": 0.5, "fps": 32, "steps": 1}
    r = requests.post(f"{url}/v1/videos", json=video | {"model": "tiny"}, headers=ACME, timeout=30)
    assert r.status_code == 422 and r.json()["param"] == "model", r.text
    spec = write_spec(tmp_path / "spec.yaml", "other-model").read_text(encoding="utf-8")
    r = _post_spec(url, spec.replace("preset: tiny", "preset: /etc"))
    assert r.status_code == 422 and r.json()["param"] == "preset", r.text
    assert tiny_wan in r.json()["message"]
    schema = requests.get(f"{url}/openapi.json", timeout=30).json()
    assert (
        tiny_wan in schema["components"]["schemas"]["VideoRequest"]["properties"]["model"]["enum"]
    )


def test_a_campaign_renders_on_the_served_checkpoint(farm, tiny_wan, tmp_path):
    url, root = farm
    spec = write_spec(tmp_path / "spec.yaml", "wan-campaign").read_text(encoding="utf-8")
    r = _post_spec(url, spec.replace("preset: tiny\n", ""))  # no model: the served one
    assert r.status_code == 201, r.text
    cid = r.json()["id"]

    def finished() -> bool:
        state = requests.get(f"{url}/v1/campaigns/{cid}", headers=ACME, timeout=60).json()
        assert state["state"] not in ("stalled", "cancelled"), state
        return state["state"] == "finished"

    wait_until(finished, timeout=300, what="the campaign to finish")
    manifest = Manifest.open(str(Path(root) / "tenants" / "acme"), cid)
    rows = statuses(manifest)
    assert len(rows) == 4 and {r["status"] for r in rows.values()} == {"completed"}
    for row in rows.values():
        info = probe_mp4(Path(row["output_url"]).read_bytes())
        assert (info.frames, info.width, info.height) == (17, 64, 64)
        sidecar = json.loads(Path(row["output_url"]).with_suffix(".json").read_text("utf-8"))
        assert sidecar["provenance"]["weights_sha256"], sidecar
