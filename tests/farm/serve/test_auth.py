"""Auth and tenants: no token, no answer; another tenant's id is not found; no path escapes.

Route coverage is computed from the app itself (its routes in process, its OpenAPI over
HTTP), so a route added later, e.g. the dashboard's, is held to the same rules.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from farm.campaign.spec import load_spec
from farm.jobs.client import prepare_campaign
from farm.jobs.inputs import Campaign
from farm.serve.api import in_process
from farm.serve.app import FarmAppArgs, build_app
from farm.serve.auth import PUBLIC_PATHS
from farm.serve.campaigns import tenant_root
from farm.settings import hash_token
from tests.helpers.cluster import deployed
from tests.helpers.inprocess import AsgiClient
from tests.helpers.paths import EXAMPLE_SPEC

EXAMPLE = yaml.safe_load(EXAMPLE_SPEC.read_text("utf-8"))
TOKENS = {hash_token("acme-token"): "acme", hash_token("globex-token"): "globex"}
ACME = {"Authorization": "Bearer acme-token"}
GLOBEX = {"Authorization": "Bearer globex-token"}
VIDEO = {"prompt": "a red bottle on a beach", "size": "64x32", "seconds": 0.5, "fps": 32}
DOCS = ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")


def _files(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


def _paths_to_try(path: str) -> str:
    """A route template with every parameter filled in (hex ids: they pass format checks)."""
    out, rest = "", path
    while "{" in rest:
        head, _, tail = rest.partition("{")
        _, _, rest = tail.partition("}")
        out += head + "0123456789abcdef"
    return out + rest


# ---- in process: every route of the app ------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Iterator[tuple[AsgiClient, Path]]:
    """The Api in this process (no Director: nothing here may reach one), storage under top."""
    top = tmp_path_factory.mktemp("auth-local")
    root = top / "root"
    root.mkdir()
    with in_process(None, str(root), tokens=TOKENS, jobs_address="http://127.0.0.1:9") as app:
        client = AsgiClient(app)
        yield client, top
        client.close()


def _all_routes(router: Any) -> Iterator[Route]:
    """Every route of the app, through included routers: API routes and plain ones alike."""
    for route in router.routes:
        if hasattr(route, "original_router"):  # FastAPI >= 0.137 nests included routers
            yield from _all_routes(route.original_router)
        elif isinstance(route, Mount):
            pytest.fail(f"mount {route.path} would bypass the auth dependency")
        elif isinstance(route, Route) and route.path not in DOCS:
            yield route


def test_every_route_needs_a_token(local):
    client, _ = local
    routes = [
        (m, r) for r in _all_routes(client.app) for m in sorted(r.methods or ()) if m != "HEAD"
    ]
    assert len(routes) >= 9, routes  # the /v1 API at least; new routes count automatically
    for method, route in routes:
        url = _paths_to_try(route.path)
        if route.path in PUBLIC_PATHS:
            # Served without a token: /healthz answers 503 "degraded" here, as this app's
            # Jobs API address is a dead port; never 401.
            assert client.request(method, url).status in (200, 503), route.path
            continue
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic YWNtZTpwdw=="},
            {"Authorization": "Bearer "},
            {"Cookie": "farm_token=wrong"},
        ):
            r = client.request(method, url, headers=headers, body=b"{}")
            assert r.status == 401, (method, route.path, headers, r.body)
            assert r.headers["www-authenticate"] == "Bearer"
            if isinstance(route, APIRoute):
                assert r.json()["code"] == "unauthorized", r.body
    for path in DOCS:
        assert client.get(path).status == 200, path


def test_token_by_header_or_cookie_names_the_tenant(local):
    client, _ = local
    assert client.get("/v1/campaigns", headers=ACME).status == 200
    assert client.get("/v1/campaigns", headers={"Cookie": "farm_token=acme-token"}).status == 200
    assert client.get("/v1/campaigns", headers={"Authorization": "bearer acme-token"}).status == 200


TRAVERSALS = [
    "..",
    "../../../../etc/passwd",
    "..%2f..%2fetc",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fx",
    "/etc/passwd",
    "..\\..\\windows",
    "a\x00b",
    "....//....//x",
    "0123456789abcdef/../../x",
    "0123456789abcdef\n",
    "0123456789abcdef0123456789abcdef\n",
    "~root",
    "C:\\x",
]


def test_traversal_in_every_id_is_refused_and_writes_nothing(local):
    client, top = local
    before = _files(top)
    for bad in TRAVERSALS:
        for method, template in [
            ("GET", "/v1/videos/{}"),
            ("DELETE", "/v1/videos/{}"),
            ("GET", "/v1/videos/{}/content"),
            ("GET", "/v1/campaigns/{}"),
            ("POST", "/v1/campaigns/{}/cancel"),
            ("GET", "/v1/campaigns/{}/manifest"),
        ]:
            r = client.request(method, template.format(bad), headers=ACME)
            assert 400 <= r.status < 500, (method, template, bad, r.body)
        r = client.get("/v1/videos/" + "0" * 32 + "/content", query=f"variant={bad}", headers=ACME)
        assert 400 <= r.status < 500, (bad, r.body)
        for field in ("products.0.id", "formats.0.name", "locale"):
            spec = copy.deepcopy(EXAMPLE)
            if field == "locale":
                spec["locales"][bad] = spec["locales"].pop("en-US")
            else:
                key, i, sub = field.split(".")
                spec[key][int(i)][sub] = bad
            r = client.post("/v1/campaigns", json=spec, headers=ACME)
            assert r.status == 422 and r.json()["code"] == "invalid_campaign", (field, bad)
        r = client.post("/v1/campaigns", json={**EXAMPLE, "output_root": bad}, headers=ACME)
        assert r.status == 422, r.body
    assert _files(top) == before


# ---- on a real Serve: end to end ---------------------------------------------------------


@dataclass(frozen=True)
class Farm:
    url: str
    root: Path


@pytest.fixture(scope="module")
def farm(serve_http, tmp_path_factory) -> Iterator[Farm]:
    """The farm app at / on the session's Serve: two tenants' tokens, no anonymous access."""
    root = tmp_path_factory.mktemp("auth-serve") / "root"
    args = FarmAppArgs(
        model="tiny",
        storage_root=str(root),
        renderer_max_replicas=1,
        renderer_threads=1,
        director_num_cpus=0,
        tokens=TOKENS,
        max_steps=4,
        jobs_address="http://127.0.0.1:9",
    )
    with deployed(build_app(args), "auth", "/", http=serve_http):
        yield Farm(serve_http, root)


def test_over_http_every_documented_route_needs_a_token(farm: Farm):
    health = requests.get(f"{farm.url}/healthz", timeout=30)  # public, and truthful:
    assert health.status_code == 503, health.text  # no Jobs API at jobs_address
    assert health.json()["status"] == "degraded" and "unavailable" in health.json()["jobs"]
    spec = requests.get(f"{farm.url}/openapi.json", timeout=30).json()
    assert requests.get(f"{farm.url}/docs", timeout=30).status_code == 200
    checked = 0
    for path, operations in spec["paths"].items():
        if path in PUBLIC_PATHS:
            continue
        for method in operations:
            url = farm.url + _paths_to_try(path)
            r = requests.request(method, url, data=b"{}", timeout=30)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized", (path, r.text)
            assert r.headers["WWW-Authenticate"] == "Bearer"
            checked += 1
    assert checked >= 8


def _wait(url: str, video_id: str, headers: dict, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        video = requests.get(f"{url}/v1/videos/{video_id}", headers=headers, timeout=30).json()
        if video["status"] in ("completed", "failed", "cancelled"):
            return video
        assert time.monotonic() < deadline, video
        time.sleep(0.2)


def test_a_tenant_cannot_see_another_tenants_video(farm: Farm):
    r = requests.post(f"{farm.url}/v1/videos", json={**VIDEO, "steps": 2}, headers=ACME)
    assert r.status_code == 201, r.text
    video_id = r.json()["id"]
    assert _wait(farm.url, video_id, ACME)["status"] == "completed"
    content = f"{farm.url}/v1/videos/{video_id}/content"
    assert requests.get(content, headers=ACME, timeout=30).content[4:8] == b"ftyp"
    cookie = {"Cookie": "farm_token=acme-token"}
    assert requests.get(content, headers=cookie, timeout=30).status_code == 200

    for method, url in [
        ("GET", f"{farm.url}/v1/videos/{video_id}"),
        ("GET", content),
        ("GET", content + "?variant=thumbnail"),
        ("DELETE", f"{farm.url}/v1/videos/{video_id}"),
    ]:
        r = requests.request(method, url, headers=GLOBEX, timeout=30)
        assert r.status_code == 404 and r.json()["code"] == "not_found", (method, url, r.text)
    # The same request from another tenant is another video, not a shared one.
    r = requests.post(f"{farm.url}/v1/videos", json={**VIDEO, "steps": 2}, headers=GLOBEX)
    assert r.status_code == 201 and r.json()["id"] != video_id
    requests.delete(f"{farm.url}/v1/videos/{r.json()['id']}", headers=GLOBEX, timeout=30)


def test_a_tenant_cannot_see_another_tenants_campaign(farm: Farm):
    campaign = Campaign.of_spec(load_spec(EXAMPLE))
    manifest = prepare_campaign(campaign, tenant_root(str(farm.root), "acme"))
    cid = manifest.campaign_id
    base = f"{farm.url}/v1/campaigns"
    r = requests.get(f"{base}/{cid}", headers=ACME, timeout=30)
    assert r.status_code == 200 and r.json()["total"] == 12, r.text
    assert [c["campaign_id"] for c in requests.get(base, headers=ACME).json()] == [cid]
    assert requests.get(f"{base}/{cid}/manifest", headers=ACME).status_code == 200

    assert requests.get(base, headers=GLOBEX, timeout=30).json() == []
    for method, url in [
        ("GET", f"{base}/{cid}"),
        ("GET", f"{base}/{cid}/manifest"),
        ("POST", f"{base}/{cid}/cancel"),
    ]:
        r = requests.request(method, url, headers=GLOBEX, timeout=30)
        assert r.status_code == 404 and r.json()["code"] == "not_found", (method, url, r.text)
    assert not (
        Path(tenant_root(str(farm.root), "acme")) / "campaigns" / cid / "cancel.json"
    ).exists()


def test_over_http_traversal_in_ids_is_refused(farm: Farm):
    top = farm.root.parent
    before = {f for f in _files(top) if not f.startswith("root")}
    for bad in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..%5C..%5Cx", "a%00b", "%2Fetc%2Fpasswd"):
        for method, template in [
            ("GET", "/v1/videos/{}"),
            ("GET", "/v1/videos/{}/content"),
            ("DELETE", "/v1/videos/{}"),
            ("GET", "/v1/campaigns/{}"),
            ("POST", "/v1/campaigns/{}/cancel"),
            ("GET", "/v1/campaigns/{}/manifest"),
        ]:
            r = requests.request(method, farm.url + template.format(bad), headers=ACME, timeout=30)
            assert 400 <= r.status_code < 500, (method, template, bad, r.text)
    assert {f for f in _files(top) if not f.startswith("root")} == before
    assert not os.path.exists("/etc/passwd.mp4")
