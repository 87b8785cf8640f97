"""The Serve app on the session's Ray: HTTP → Director → batched Renderer → MP4 on disk."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray
import requests
from ray import serve

from farm.output.media import probe_mp4
from farm.serve.app import FarmAppArgs, build_app
from model.geometry import geometry_of
from tests.helpers.cluster import deployed

APP = "app"  # this module's Serve app, at / (the routes are absolute)
BASE = {"prompt": "a red bottle on a beach", "size": "64x32", "seconds": 0.5, "fps": 32}


@dataclass(frozen=True)
class Farm:
    url: str
    root: Path


@pytest.fixture(scope="module")
def farm(serve_http, tmp_path_factory) -> Farm:
    """The farm app at / (one Renderer replica, tiny model)."""
    root = tmp_path_factory.mktemp("serve")
    args = FarmAppArgs(
        model="tiny",
        storage_root=str(root / "main"),
        renderer_max_replicas=1,
        renderer_threads=1,
        renderer_batch_wait_s=0.2,
        director_num_cpus=0,
        allow_anonymous=True,  # auth has its own tests (test_auth.py)
        max_seconds=20,
        max_steps=50,
    )
    with deployed(build_app(args), APP, "/", http=serve_http):
        yield Farm(serve_http, root)


def _create(url: str, **fields) -> dict:
    r = requests.post(f"{url}/v1/videos", json={**BASE, **fields}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def _wait(url: str, video_id: str, timeout_s: float = 60, until=("completed",)) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        video = requests.get(f"{url}/v1/videos/{video_id}", timeout=30).json()
        if video["status"] in until or video["status"] in ("failed", "cancelled"):
            return video
        assert time.monotonic() < deadline, f"video still {video} after {timeout_s} s"
        time.sleep(0.1)


def _renderer_stats(app: str = APP) -> dict:
    return serve.get_deployment_handle("Renderer", app_name=app).stats.remote().result()


def test_create_poll_and_download(farm: Farm):
    created = _create(farm.url, steps=2, guidance=3.0, seed=1, negative_prompt="dark")
    assert created["status"] in ("queued", "in_progress") and len(created["id"]) == 32
    video = _wait(farm.url, created["id"])
    assert video["status"] == "completed" and video["progress"] == 1.0, video

    r = requests.get(f"{farm.url}/v1/videos/{video['id']}/content", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    info = probe_mp4(r.content)
    frames = geometry_of("tiny").frames_for(0.5, 32)
    assert (info.frames, info.width, info.height) == (frames, 64, 32)
    thumb = requests.get(f"{farm.url}/v1/videos/{video['id']}/content?variant=thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    assert (farm.root / "main" / "videos" / f"{video['id']}.json").exists()

    again = _create(farm.url, steps=2, guidance=3.0, seed=1, negative_prompt="dark")
    assert again["id"] == video["id"] and again["status"] == "completed"  # content-addressed


def test_two_videos_in_flight_share_forwards(farm: Farm):
    before = _renderer_stats()
    # One window and no guidance: a video alone makes forwards of exactly one row.
    fields = {"size": "64x64", "steps": 4, "guidance": 1.0}
    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda s=s: ids.append(_create(farm.url, seed=s, **fields)["id"]))
        for s in (10, 11)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for video_id in ids:
        assert _wait(farm.url, video_id)["status"] == "completed"
    after = _renderer_stats()
    new_forwards = after["batch_sizes"][len(before["batch_sizes"]) :]
    new_batches = after["videos_per_batch"][len(before["videos_per_batch"]) :]
    assert max(new_batches) >= 2, new_batches
    assert max(new_forwards) >= 2, new_forwards


def test_interactive_steps_go_ahead_of_a_campaign_backlog(farm: Farm):
    """A user's step waits for at most the campaign batch running, never the backlog."""
    handle = serve.get_deployment_handle("Renderer", app_name=APP)
    latent = np.random.default_rng(0).standard_normal((4, 8, 32, 32), dtype=np.float32)
    windows = ([0, 4], [4, 8])  # two guided windows per request

    def step(prompt: str, **lane):
        return handle.velocities.remote(
            latent, *windows, [0.5] * 2, [prompt] * 2, [""] * 2, [4.0] * 2, **lane
        )

    before = len(_renderer_stats()["served"])
    # A campaign's backlog: 24 requests = 4 bulk batches (6 videos each at 25% headroom).
    bulk = [step(f"campaign video {i}", interactive=False, priority=0) for i in range(24)]
    time.sleep(0.3)
    user = step("a user's video", interactive=True)
    user.result(timeout_s=120)
    for r in bulk:
        r.result(timeout_s=300)
    served = _renderer_stats()["served"][before:]
    (mine,) = [s for s in served if s[0] == 0]  # [lane, -priority, enqueued, started]
    bulk_batches = [s for s in served if s[0] == 1]
    # Every bulk request was sent before the user's: the batches that started after it
    # are backlog it overtook (queued in the bulk lane's batcher while it went ahead).
    overtaken = [b for b in bulk_batches if b[3] > mine[3]]
    cut_in = [b for b in bulk_batches if mine[2] < b[3] < mine[3]]
    assert len(overtaken) >= 2, served
    assert not cut_in, served  # no campaign batch started while the user's step waited


