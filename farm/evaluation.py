"""The model evaluated through the farm: seams of long videos, and MP4 bytes that repeat.

`model.training.eval` judges prompt following on single clips with the model alone; what
needs the window engine lives here, so `model` never depends on the farm. `farm eval`
runs both into one report:

    python -m farm.evaluation --model small --out benchmarks/results/eval.json
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from farm.output.media import encode_mp4
from farm.render.engine import VideoJob, render
from farm.render.executors import LocalExecutor
from farm.render.seams import concat_boundaries, pixel_boundaries, seam_ratio
from model.geometry import geometry_of
from model.training import eval as prompt_eval


def seam_report(
    model_ref: str,
    *,
    prompt: str,
    # The seam test's own clip and layout (8-frame windows at 64 px), for direct calls;
    # `main` passes the evaluation's command-line values.
    seconds: float = 30.0,
    fps: int = 24,
    size: int = 64,
    steps: int = 20,
    guidance: float = 5.0,
    shift: float = 3.0,
    window: int = 8,
    overlap: int = 4,
    more_overlaps: tuple[int, ...] = (),
    seed: int = 0,
) -> dict:
    """Seam ratio of a long video through the window engine vs independent chunks; MP4 bytes.

    The chunks have the window's length, each with its own seed, concatenated end to end:
    what a farm without blending would produce. `more_overlaps` renders the windowed video
    again at each of those overlaps (listed with `overlap` in "by_overlap"), on the same
    loaded model and against the same chunks.
    """
    ex = LocalExecutor(model_ref, max_batch=16)
    geometry = geometry_of(model_ref)
    stride = geometry.temporal_stride  # pixel frames per latent frame
    frames = geometry.frames_for(seconds, fps)
    common = {
        "geometry": geometry,
        "prompt": prompt,
        "height": size,
        "width": size,
        "fps": fps,
        "steps": steps,
        "guidance": guidance,
        "shift": shift,
        "window": window,
    }

    def windowed(overlap: int) -> tuple[VideoJob, np.ndarray, dict]:
        job = VideoJob(frames=frames, seed=seed, overlap=overlap, **common)
        t0 = time.monotonic()
        video = render(ex, job).numpy()
        return (
            job,
            video,
            {
                "overlap": overlap,
                "windows": len(job.plan().windows),
                "seam_ratio_windowed": seam_ratio(video, pixel_boundaries(job.plan(), geometry)),
                # At latent rate (one frame per latent frame): a decoder that holds each latent
                # frame for `stride` pixel frames puts all change at latent transitions, which
                # inflates the pixel-rate ratio; here seams are compared with latent transitions.
                "seam_ratio_windowed_latent_rate": seam_ratio(
                    video[::stride], job.plan().handovers
                ),
                "render_s": round(time.monotonic() - t0, 1),
            },
        )

    job, video, main = windowed(overlap)
    by_overlap = [main] + [windowed(o)[2] for o in more_overlaps]
    chunk_frames = geometry.pixel_frames(window + 1)
    chunks = []
    for i in range(-(-frames // chunk_frames)):
        chunk = VideoJob(frames=chunk_frames, seed=seed + 1 + i, overlap=overlap, **common)
        part = render(ex, chunk).numpy()
        chunks.append(part[: frames - sum(len(c) for c in chunks)])
    concat = np.concatenate(chunks)
    independent = seam_ratio(concat, concat_boundaries([len(c) for c in chunks]))
    subs = [c[::stride] for c in chunks]
    independent_latent = seam_ratio(np.concatenate(subs), concat_boundaries([len(c) for c in subs]))
    mp4 = [encode_mp4(video, fps), encode_mp4(render(ex, job).numpy(), fps)]
    return {
        "prompt": prompt,
        "seconds": seconds,
        "fps": fps,
        "frames": frames,
        "size": size,
        "window": window,
        **main,
        "seam_ratio_independent_chunks": independent,
        "seam_ratio_independent_chunks_latent_rate": independent_latent,
        "by_overlap": by_overlap,
        "mp4_sha256": [hashlib.sha256(b).hexdigest() for b in mp4],
        "mp4_identical": mp4[0] == mp4[1],
    }


def main(argv: list[str] | None = None) -> dict:
    """`farm eval`: prompt following on held-out triples (model.training.eval), and seams."""
    p = prompt_eval.parser(prog="python -m farm.evaluation")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the seam videos")
    p.add_argument("--no-seams", action="store_true")
    a = p.parse_args(argv)
    report = prompt_eval.run(a)
    if not a.no_seams:
        report["seams"] = seam_report(
            a.model,
            prompt=report["cases"][0]["prompt"],
            seconds=a.seconds,
            size=a.size,
            steps=a.steps,
            guidance=a.guidance,
            shift=a.shift,
        )
        print(json.dumps(report["seams"], indent=1))
    prompt_eval.write_report(report, a.out)
    return report


if __name__ == "__main__":
    main()
