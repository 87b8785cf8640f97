"""Window engine benchmarks: cost vs length, batching, scaling by simulation, sync_every.

    python -m benchmarks.bench_windows            # all sections (~15 min on 2 CPU cores)
    python -m benchmarks.bench_windows scaling    # one section

Each cost-vs-length point runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np
import ray
import torch

from benchmarks.common import median_time, report, table
from farm.render.engine import VideoJob, render, sample_latents
from farm.render.executors import LocalExecutor, RayExecutor
from farm.render.halo import run_round
from farm.render.seams import pixel_boundaries, seam_ratio
from model.geometry import geometry_of
from model.sampling import flow_timesteps

FPS, SIZE = 24, 128  # one resolution for every length: 1:1 feed format
# Frame counts, latent sizes and seam positions are the models' (model.geometry).
TINY, SMALL, BASE = (geometry_of(p) for p in ("tiny", "small", "base"))


def length_job(seconds: int, windowed: bool) -> VideoJob:
    frames = SMALL.frames_for(seconds, FPS)
    T = SMALL.latent_frames(frames)
    # Unwindowed: what one forward over the whole clip would cost if the model took it.
    geometry = SMALL if windowed else SMALL.model_copy(update={"max_frames": frames})
    return VideoJob(
        geometry=geometry,
        prompt="a red bottle turns on a table",
        frames=frames,
        height=SIZE,
        width=SIZE,
        fps=FPS,
        steps=2,
        guidance=1.0,
        window=16 if windowed else T,
        overlap=4 if windowed else 0,
        decode_chunk=16,
    )


def one_point(seconds: int, windowed: bool) -> dict:
    """Render one video in this process; wall time split into sampling and decoding."""
    torch.set_num_threads(2)
    ex = LocalExecutor("small", max_batch=4)
    job = length_job(seconds, windowed)
    start = time.perf_counter()
    z = sample_latents(ex, job)
    sampled = time.perf_counter()
    from farm.render.engine import decode_video

    decode_video(ex, z, job.decode_chunk)
    done = time.perf_counter()
    return {
        "seconds": seconds,
        "windowed": windowed,
        "sample_s": sampled - start,
        "decode_s": done - sampled,
        "total_s": done - start,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def cost_vs_length(lengths=(4, 8, 16, 32, 60), full_budget_s: float = 400) -> tuple[str, dict]:
    rows, data = [], []
    full_alive = True
    for seconds in lengths:
        point = {}
        for windowed in (True, False):
            if not windowed and not full_alive:
                point[windowed] = None
                continue
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.bench_windows",
                "--one",
                str(seconds),
                "1" if windowed else "0",
            ]
            try:
                out = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=full_budget_s if not windowed else 1800,
                )
                point[windowed] = json.loads(out.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                point[windowed], full_alive = None, False  # past the budget: stop trying
        data.append(point)
        w, f = point[True], point.get(False)
        rows.append(
            [
                f"{seconds} s",
                f"{w['total_s']:.1f} ({w['sample_s']:.1f} + {w['decode_s']:.1f})",
                f"{w['total_s'] / seconds:.2f}",
                f"{w['peak_rss_mib']:.0f}",
                f"{f['sample_s']:.1f}" if f else f"> {full_budget_s:.0f} (stopped)",
                f"{f['sample_s'] / seconds:.2f}" if f else "—",
                f"{f['peak_rss_mib']:.0f}" if f else "—",
            ]
        )
    first, last = data[0][True], data[-1][True]
    summary = (
        f"\n\nWindowed cost per video-second, {lengths[-1]} s vs {lengths[0]} s: "
        f"{(last['total_s'] / lengths[-1]) / (first['total_s'] / lengths[0]):.2f}x; "
        f"peak RSS {lengths[-1]} s vs {lengths[0]} s: "
        f"{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}x."
    )
    text = (
        f"### Cost vs length (`small`, {SIZE}x{SIZE}, {FPS} fps, 2 steps, no CFG)\n\n"
        "Windows of 16 latent frames, overlap 4; full = one window over the whole video "
        "(sampling only; both decode in chunks).\n\n"
        + table(
            [
                "length",
                "windowed s (sample + decode)",
                "windowed s / video-s",
                "windowed peak RSS MiB",
                "full-attention sample s",
                "full s / video-s",
                "full peak RSS MiB",
            ],
            rows,
        )
        + summary
    )
    return text, {"cost_vs_length": data}


def batching() -> tuple[str, dict]:
    rows, data = [], []
    for preset, size in (("tiny", 128), ("small", 64)):
        geometry = geometry_of(preset)
        job = VideoJob(
            geometry=geometry,
            prompt="a shoe",
            frames=geometry.pixel_frames(48),
            height=size,
            width=size,
            steps=1,
            guidance=4.0,
            window=8,
            overlap=2,
        )
        rates = {}
        for mb in (1, 8):
            ex = LocalExecutor(preset, max_batch=mb)
            n = 2 * len(job.plan().windows) * job.steps
            rates[mb] = n / median_time(lambda ex=ex, job=job: sample_latents(ex, job), repeats=3)
        rows.append(
            [
                preset,
                f"{size}x{size}",
                f"{rates[1]:.1f}",
                f"{rates[8]:.1f}",
                f"{rates[8] / rates[1]:.2f}x",
            ]
        )
        data.append({"preset": preset, "rates": rates})
    text = "### Batching: window-steps per second (8-frame windows, CFG)\n\n" + table(
        ["preset", "size", "max_batch 1", "max_batch 8", "ratio"], rows
    )
    return text, {"batching": data}


class SleepWorker:
    """Stands in for a GPU replica: each forward is a calibrated sleep, outputs are zeros.

    Everything around the forward is real: the halo exchange's gather/scatter, the object
    store traffic. Its CPU time (sleep excluded) is counted, as the replica-side cost.
    """

    def __init__(self, model_ref: str, *, max_batch: int = 2, forward_s: float = 0.2, **_):
        self.max_batch, self.forward_s = max_batch, forward_s
        self.cpu_s, self.windows = 0.0, 0

    def latent_shape(self, frames, height, width):
        return (16, BASE.latent_frames(frames), *BASE.latent_size(width, height))

    def timesteps(self, steps, frames, height, width):
        return flow_timesteps(steps, 3.0).tolist()

    def _forward(self, windows: int, guided: bool, steps: int = 1) -> None:
        rows = windows * (2 if guided else 1)  # a guided step is two rows of a forward
        time.sleep(self.forward_s * steps * -(-rows // self.max_batch))

    def run_arrays(self, latent, starts, stops, ts, prompts, negatives, guidances):
        self._forward(len(starts), any(g != 1 for g in guidances))
        return [np.zeros_like(latent[:, a:b]) for a, b in zip(starts, stops, strict=True)]

    def advance_arrays(self, latent, windows, ts, prompts, negative, guidance):
        c0 = time.process_time()
        self._forward(len(windows), guidance != 1, len(ts) - 1)
        out = [np.array(latent[:, a:b]) for a, b in windows]
        self.cpu_s += time.process_time() - c0
        self.windows += len(windows)
        return out

    def window_round(self, layout, g, ts, prompts, negative, guidance, *received):
        """The real halo exchange (farm.render.halo) around a sleeping forward."""
        c0 = time.process_time()

        def advance(xs, ts, prompts):
            self._forward(len(xs), guidance != 1, len(ts) - 1)
            return [x.copy() for x in xs]  # the Euler update of a zero velocity

        out = [*run_round(layout, g, ts, prompts, received, advance), g]
        self.cpu_s += time.process_time() - c0
        self.windows += len(layout.groups[g]) if ts else 0
        return out

    def stats(self):
        return {"cpu_s": self.cpu_s, "windows": self.windows}


class DriverFusion(RayExecutor):
    """The previous design, for comparison: the driver ships the latent and blends each step."""

    run_rounds = None


def calibrated_forward_s(mfu: float = 0.4, peak_flops: float = 989e12) -> float:
    """Seconds of one `base` forward on a 16-latent-frame 480x832 window, both CFG branches,
    at `mfu` of an H200's dense bf16 peak: what the sleep stands in for."""
    import model
    from model.flops import dit_step_flops

    frames = BASE.pixel_frames(16)
    flops = dit_step_flops(model.PRESETS["base"], frames=frames, height=480, width=832)
    return 2 * flops.total / (mfu * peak_flops)


