"""Serve benchmarks: farm overhead, cross-video batching, interactive latency under a
campaign, cold start from zero.

    python -m benchmarks.bench_serve [MODEL ...]     # default: small tiny

Everything runs on one local Ray. With `small` (the farm's default model) the numbers say
what a user sees; with `tiny` (millisecond forwards) they isolate the farm's own costs
(routing, batching, encoding).
"""

from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ray
import requests
import torch
from ray import serve

from benchmarks.common import report, table
from farm.output.render import RenderOrder, render_video, request_order, video_job
from farm.render.engine import render
from farm.render.executors import LocalExecutor
from farm.serve.app import build_app
from farm.serve.executor import ServeExecutor
from farm.serve.wire import FarmAppArgs, VideoRequest
from model.geometry import geometry_of

VIDEO = {"seconds": 1.0, "size": "128x64", "fps": 16, "steps": 4, "guidance": 3.0}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(i: int, run: str) -> dict:
    # A new prompt per run: the Director answers a repeated request from its finished file.
    return {"prompt": f"a red bottle, {run} take {i}", "seed": i, **VIDEO}


def _through_serve(url: str, n: int, parallel: int, run: str) -> float:
    """Seconds to create n videos (parallel at a time) and wait until all complete."""

    def one(i: int) -> None:
        video = requests.post(f"{url}/v1/videos", json=_request(i, run), timeout=60).json()
        while video["status"] not in ("completed", "failed", "cancelled"):  # long poll
            video = requests.get(f"{url}/v1/videos/{video['id']}?wait=30", timeout=60).json()
        assert video["status"] == "completed", video

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - start


def _order(i: int, run: str, model: str) -> RenderOrder:
    """The i-th video of a run, as the render path takes it (no copy, like /v1/videos)."""
    return request_order(VideoRequest(**_request(i, run)), f"v{i}", geometry_of(model))


class _InProcess:
    """The same videos through the engine in this process, written the same way."""

    def __init__(self, model: str, root: str):
        torch.set_num_threads(1)  # as the Renderer replica (renderer_threads=1)
        self.ex = LocalExecutor(model)
        self.model, self.root = model, root
        render(self.ex, video_job(_order(0, "warmup", model)))

    def one(self, i: int) -> float:
        start = time.perf_counter()
        render_video(self.ex, _order(i, "local", self.model), self.root)
        return time.perf_counter() - start


def _latency(url: str, run: str, repeats: int = 3) -> float:
    """Median seconds from create to completed of one video at a time."""
    return statistics.median(_through_serve(url, 1, 1, f"{run}-{k}") for k in range(repeats))


def _campaign_load(app: str, videos: int, interactive: bool):
    """Like a campaign job: `videos` variants in flight on the Renderer, until stopped."""
    ex = ServeExecutor(serve.get_deployment_handle("Renderer", app), interactive=interactive)
    model = ex.model_info()["model"]
    stop = threading.Event()
    done = [0]

    def loop(k: int) -> None:
        i = 0
        while not stop.is_set():
            render(ex, video_job(_order(1000 * k + i, f"campaign-{interactive}", model)))
            done[0] += 1
            i += 1

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(videos)]
    for t in threads:
        t.start()

    def finish() -> int:
        stop.set()
        for t in threads:
            t.join()
        return done[0]

    return finish


def _deploy(name: str, root: str, model: str = "tiny", **kw) -> str:
    kw = {"renderer_max_replicas": 1} | kw  # one replica measures batching, not scaling
    args = FarmAppArgs(
        model=model,
        storage_root=root,
        renderer_threads=1,
        director_num_cpus=0,
        allow_anonymous=True,
        **kw,
    )
    serve.run(build_app(args), name=name, route_prefix=f"/{name}")
    return name


def _under_campaign(base: str, app: str, load: int, run: str, interactive=False):
    """Median latency of a user's video while `load` campaign variants are in flight,
    and the campaign's videos per second meanwhile."""
    finish = _campaign_load(app, load, interactive=interactive)
    time.sleep(2)  # the campaign fills the pool
    start = time.perf_counter()
    latency = _latency(f"{base}/{app}", run)
    rate = finish() / (time.perf_counter() - start + 2)
    return latency, rate


