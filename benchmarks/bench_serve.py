"""Serve benchmarks: farm overhead, cross-video batching on vs off, cold start from zero.

    python -m benchmarks.bench_serve

Everything runs on one local Ray with the `tiny` model, so the numbers are about the
farm's own costs (routing, batching, encoding), not the model.
"""

from __future__ import annotations

import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import ray
import requests
from ray import serve

from benchmarks.common import report, table
from farm.engine import VideoJob, render
from farm.executors import LocalExecutor
from farm.media import Provenance, write_video_outputs
from farm.render_local import frames_for
from farm.serve.app import build_app
from farm.serve.schemas import FarmAppArgs

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
        while video["status"] not in ("completed", "failed", "cancelled"):
            time.sleep(0.05)
            video = requests.get(f"{url}/v1/videos/{video['id']}", timeout=60).json()
        assert video["status"] == "completed", video

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - start


def _in_process(n: int, root: str) -> float:
    """The same videos through the engine in this process, written the same way."""
    ex = LocalExecutor("tiny")
    width, height = (int(v) for v in VIDEO["size"].split("x"))
    start = time.perf_counter()
    for i in range(n):
        job = VideoJob(
            prompt=_request(i, "local")["prompt"],
            frames=frames_for(VIDEO["seconds"], 16),
            height=height,
            width=width,
            fps=16,
            steps=VIDEO["steps"],
            guidance=VIDEO["guidance"],
            seed=i,
        )
        frames = render(ex, job)
        info = ex.model_info()
        prov = Provenance(
            model=info["model"],
            weights_sha256=info["weights_sha256"],
            seed=i,
            prompt=job.prompt,
            campaign_id="bench",
            variant_id=f"v{i}",
        )
        write_video_outputs(root, f"v{i}", frames, 16, prov)
    return time.perf_counter() - start


def _deploy(name: str, root: str, **kw) -> str:
    args = FarmAppArgs(
        model="tiny", storage_root=root, renderer_threads=1, director_num_cpus=0, **kw
    )
    serve.run(build_app(args), name=name, route_prefix=f"/{name}")
    return name


def main() -> None:
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    port = _port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    n = 8
    data: dict = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local_s = _in_process(n, f"{tmp}/local")
            _deploy("on", f"{tmp}/on", renderer_batch_wait_s=0.05)
            _through_serve(f"{base}/on", 1, 1, "warmup")  # warm: model loaded, kernels ready
            serial_s = _through_serve(f"{base}/on", n, 1, "serial")
            batched_s = _through_serve(f"{base}/on", n, n, "batched")
            _deploy("off", f"{tmp}/off", renderer_batch_videos=1, renderer_batch_wait_s=0.0)
            _through_serve(f"{base}/off", 1, 1, "warmup-off")
            unbatched_s = _through_serve(f"{base}/off", n, n, "unbatched")
            serve.delete("off")
            _deploy(
                "zero",
                f"{tmp}/zero",
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
        "videos": n,
        "in_process_s": local_s,
        "serve_serial_s": serial_s,
        "serve_parallel_batched_s": batched_s,
        "serve_parallel_unbatched_s": unbatched_s,
        "cold_start_s": cold_s,
        "warm_s": warm_s,
    }
    text = (
        f"### Farm overhead and batching ({n} videos, {VIDEO['size']}, "
        f"{VIDEO['seconds']} s at 16 fps, {VIDEO['steps']} steps, CFG; `tiny`)\n\n"
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
        "### Cold start from zero Renderer replicas\n\n"
        + table(
            ["first video (replica starts, model loads)", "next video (warm)", "cold - warm"],
            [[f"{cold_s:.2f} s", f"{warm_s:.2f} s", f"{cold_s - warm_s:.2f} s"]],
        )
    )
    report("serve", text, data)


if __name__ == "__main__":
    main()