def scaling(
    actor_counts=(1, 2, 4, 8, 16, 32), forward_s: float = 0.2, steps: int = 8
) -> tuple[str, dict]:
    job = VideoJob(
        geometry=BASE,
        prompt="a long product film",
        frames=BASE.frames_for(60, FPS),
        height=480,
        width=832,
        steps=steps,
        guidance=4.0,
        window=16,
        overlap=4,
    )
    windows = len(job.plan().windows)
    most = actor_counts[-1]
    ray.init(address="local", num_cpus=64, include_dashboard=False, log_to_driver=False)
    rows, data, base = [], [], None
    try:
        warm = RayExecutor("sim", num_actors=1, num_cpus=0.05, worker=SleepWorker)
        sample_latents(warm, job.model_copy(update={"steps": 1}))  # untimed: Ray's prestart
        warm.close()
        time.sleep(5)
        runs = [(n, 1, RayExecutor) for n in actor_counts]
        runs += [(most, 1, DriverFusion), (most, 2, RayExecutor)]
        for n, sync, cls in runs:
            ex = cls(
                "sim", num_actors=n, num_cpus=0.05, max_batch=2, threads=None, worker=SleepWorker
            )
            ray.get([a.__ray_ready__.remote() for a in ex.actors])  # actors up before timing
            for a in ex.actors:
                a.__ray_call__.remote(lambda w, f=forward_s: setattr(w, "forward_s", f))
            cpu0 = time.process_time()
            start = time.perf_counter()
            sample_latents(ex, job.model_copy(update={"sync_every": sync}))
            wall = time.perf_counter() - start
            driver_cpu = time.process_time() - cpu0
            stats = ex.stats()
            ex.close()
            base = base or wall
            eff = base / (n * wall)
            ideal = job.steps * -(-windows // n) * forward_s  # whole rounds of forwards
            replica_ms = 1e3 * sum(s["cpu_s"] for s in stats) / sum(s["windows"] for s in stats)
            through_driver = (ex.bytes_sent + ex.bytes_received) / job.steps
            between = ex.halo_bytes / job.steps
            label = f"{n}" + (", sync_every=2" if sync > 1 else "")
            label += ", driver fusion" if cls is DriverFusion else ""
            rows.append(
                [
                    label,
                    f"{wall:.2f}",
                    f"{base / wall:.1f}x",
                    f"{100 * eff:.0f}%",
                    f"{(wall - ideal) / job.steps:.2f}",
                    f"{driver_cpu / job.steps:.2f}",
                    f"{replica_ms:.0f}",
                    f"{through_driver / 2**20:.0f}",
                    f"{between / 2**20:.0f}",
                ]
            )
            data.append(
                {
                    "actors": n,
                    "sync_every": sync,
                    "path": "driver fusion" if cls is DriverFusion else "halo",
                    "wall_s": wall,
                    "efficiency": eff,
                    "driver_cpu_s_per_step": driver_cpu / job.steps,
                    "replica_cpu_ms_per_window_round": replica_ms,
                    "bytes_through_driver_per_step": through_driver,
                    "bytes_between_replicas_per_step": between,
                    "forward_s": forward_s,
                    "steps": job.steps,
                }
            )
    finally:
        ray.shutdown()
    text = (
        f"### Scaling by simulation: 60 s video, 480x832, {windows} windows, CFG, "
        f"{job.steps} steps, forward = {forward_s * 1e3:.0f} ms sleep\n\n"
        f"{windows} guided window-steps per step, each one forward holding both CFG "
        f"branches; ideal efficiency at {most} actors is "
        f"{windows / (most * -(-windows // most)):.0%} (whole rounds of forwards). "
        "Overhead s / step = wall time beyond the ideal rounds. Replica CPU = the work "
        "around each simulated forward (halo gather/scatter, object store), per window "
        "and round; all actors and the driver share this machine's 2 cores.\n\n"
        + table(
            [
                "actors",
                "wall s",
                "speed-up",
                "parallel efficiency",
                "overhead s / step",
                "driver CPU s / step",
                "replica CPU ms / window-round",
                "MiB via driver / step",
                "MiB replica↔replica / step",
            ],
            rows,
        )
    )
    return text, {"scaling": data}


def scaling_both() -> tuple[str, dict]:
    """The issue's 200 ms example, then a forward calibrated from `base` FLOPs."""
    text_a, data_a = scaling(forward_s=0.2)
    text_b, data_b = scaling(forward_s=calibrated_forward_s())
    return text_a + "\n\n" + text_b, {"scaling": data_a["scaling"] + data_b["scaling"]}


def sync_every() -> tuple[str, dict]:
    from farm.testing.velocity_fields import FunctionExecutor, temporal_gaussian

    rows, data = [], []
    job = VideoJob(
        geometry=TINY,
        prompt="a cup",
        frames=TINY.frames_for(30, FPS),
        height=64,
        width=64,
        steps=8,
        guidance=4.0,
        window=16,
        overlap=4,
        negative_prompt="dark",
    )
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        ex = RayExecutor("tiny", num_actors=2, max_batch=8)
        for k in (1, 4):
            j = job.model_copy(update={"sync_every": k})
            ex.bytes_sent = ex.bytes_received = ex.halo_bytes = 0
            wall = median_time(lambda j=j: sample_latents(ex, j), repeats=3)
            moved = (ex.bytes_sent + ex.bytes_received + ex.halo_bytes) / 4  # 1 warmup + 3
            fn_ex = FunctionExecutor(temporal_gaussian(0.95))
            z = sample_latents(fn_ex, j.model_copy(update={"guidance": 1.0}))
            seam = seam_ratio(z[0].permute(1, 2, 3, 0), j.plan().handovers)
            frames = render(ex, j.model_copy(update={"steps": 4}))
            pixel_seam = seam_ratio(frames, pixel_boundaries(j.plan(), j.geometry))
            rows.append(
                [k, f"{wall:.2f}", f"{moved / 2**20:.1f}", f"{seam:.3f}", f"{pixel_seam:.3f}"]
            )
            data.append(
                {
                    "sync_every": k,
                    "wall_s": wall,
                    "bytes": moved,
                    "seam": seam,
                    "pixel_seam_tiny": pixel_seam,
                }
            )
        ex.close()
    finally:
        ray.shutdown()
    text = (
        "### sync_every 1 vs 4 (30 s video, 8 steps, CFG, 2 Ray actors, `tiny`)\n\n"
        "Seam ratio (1.0 = no seam) on the exact velocity of temporally correlated "
        "Gaussian data, which mixes frames in time, and on the untrained `tiny` "
        "model's decoded pixels.\n\n"
        + table(
            [
                "sync_every",
                "wall s",
                "MiB moved / video",
                "seam ratio (analytic)",
                "seam ratio (tiny, pixels)",
            ],
            rows,
        )
    )
    return text, {"sync_every": data}


SECTIONS = {
    "length": cost_vs_length,
    "batching": batching,
    "scaling": scaling_both,
    "sync": sync_every,
}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(one_point(int(argv[1]), argv[2] == "1")))
        return
    names = argv or list(SECTIONS)
    texts, data = [], {}
    for name in names:
        text, d = SECTIONS[name]()
        texts.append(text)
        data |= d
        print(text + "\n", flush=True)
    report("windows" if not argv else "windows-" + "-".join(names), "\n\n".join(texts), data)


if __name__ == "__main__":
    main(sys.argv[1:])
