"""Faults a campaign survives on the session's Ray + Serve: killed and sick Renderer replicas.

Also (no cluster): a stale driver (older epoch) that keeps going after a resume changes
nothing, and the Serve executor resends what a dead replica lost. Stopping a job mid-way
and resuming it is in test_client; storage outages are in test_storage.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from ray import serve

from farm.campaign.manifest import Manifest, StaleWriter
from farm.jobs.client import prepare_campaign
from farm.jobs.inputs import load_campaign
from farm.jobs.loop import render_concurrently, render_one
from farm.jobs.options import JobOptions
from farm.output.media import probe_mp4
from farm.serve.executor import ServeExecutor
from farm.serve.renderer import Renderer
from tests.helpers.campaigns import completed_events, statuses, wait_until, write_spec
from tests.helpers.cluster import deployed

POOL, SICK = "reliability-pool", "reliability-sick"  # Serve apps of this module


@pytest.fixture(scope="module")
def serve_pools(serve_http):
    """Two Renderer apps: POOL (2 replicas) and SICK (1 replica, unhealthy after 2 failures)."""
    pool = Renderer.options(num_replicas=2, health_check_period_s=1).bind(
        "tiny", threads=1, batch_wait_s=0.01
    )
    sick = Renderer.options(num_replicas=1, health_check_period_s=0.5).bind(
        "tiny", threads=1, max_consecutive_failures=2
    )
    with deployed(pool, POOL), deployed(sick, SICK):
        yield


def _replicas(app: str) -> list[dict]:
    return [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app}#Renderer")
    ]


def _kill_one(app: str) -> str:
    (victim, *_) = _replicas(app)
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]))
    return victim["name"]


def test_killed_renderer_replicas_mid_campaign(serve_pools, tmp_path):
    root = str(tmp_path / "root")
    campaign = load_campaign(write_spec(tmp_path / "s.yaml", "kill", formats=2))
    manifest = prepare_campaign(campaign, root)
    executor = ServeExecutor(serve.get_deployment_handle("Renderer", POOL))
    result: dict = {}

    def run() -> None:
        options = JobOptions(concurrency=2, backoff_s=0.2)
        result["report"] = render_concurrently(manifest, executor, root, options)

    driver = threading.Thread(target=run)
    driver.start()
    completed = lambda n: lambda: manifest.progress().by_status["completed"] >= n
    wait_until(completed(1), timeout=60, what="a first completed variant")
    killed = [_kill_one(POOL)]
    wait_until(completed(4), timeout=60, what="half the campaign")
    killed.append(_kill_one(POOL))
    driver.join(timeout=120)
    assert not driver.is_alive() and len(set(killed)) == 2

    report = result["report"]
    assert (report.completed, report.failed) == (8, 0), report
    rows = statuses(manifest)
    assert all(r["status"] == "completed" for r in rows.values())
    assert set(completed_events(manifest).values()) == {1}  # each completed exactly once
    for r in rows.values():
        mp4 = Path(r["output_url"]).read_bytes()
        assert hashlib.sha256(mp4).hexdigest() == r["sha256"]
        info = probe_mp4(mp4)
        assert (info.frames, info.width, info.height) == (r["frames"], r["width"], r["height"])


def test_renderer_failing_k_model_calls_in_a_row_is_replaced(serve_pools):
    handle = serve.get_deployment_handle("Renderer", SICK)
    before = handle.stats.remote().result()["pid"]
    bad = np.zeros((3, 2, 8, 8), np.float32)  # 3 latent channels, not 4: the model rejects it
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017 - whatever the model raises
            handle.velocities.remote(bad, [0], [2], [0.5], ["x"], [""], [1.0]).result()
    # Serve's health check fails, the replica is replaced, and new work runs on the new one.
    wait_until(
        lambda: handle.stats.remote().result()["pid"] != before, timeout=60, what="a new replica"
    )
    good = np.zeros((4, 2, 8, 8), np.float32)
    (v,) = handle.velocities.remote(good, [0], [2], [0.5], ["x"], [""], [1.0]).result()
    assert v.shape == good.shape
    assert handle.stats.remote().result()["consecutive_failures"] == 0


def test_stale_driver_after_a_resume_changes_nothing(tmp_path):
    from farm.render.executors import LocalExecutor

    root = str(tmp_path / "root")
    manifest = prepare_campaign(load_campaign(write_spec(tmp_path / "s.yaml", "stale")), root)
    executor = LocalExecutor("tiny")
    stale = manifest.writer(worker="old driver")  # the driver that was stopped
    report = render_concurrently(manifest, executor, root)  # the resume: a newer epoch
    assert report.completed == 4
    before = {vid: r["sha256"] for vid, r in statuses(manifest).items()}
    events = manifest.events().num_rows
    row = manifest.status().to_pylist()[0]
    with pytest.raises(StaleWriter):
        render_one(lambda e: stale.commit([e]), executor, row, 2, root)
    with pytest.raises(StaleWriter):
        stale.commit([{"variant_id": row["variant_id"], "status": "failed", "attempt": 9}])
    fresh = Manifest.open(root, manifest.campaign_id)
    assert fresh.events().num_rows == events
    assert {vid: r["sha256"] for vid, r in statuses(fresh).items()} == before
    for r in statuses(fresh).values():
        assert hashlib.sha256(Path(r["output_url"]).read_bytes()).hexdigest() == r["sha256"]


class _Response:
    """What a DeploymentHandle call returns: its result, or the error of a dead replica."""

    def __init__(self, value=None, error: Exception | None = None):
        self.value, self.error = value, error

    def result(self, timeout_s=None):
        if self.error is not None:
            raise self.error
        return self.value


class _DyingRenderer:
    """A Renderer handle (no cluster) whose replica dies under the calls numbered in `deaths`."""

    def __init__(self, deaths: set[int]):
        from farm.render.worker import ModelWorker

        worker = ModelWorker("tiny")
        self.deaths, self.calls = deaths, 0
        self.methods = {
            "velocities": worker.run_arrays,
            "decode_chunk": lambda z, a, b: worker.decode_chunk(z, a, b).numpy(),
            "latent_shape": worker.latent_shape,
            "timesteps": worker.timesteps,
            "model_info": worker.model_info,
        }

    def __getattr__(self, method: str):
        from types import SimpleNamespace

        from ray.exceptions import ActorDiedError

        def remote(*args, interactive: bool = True, priority: int = 0) -> _Response:
            self.calls += 1
            if self.calls in self.deaths:
                return _Response(error=ActorDiedError())
            return _Response(self.methods[method](*args))

        return SimpleNamespace(remote=remote)


def test_serve_executor_resends_what_a_dead_replica_lost():
    from farm.render.engine import VideoJob, render
    from farm.render.executors import LocalExecutor

    job = VideoJob(geometry="tiny", prompt="a cup", frames=33, height=32, width=32, steps=3,
                   window=4, overlap=2, decode_chunk=4)  # fmt: skip
    expected = render(LocalExecutor("tiny"), job)
    executor = ServeExecutor(_DyingRenderer(deaths={3, 4, 9}), max_resends=2)
    assert torch.equal(render(executor, job), expected)  # the same frames, bit for bit
    assert executor.resent == 3
    with pytest.raises(RuntimeError, match="failed 3 times"):  # more than one run may resend
        ServeExecutor(_DyingRenderer(deaths={1, 2, 3}), max_resends=2).latent_shape(33, 32, 32)
