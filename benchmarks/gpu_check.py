"""GPU readiness: the full-size Wan 2.1 1.3B transformer on one CUDA device, random weights.

    python -m benchmarks.gpu_check            # on a CUDA machine: writes results/gpu.md + .json
    python -m benchmarks.gpu_check --smoke    # tiny config on CPU: checks this script only

Nothing is downloaded: the transformer is built from Wan 2.1 T2V 1.3B's config (diffusers
`WanTransformer3DModel`) with random weights, in bf16, with torch SDPA attention (xformers
is measured as well where it imports). It measures, within about 7 minutes on one H200:

1. ms per forward of one 81x480x832 window (latent 16x21x60x104, 32,760 tokens, 512 text
   tokens), achieved TFLOP/s and MFU against the device's dense bf16 peak (`PEAK_TFLOPS`);
2. window-steps per second at batch 1 and batch 4;
3. the wall time of a 20 s video at 16 fps (Wan 2.1's rate): the farm's window engine
   (`farm.render.engine.fuse_windows` over `WindowPlan`) with the transformer as the
   velocity, CFG (2 forwards per window-step, batched), 30 Euler steps. Steps run until
   their time budget is spent and the rest is extrapolated from the measured mean (the
   report says how many ran). The VAE decode (Wan's, random weights, fp32) is timed on a
   chunk and scaled to the whole video; text encoding (once per video) is not included;
4. peak GPU memory of each part.

FLOPs are `model.flops.dit_step_flops` on a `ModelConfig` of Wan's sizes: matmuls and
attention, a multiply-add counted as 2 (Wan's 4096->1536 text projection and the timestep
MLP, under 0.01%, are not counted). On CPU without --smoke it says it needs CUDA and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, machine, table

NAME = "gpu"
TOTAL_BUDGET_S = 420.0  # the whole run stays under 7 minutes (target: under 8 on one H200)

# Wan 2.1 T2V 1.3B: Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json's values,
# as WanTransformer3DModel's arguments (dim = 12 heads x 128 = 1536).
WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)
TINY = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2)


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the model, one window, the long video."""

    transformer: dict
    vae: dict  # AutoencoderKLWan's arguments ({} = Wan 2.1's VAE)
    width: int
    height: int
    window_frames: int  # pixel frames of one window (4n+1)
    text_tokens: int  # Wan pads every prompt to 512 tokens
    seconds: float  # the long video
    fps: float
    overlap: int  # latent frames shared by neighbouring windows
    steps: int
    guidance: float
    shift: float
    repeats: int  # timed forwards at batch 1 (batch 4: fewer)


FULL = Sizes(WAN_1_3B, {}, 832, 480, 81, 512, 20.0, 16.0, 4, 30, 5.0, 5.0, 5)
SMOKE = Sizes(TINY, {"base_dim": 8}, 48, 32, 17, 16, 2.0, 16.0, 2, 2, 5.0, 5.0, 2)

# Dense bf16 tensor-core peak (TFLOP/s) by device name, from NVIDIA's datasheets (the
# sparse figures halved). First match wins, so the longer names come first.
PEAK_TFLOPS = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
]


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak this script assumes for `device_name`, or None if unknown."""
    for key, peak in PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


@dataclass
class Clock:
    """Elapsed time against the run's budget, and progress lines."""

    budget_s: float
    start: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def left(self) -> float:
        return self.budget_s - self.elapsed

    def say(self, text: str) -> None:
        print(f"[{self.elapsed:6.1f} s] {text}", flush=True)