def test_long_poll_answers_when_the_video_finishes(farm: Farm):
    alone_before = _renderer_stats()["alone_requests"]
    created = _create(farm.url, steps=2, seed=21)
    start = time.monotonic()
    video = requests.get(f"{farm.url}/v1/videos/{created['id']}?wait=60", timeout=90).json()
    assert video["status"] == "completed", video  # one request, no polling loop
    assert time.monotonic() - start < 60
    # Alone on the farm, its steps did not wait for a batch to fill (batch_wait_s is 0.2 s).
    assert _renderer_stats()["alone_requests"] - alone_before >= 2
    r = requests.get(f"{farm.url}/v1/videos/{created['id']}?wait=-1", timeout=30)
    assert r.status_code == 422 and r.json()["param"] == "wait"


def test_cancel(farm: Farm):
    created = _create(farm.url, size="64x64", seconds=2, steps=50, seed=3)
    r = requests.delete(f"{farm.url}/v1/videos/{created['id']}", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    time.sleep(0.5)
    assert requests.get(f"{farm.url}/v1/videos/{created['id']}").json()["status"] == "cancelled"
    content = requests.get(f"{farm.url}/v1/videos/{created['id']}/content")
    assert content.status_code == 409 and content.json()["code"] == "not_ready"


def test_killed_renderer_replica_mid_video_completes(farm: Farm):
    created = _create(farm.url, size="64x64", steps=12, seed=4)
    _wait(farm.url, created["id"], until=("in_progress",))
    deadline = time.monotonic() + 30
    while requests.get(f"{farm.url}/v1/videos/{created['id']}").json()["progress"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    replicas = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#Renderer")
    ]
    assert len(replicas) == 1, replicas
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]))
    video = _wait(farm.url, created["id"], timeout_s=120)
    assert video["status"] == "completed", video
    director = serve.get_deployment_handle("Director", app_name=APP)
    assert director.stats.remote().result()["videos"]["completed"] >= 1


BAD = [
    ({"size": "64-32"}, "size"),
    ({"size": "70x64"}, "size"),
    ({"size": "0x64"}, "size"),
    ({"seconds": 0}, "seconds"),
    ({"seconds": 1000}, "seconds"),
    ({"seconds": 30}, "seconds"),  # over the app's max_seconds (20)
    ({"seconds": "long"}, "seconds"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"steps": 0}, "steps"),
    ({"steps": 51}, "steps"),  # over the app's max_steps (50)
    ({"fps": 500}, "fps"),
    ({"guidance": 0.5}, "guidance"),
    ({"seed": -1}, "seed"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("fields", "param"), BAD)
def test_bad_request_names_the_field(farm: Farm, fields: dict, param: str):
    r = requests.post(f"{farm.url}/v1/videos", json={**BASE, **fields}, timeout=30)
    assert 400 <= r.status_code < 500, r.text
    body = r.json()
    assert body["code"] in ("invalid_request", "limit_exceeded"), body
    assert param in body["message"], body


def test_errors_are_json_4xx(farm: Farm):
    json_type = {"content-type": "application/json"}
    r = requests.post(f"{farm.url}/v1/videos", data=b"{not json", headers=json_type, timeout=30)
    assert r.status_code == 400 and r.json()["param"] == "body", r.text
    r = requests.post(f"{farm.url}/v1/videos", data=b"{not json", timeout=30)  # no type
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type", r.text
    r = requests.post(f"{farm.url}/v1/videos", json={"size": "64x32"}, timeout=30)
    assert r.status_code == 422 and "prompt" in r.json()["message"]
    unknown = "0" * 32
    for method, path in [
        ("GET", f"/v1/videos/{unknown}"),
        ("GET", f"/v1/videos/{unknown}/content"),
        ("DELETE", f"/v1/videos/{unknown}"),
        ("GET", "/v1/videos/not-an-id"),
        ("GET", "/v1/nothing-here"),
    ]:
        r = requests.request(method, farm.url + path, timeout=30)
        assert r.status_code == 404 and r.json()["code"] == "not_found", (path, r.text)
    r = requests.get(f"{farm.url}/v1/videos/{unknown}/content?variant=gif", timeout=30)
    assert r.status_code == 422 and "variant" in r.json()["message"]
    health = requests.get(f"{farm.url}/healthz", timeout=30).json()  # status follows jobs
    assert health["status"] == ("ok" if health["jobs"] == "ok" else "degraded"), health


def test_renderer_scales_up_from_zero(farm: Farm):
    args = FarmAppArgs(
        model="tiny",
        storage_root=str(farm.root / "zero"),
        renderer_min_replicas=0,
        renderer_max_replicas=1,
        renderer_upscale_delay_s=0,
        renderer_downscale_delay_s=600,
        renderer_threads=1,
        director_num_cpus=0,
        allow_anonymous=True,
    )
    with deployed(build_app(args), "app-zero", "/zero", http=farm.url):
        states = serve.status().applications["app-zero"].deployments["Renderer"].replica_states
        assert states.get("RUNNING", 0) == 0, states
        created = _create(f"{farm.url}/zero", steps=2, seed=5)
        video = _wait(f"{farm.url}/zero", created["id"], timeout_s=120)
        assert video["status"] == "completed", video
        states = serve.status().applications["app-zero"].deployments["Renderer"].replica_states
        assert states.get("RUNNING", 0) == 1, states
