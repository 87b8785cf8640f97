"""Model benchmarks: velocity throughput, packed vs padded batches, analytic FLOPs of `base`.

python -m benchmarks.bench_model
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import model
from benchmarks.common import median_time, report, table
from model.flops import count_params, dit_step_flops

# A Renderer's mixed batch: 9:16, 1:1 and 16:9 windows of 17 frames (5 latent frames).
MIXED = [(17, 256, 144), (17, 192, 192), (17, 144, 256)]


def throughput(name: str, frames: int, height: int, width: int, batch: int) -> dict:
    """Velocity forwards per second and tokens per second for one preset and shape."""
    m = model.load(name)
    shape = (batch, *m.latent_shape(frames, height, width))
    x = model.noise(shape, 0)
    cond = m.encode_text(["a red bottle on a table"] * batch)
    t = torch.full((batch,), 0.5)
    seconds = median_time(lambda: m.velocity(x, t, cond), repeats=5)
    tokens = batch * shape[2] * (shape[3] // 2) * (shape[4] // 2)
    return {
        "preset": name,
        "clip": f"{frames}x{width}x{height}",
        "batch": batch,
        "tokens": tokens,
        "ms": seconds * 1e3,
        "tokens_per_s": tokens / seconds,
    }


def packed_vs_padded(name: str) -> dict:
    """Time one packed forward of mixed formats vs padding them to one bounding shape."""
    m = model.load(name)
    shapes = [m.latent_shape(*s) for s in MIXED]
    xs = [model.noise(s, i) for i, s in enumerate(shapes)]
    cond = m.encode_text(["vertical", "square", "wide"])
    t = torch.tensor([0.9, 0.5, 0.1])
    T, H, W = (max(s[d] for s in shapes) for d in (1, 2, 3))
    padded = torch.stack(
        [F.pad(x, (0, W - x.shape[3], 0, H - x.shape[2], 0, T - x.shape[1])) for x in xs]
    )
    packed_s = median_time(lambda: m.velocity_packed(xs, t, cond))
    padded_s = median_time(lambda: m.velocity(padded, t, cond))
    separate_s = median_time(
        lambda: [m.velocity(x[None], t[i : i + 1], cond[i]) for i, x in enumerate(xs)]
    )
    return {
        "preset": name,
        "packed_ms": packed_s * 1e3,
        "padded_ms": padded_s * 1e3,
        "separate_ms": separate_s * 1e3,
        "padded_over_packed": padded_s / packed_s,
        "separate_over_packed": separate_s / packed_s,
    }


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [
        throughput("tiny", 9, 64, 64, 1),
        throughput("tiny", 17, 256, 144, 4),
        throughput("small", 17, 256, 144, 1),
        throughput("small", 17, 256, 144, 4),
    ]
    text = "### Velocity forward throughput\n\n" + table(
        ["preset", "clip (FxWxH)", "batch", "tokens", "ms / forward", "tokens / s"],
        [
            [
                r["preset"],
                r["clip"],
                r["batch"],
                r["tokens"],
                f"{r['ms']:.1f}",
                f"{r['tokens_per_s']:,.0f}",
            ]
            for r in rows
        ],
    )
    packs = [packed_vs_padded("tiny"), packed_vs_padded("small")]
    text += "\n\n### Packed vs padded batch of 9:16 + 1:1 + 16:9 (17 frames)\n\n" + table(
        [
            "preset",
            "packed ms",
            "padded ms",
            "one by one ms",
            "padded / packed",
            "one by one / packed",
        ],
        [
            [
                p["preset"],
                f"{p['packed_ms']:.1f}",
                f"{p['padded_ms']:.1f}",
                f"{p['separate_ms']:.1f}",
                f"{p['padded_over_packed']:.2f}x",
                f"{p['separate_over_packed']:.2f}x",
            ]
            for p in packs
        ],
    )
    base = model.build("base", device="meta")
    flops = dit_step_flops(base.config, frames=81, height=480, width=832)
    text += "\n\n### `base` preset, analytic (meta device, nothing allocated)\n\n" + table(
        ["quantity", "value"],
        [
            [
                "parameters: DiT / text / VAE / total",
                f"{count_params(base.dit) / 1e9:.3f}B / {count_params(base.text) / 1e6:.0f}M / "
                f"{count_params(base.vae) / 1e6:.0f}M / {count_params(base) / 1e9:.3f}B",
            ],
            ["tokens at 81 x 480 x 832", f"{flops.tokens:,}"],
            ["FLOPs / step (one CFG branch)", f"{flops.total / 1e12:.1f} TFLOP"],
            [
                "  of which linear / self-attn / cross-attn",
                f"{flops.linear / 1e12:.1f} / {flops.self_attention / 1e12:.1f} / "
                f"{flops.cross_attention / 1e12:.1f} TFLOP",
            ],
            ["50 steps with CFG (2 branches)", f"{100 * flops.total / 1e15:.1f} PFLOP"],
        ],
    )
    report(
        "model", text, {"throughput": rows, "packing": packs, "base_flops_per_step": flops.total}
    )


if __name__ == "__main__":
    main()