def cast_like_from_pretrained(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast to `dtype` except the modules diffusers keeps in float32 (norms, rope, time MLP)."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not keep & set(name.split(".")):
            tensor.data = tensor.data.to(dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def _timed(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


class Velocity:
    """The transformer as a velocity: rows of latents [N, C, T, H, W] at times t [N]."""

    def __init__(self, transformer, sizes: Sizes, device: torch.device, dtype: torch.dtype):
        self.transformer, self.device, self.dtype = transformer, device, dtype
        g = torch.Generator().manual_seed(0)
        # Random stand-ins for a prompt's and the negative prompt's UMT5 embeddings,
        # computed once per video as the farm does: [2, 512, 4096].
        text = torch.randn(2, sizes.text_tokens, sizes.transformer["text_dim"], generator=g)
        self.text = text.to(device, dtype)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """ε − x0 for rows x at times t in [0, 1]; branch picks each row's prompt (0/1)."""
        out = self.transformer(
            hidden_states=x.to(self.device, self.dtype),
            timestep=(t * 1000).to(self.device),  # diffusers' timestep = 1000 t
            encoder_hidden_states=self.text[branch.to(self.device)],
            return_dict=False,
        )[0]
        return out


def wan_geometry(sizes: Sizes):
    """Wan 2.1's frame rule and strides (its VAE: 4x8x8, patch 1x2x2; 81-frame clips)."""
    from model.geometry import Geometry

    return Geometry(
        model="wan2.1-t2v-1.3b",
        temporal_stride=4,
        spatial_stride=8,
        pixel_multiple=8 * sizes.transformer["patch_size"][1],
        max_frames=sizes.window_frames,
    )


def latent_window(sizes: Sizes) -> tuple[int, int, int, int]:
    """(C, T, H, W) of one window's latent."""
    geometry = wan_geometry(sizes)
    h, w = geometry.latent_size(sizes.width, sizes.height)
    return (sizes.transformer["in_channels"], geometry.latent_frames(sizes.window_frames), h, w)


def measure_forward(velocity: Velocity, sizes: Sizes, batch: int, clock: Clock) -> dict:
    """Median seconds per forward of `batch` windows, and the peak memory it took."""
    device = velocity.device
    x = torch.randn(batch, *latent_window(sizes), generator=torch.Generator().manual_seed(1))
    t = torch.full((batch,), 0.5)
    branch = torch.arange(batch) % 2
    _reset_peak(device)
    repeats = sizes.repeats if batch == 1 else max(2, sizes.repeats - 2)
    times = _timed(lambda: velocity(x, t, branch), device, repeats, warmup=2 if batch == 1 else 1)
    seconds = statistics.median(times)
    clock.say(f"batch {batch}: {seconds * 1000:.1f} ms per forward (median of {repeats})")
    return {"batch": batch, "seconds": seconds, "times": times, "peak_gib": _peak_gib(device)}


def render_video(velocity: Velocity, sizes: Sizes, batch: int, budget_s: float, clock: Clock):
    """A windowed video through the farm's window engine; steps run while the budget lasts."""
    from farm.render.engine import fuse_windows
    from farm.render.windows import WindowPlan
    from model.sampling import flow_timesteps

    geometry = wan_geometry(sizes)
    frames = geometry.frames_for(sizes.seconds, sizes.fps)
    length = geometry.latent_frames(frames)
    window = geometry.latent_frames(sizes.window_frames)
    plan = WindowPlan.make(length, window, sizes.overlap)
    prompts = ["a product film"] * len(plan.windows)

    def run(steps) -> list[torch.Tensor]:
        # Both CFG branches of every window, `batch` rows per forward.
        xs = torch.stack([s.x for s in steps for _ in (0, 1)])
        ts = torch.tensor([s.t for s in steps for _ in (0, 1)])
        branch = torch.tensor([0, 1] * len(steps))
        v = torch.cat(
            [
                velocity(xs[i : i + batch], ts[i : i + batch], branch[i : i + batch])
                for i in range(0, len(xs), batch)
            ]
        ).float()
        cond, uncond = v[0::2], v[1::2]
        scale = torch.tensor([s.guidance for s in steps], device=v.device).view(-1, 1, 1, 1, 1)
        return list((uncond + scale * (cond - uncond)).cpu())

    c, _, h, w = latent_window(sizes)
    x = torch.randn(1, c, length, h, w)
    ts = flow_timesteps(sizes.steps, sizes.shift).tolist()
    _reset_peak(velocity.device)
    step_times = []
    start = time.perf_counter()
    for i in range(sizes.steps):
        t0 = time.perf_counter()
        x = fuse_windows(run, x, plan, ts[i : i + 2], prompts, "", sizes.guidance)
        step_times.append(time.perf_counter() - t0)
        clock.say(f"video step {i + 1}/{sizes.steps}: {step_times[-1]:.2f} s")
        mean = statistics.mean(step_times)
        if i + 1 < sizes.steps and time.perf_counter() - start + mean > budget_s:
            break
    return {
        "finite": bool(torch.isfinite(x).all()),  # random weights may overflow; timing holds
        "frames": frames,
        "latent_frames": length,
        "window": window,
        "overlap": sizes.overlap,
        "windows": len(plan.windows),
        "forwards_per_step": 2 * len(plan.windows),
        "batch": batch,
        "steps": sizes.steps,
        "steps_run": len(step_times),
        "step_seconds": step_times,
        "sampling_seconds": statistics.mean(step_times) * sizes.steps,
        "peak_gib": _peak_gib(velocity.device),
    }


def decode_chunk(sizes: Sizes, device: torch.device, latent_frames: int, budget_s: float, clock):
    """Seconds of Wan's VAE decode per latent frame, timed on a chunk (random weights, fp32)."""
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan(**sizes.vae).to(device).eval()
    c, _, h, w = latent_window(sizes)
    _reset_peak(device)
    with torch.no_grad():
        z = torch.randn(1, c, 2, h, w, device=device)
        warm = _timed(lambda: vae.decode(z, return_dict=False), device, 1, warmup=1)[0] / 2
        # As many latent frames as the budget allows (decode is causal: linear in frames).
        n = int(max(2, min(latent_frames, budget_s / max(warm, 1e-6) / 2)))
        z = torch.randn(1, c, n, h, w, device=device)
        seconds = _timed(lambda: vae.decode(z, return_dict=False), device, 1, warmup=0)[0]
    clock.say(f"VAE decode of {n} latent frames: {seconds:.2f} s")
    return {"latent_frames": n, "seconds": seconds, "peak_gib": _peak_gib(device)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config, any device")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where gpu.md/.json go")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak, if not listed")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available() and not args.smoke:
        print(
            "gpu_check needs CUDA: no CUDA device here, so nothing was measured and "
            f"{args.out / 'gpu.md'} is left as it is. Run it on a GPU machine."
        )
        return 0
    sizes = SMOKE if args.smoke else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    clock = Clock(TOTAL_BUDGET_S)
    data: dict[str, Any] = {"smoke": args.smoke, "machine": machine(), "sizes": sizes.__dict__}

    from diffusers import WanTransformer3DModel

    from model.config import ModelConfig
    from model.flops import count_params, dit_step_flops

    with torch.device(device):
        transformer = WanTransformer3DModel(**sizes.transformer)
    cast_like_from_pretrained(transformer, dtype)
    transformer.eval().requires_grad_(False)
    data["params"], data["dtype"] = count_params(transformer), str(dtype).removeprefix("torch.")
    data["weights_gib"] = (
        torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    )
    clock.say(f"built WanTransformer3DModel: {data['params'] / 1e9:.3f}B parameters, {dtype}")
    heads, head_dim = (
        sizes.transformer["num_attention_heads"],
        sizes.transformer["attention_head_dim"],
    )
    flops_config = ModelConfig(
        name="wan2.1-t2v-1.3b",
        dim=heads * head_dim,
        heads=heads,
        depth=sizes.transformer["num_layers"],
        ffn_dim=sizes.transformer["ffn_dim"],
        text_max_len=sizes.text_tokens,
        max_frames=sizes.window_frames,
    )
    flops = dit_step_flops(flops_config, sizes.window_frames, sizes.height, sizes.width)
    data["flops_per_window"] = flops.total
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or peak_tflops(name)
    data["device"], data["peak_tflops"] = name, peak
    velocity = Velocity(transformer, sizes, device, dtype)

    # 1-2. One window's forward, batch 1 and 4 (SDPA), then xformers if it imports.
    transformer.set_attention_backend("native")
    forwards = [measure_forward(velocity, sizes, b, clock) for b in (1, 4)]
    data["forwards"] = forwards
    if device.type == "cuda":
        try:
            import xformers  # noqa: F401

            transformer.set_attention_backend("xformers")
            data["xformers"] = measure_forward(velocity, sizes, 1, clock)
        except Exception as e:  # not installed, or no kernel for this device
            data["xformers"] = f"not measured: {type(e).__name__}: {e}"[:200]
            clock.say(f"xformers {data['xformers']}")
        transformer.set_attention_backend("native")

    # 3. The long video: the better batch, its steps within what is left of the budget.
    per_row = {f["batch"]: f["seconds"] / f["batch"] for f in forwards}
    batch = min(per_row, key=per_row.get)
    video_budget = max(10.0, min(180.0, clock.left - 120.0))
    data["video"] = render_video(velocity, sizes, batch, video_budget, clock)
    del velocity, transformer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        decode = decode_chunk(sizes, device, data["video"]["latent_frames"], 30.0, clock)
        decode["video_seconds"] = (
            decode["seconds"] / decode["latent_frames"] * data["video"]["latent_frames"]
        )
    except Exception as e:  # e.g. out of memory: the transformer's numbers still stand
        decode = {"error": f"{type(e).__name__}: {e}"[:200]}
        clock.say(f"VAE decode not measured: {decode['error']}")
    data["decode"] = decode
    data["elapsed_s"] = clock.elapsed

    text = _report(data, sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.md").write_text(text + "\n")
    (args.out / f"{NAME}.json").write_text(json.dumps(data, indent=2, default=str))
    print(text)
    clock.say(f"wrote {args.out / (NAME + '.md')}")
    return 0


def _report(data: dict, sizes: Sizes) -> str:
    flops, peak = data["flops_per_window"], data["peak_tflops"]

    def rate(seconds: float, batch: int) -> tuple[str, str]:
        tflops = flops * batch / seconds / 1e12
        return f"{tflops:.1f}", (f"{100 * tflops / peak:.1f}%" if peak else "n/a (peak unknown)")

    rows = []
    runs = [("sdpa", f) for f in data["forwards"]]
    xformers = data.get("xformers", "not measured: no CUDA")
    if isinstance(xformers, dict):
        runs.append(("xformers", xformers))
    for backend, f in runs:
        tf, mfu = rate(f["seconds"], f["batch"])
        steps_per_s = f["batch"] / f["seconds"]
        rows.append(
            [
                backend,
                f["batch"],
                f"{f['seconds'] * 1000:.1f}",
                tf,
                mfu,
                f"{steps_per_s:.3f}",
                f"{f['peak_gib']:.1f}",
            ]
        )
    sdpa = {f["batch"]: f["batch"] / f["seconds"] for f in data["forwards"]}
    v, d = data["video"], data["decode"]
    if "error" in d:
        decode_row = f"not measured ({d['error']})"
        total_row = f"{v['sampling_seconds']:.0f} s + decode"
        decode_peak = "-"
    else:
        decode_row = (
            f"{d['video_seconds']:.0f} s (scaled from {d['latent_frames']} latent frames "
            f"in {d['seconds']:.1f} s)"
        )
        total_row = f"{v['sampling_seconds'] + d['video_seconds']:.0f} s"
        decode_peak = f"{d['peak_gib']:.1f}"
    extrapolated = v["steps_run"] < v["steps"]
    latent = "x".join(str(n) for n in latent_window(sizes))
    lines = [
        f"## {NAME}" + (" (smoke run: tiny config, not a measurement)" if data["smoke"] else ""),
        "",
        f"Measured on: {data['machine']}. Wan 2.1 T2V 1.3B transformer architecture "
        f"({data['params'] / 1e9:.3f}B parameters, {data['weights_gib']:.1f} GiB, random "
        f"weights, {data['dtype']} but diffusers' float32 modules), one "
        f"{sizes.window_frames}x{sizes.height}x{sizes.width} window = latent {latent}, "
        f"{sizes.text_tokens} text tokens. FLOPs per window forward: {flops / 1e12:.1f} TFLOP "
        "(model/flops.py: matmuls + attention, multiply-add = 2). MFU against "
        + (f"{peak:.0f} TFLOP/s dense bf16 for {data['device']}." if peak else "an unknown peak."),
        "",
        "#### One window forward",
        "",
        table(
            [
                "attention",
                "batch",
                "ms / forward",
                "TFLOP/s",
                "MFU",
                "window-steps / s",
                "peak GiB",
            ],
            rows,
        ),
        "",
        f"Window-steps/s at batch 4 vs 1: {sdpa[4] / sdpa[1]:.2f}x (SDPA)."
        + ("" if isinstance(xformers, dict) else f" xformers: {xformers}."),
        "",
        f"#### A {sizes.seconds:g} s video on one GPU",
        "",
        table(
            ["quantity", "value"],
            [
                ["frames (fps)", f"{v['frames']} ({sizes.fps:g}) = {v['latent_frames']} latent"],
                [
                    "windows (latent frames, overlap)",
                    f"{v['windows']} ({v['window']}, {v['overlap']})",
                ],
                ["forwards per step (CFG)", f"{v['forwards_per_step']}, batch {v['batch']}"],
                ["s per step (mean)", f"{statistics.mean(v['step_seconds']):.2f}"],
                [
                    f"sampling, {v['steps']} steps",
                    f"{v['sampling_seconds']:.0f} s"
                    + (f" (extrapolated from {v['steps_run']} steps run)" if extrapolated else ""),
                ],
                ["VAE decode (Wan 2.1 VAE, fp32)", decode_row],
                ["total (text encoding not included)", total_row],
                ["peak GiB: sampling / decode", f"{v['peak_gib']:.1f} / {decode_peak}"],
                ["latent finite (random weights)", "yes" if v["finite"] else "no"],
            ],
        ),
        "",
        f"gpu_check ran {data['elapsed_s']:.0f} s.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