def bench(model: str) -> tuple[str, dict]:
    port = _port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    n = 8
    load = 4  # campaign variants in flight during the latency runs
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = _InProcess(model, f"{tmp}/local")
            _deploy("on", f"{tmp}/on", model, renderer_batch_wait_s=0.05)
            _through_serve(f"{base}/on", 1, 1, "warmup")  # warm: model loaded, kernels ready
            local_s = serial_s = 0.0
            for i in range(n):  # interleaved, so drifting machine load hits both alike
                local_s += local.one(i)
                serial_s += _through_serve(f"{base}/on", 1, 1, f"serial-{i}")
            batched_s = _through_serve(f"{base}/on", n, n, "batched")
            idle_s = _latency(f"{base}/on", "idle")
            fair_s, fair_rate = _under_campaign(base, "on", load, "fair")
            one_lane_s, one_lane_rate = _under_campaign(base, "on", load, "lane", True)
            serve.delete("on")
            _deploy("wide", f"{tmp}/wide", model, interactive_headroom=0.75)
            _through_serve(f"{base}/wide", 1, 1, "warmup-wide")
            idle_wide_s = _latency(f"{base}/wide", "idle-wide")
            wide_s, wide_rate = _under_campaign(base, "wide", load, "wide")
            serve.delete("wide")
            _deploy("off", f"{tmp}/off", model, renderer_batch_videos=1, renderer_batch_wait_s=0)
            _through_serve(f"{base}/off", 1, 1, "warmup-off")
            unbatched_s = _through_serve(f"{base}/off", n, n, "unbatched")
            serve.delete("off")
            _deploy(
                "zero",
                f"{tmp}/zero",
                model,
                renderer_min_replicas=0,
                renderer_max_replicas=1,
                renderer_initial_replicas=0,
                renderer_upscale_delay_s=0.0,
            )
            cold_s = _through_serve(f"{base}/zero", 1, 1, "cold")
            warm_s = _through_serve(f"{base}/zero", 1, 1, "warm")
    finally:
        serve.shutdown()
        ray.shutdown()
    data = {
        "model": model,
        "videos": n,
        "in_process_s": local_s,
        "serve_serial_s": serial_s,
        "serve_parallel_batched_s": batched_s,
        "serve_parallel_unbatched_s": unbatched_s,
        "latency_idle_s": idle_s,
        "latency_under_campaign_s": fair_s,
        "latency_under_campaign_one_lane_s": one_lane_s,
        "latency_idle_headroom_075_s": idle_wide_s,
        "latency_under_campaign_headroom_075_s": wide_s,
        "campaign_videos_per_s": {"0.25": fair_rate, "one lane": one_lane_rate, "0.75": wide_rate},
        "cold_start_s": cold_s,
        "warm_s": warm_s,
    }
    video = f"{VIDEO['size']}, {VIDEO['seconds']} s at 16 fps, {VIDEO['steps']} steps, CFG"
    text = (
        f"#### Farm overhead and batching (`{model}`: {n} videos, {video})\n\n"
        "In-process and through-Serve videos alternate, one at a time, so both see the same "
        "machine load.\n\n"
        + table(
            ["path", "wall s", "vs in-process"],
            [
                ["engine in-process, one after another", f"{local_s:.2f}", "1.00x"],
                [
                    "through Serve, one after another",
                    f"{serial_s:.2f}",
                    f"{serial_s / local_s:.2f}x",
                ],
                [
                    "through Serve, all at once, cross-video batching",
                    f"{batched_s:.2f}",
                    f"{batched_s / local_s:.2f}x",
                ],
                [
                    "through Serve, all at once, batching off",
                    f"{unbatched_s:.2f}",
                    f"{unbatched_s / local_s:.2f}x",
                ],
            ],
        )
        + f"\n\nBatching on vs off with {n} videos in flight: "
        f"{unbatched_s / batched_s:.2f}x the throughput.\n\n"
        f"#### Interactive latency while a campaign runs (`{model}`, {load} campaign "
        "variants in flight)\n\n"
        + table(
            ["one /v1/videos request", "median s", "vs idle", "campaign videos / s"],
            [
                ["idle farm", f"{idle_s:.2f}", "1.00x", "—"],
                [
                    "campaign running, headroom 0.25 (default)",
                    f"{fair_s:.2f}",
                    f"{fair_s / idle_s:.2f}x",
                    f"{fair_rate:.2f}",
                ],
                [
                    "campaign running in the users' lane (no priority)",
                    f"{one_lane_s:.2f}",
                    f"{one_lane_s / idle_s:.2f}x",
                    f"{one_lane_rate:.2f}",
                ],
                [
                    "campaign running, headroom 0.75",
                    f"{wide_s:.2f}",
                    f"{wide_s / idle_wide_s:.2f}x (idle {idle_wide_s:.2f} s)",
                    f"{wide_rate:.2f}",
                ],
            ],
        )
        + "\n\n#### Cold start from zero Renderer replicas\n\n"
        + table(
            ["first video (replica starts, model loads)", "next video (warm)", "cold - warm"],
            [[f"{cold_s:.2f} s", f"{warm_s:.2f} s", f"{cold_s - warm_s:.2f} s"]],
        )
    )
    return text, data


def main(models: list[str]) -> None:
    texts, data = [], {}
    for model in models:
        text, data[model] = bench(model)
        texts.append(text)
    report(
        "serve",
        "### Serve: overhead, batching, fairness, cold start\n\n" + "\n\n".join(texts),
        data,
    )


if __name__ == "__main__":
    main(sys.argv[1:] or ["small", "tiny"])
