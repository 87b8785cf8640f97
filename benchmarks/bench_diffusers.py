"""Open checkpoints (issue 20): the diffusers adapters against diffusers' own pipelines, and
import + load time of a checkpoint on a Ray actor.

    flock /tmp/farm-ray.lock .venv/bin/python -m benchmarks.bench_diffusers [REPEATS]

Overhead: for each family, the family's pipeline called with given latents, steps and
sigmas (`output_type="latent"`) against guided Euler through the model contract on the same
loaded modules (`m.pipe`): `encode_text` once per prompt, then `velocity` per step with CFG,
as the parity tests run it (tests/model/diffusers/parity.py), and once more with both CFG
branches in one `velocity` call, as the Renderer runs window-steps. The three run in a
rotating order, round after round, so the shared machine's noise hits all of them; a ratio
is the median of the per-round ratios. The checkpoints are the tests' tiny random
pipelines, once as built (a transformer of 20-40k parameters: the time is Python and
the text encoder) and once with the transformer widened so that its forward is most of
the time, as it is for a real checkpoint.

Import and load: `import model` then `model.load("diffusers:<dir>")` twice (the first also
imports torch, diffusers and transformers), the same lines in a fresh interpreter and in a
fresh Ray actor on a private local Ray.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import model
from benchmarks.common import report, table
from model.diffusers import testing as tiny
from model.diffusers.testing import GUIDANCE, NEGATIVE, PROMPT, contract_euler
from model.sampling import euler
from model.text import TextCond

REPEATS = 7
TARGET = 1.05
FAMILIES = {"wan21": "Wan 2.1", "ltx": "LTX-Video", "cogvideox": "CogVideoX"}
# The tiny transformers widened: width 4 x 32 = 128 (from 24-32), 4 layers (from 1-2).
WIDEN = {"num_attention_heads": 4, "attention_head_dim": 32, "num_layers": 4}
WIDEN_FAMILY = {"wan21": {"ffn_dim": 512}, "ltx": {"cross_attention_dim": 128}, "cogvideox": {}}


@dataclass(frozen=True)
class Case:
    """One family at one size: the checkpoint (as built or widened) and the clip sampled."""

    family: str  # a key of tiny.BUILDERS
    widened: bool
    frames: int
    height: int
    width: int
    steps: int

    @property
    def label(self) -> str:
        return f"{FAMILIES[self.family]}, {'widened' if self.widened else 'tiny'}"


CASES = [
    # The parity tests' clips (tests/model/diffusers): tokens in the single digits.
    Case("wan21", False, 9, 16, 16, 4),
    Case("ltx", False, 17, 64, 64, 4),
    Case("cogvideox", False, 9, 16, 16, 4),
    # Widened, on clips of 1280-1728 tokens.
    Case("wan21", True, 17, 256, 256, 8),
    Case("ltx", True, 17, 768, 768, 8),
    Case("cogvideox", True, 17, 256, 256, 8),
]


def save_checkpoint(family: str, widened: bool, folder: Path) -> str:
    """Build the tiny pipeline (widened if asked), save it, return its `diffusers:` ref."""
    pipe = tiny.BUILDERS[family]()
    if widened:
        small = pipe.transformer
        config = {k: v for k, v in small.config.items() if not k.startswith("_")}
        torch.manual_seed(0)
        wide = type(small).from_config({**config, **WIDEN, **WIDEN_FAMILY[family]}).eval()
        pipe.register_modules(transformer=wide)
    pipe.save_pretrained(folder)
    return f"diffusers:{folder}"


def batched_cfg_euler(m, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """`contract_euler` with both CFG branches in one `velocity` call, as the Renderer runs them."""
    cond = TextCond.cat([m.encode_text([PROMPT]), m.encode_text([NEGATIVE])])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_c, v_u = m.velocity(torch.cat([x, x]), torch.cat([t, t]), cond).chunk(2)
        return v_u + GUIDANCE * (v_c - v_u)

    return euler(guided, x.clone(), ts)


def samplers(case: Case, m) -> dict[str, Callable[[], torch.Tensor]]:
    """The same guided sampling three ways (same latents and sigmas), each returning the final
    latent [B, C, T, H, W] in the contract's convention: "pipeline", "adapter" (as the
    parity tests) and "batched" (the adapter with both CFG branches in one call)."""
    pipe = m.pipe
    pipe.set_progress_bar_config(disable=True)
    F, H, W, steps = case.frames, case.height, case.width, case.steps
    x = torch.randn(1, *m.latent_shape(F, H, W), generator=torch.Generator().manual_seed(0))
    ts = m.timesteps(steps, F, H, W)
    unpack = lambda out: out
    if case.family == "ltx":  # the pipeline takes and returns packed tokens
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        latents = pipe._pack_latents(x, p, pt)
        unpack = lambda out: pipe._unpack_latents(out, *x.shape[2:], p, pt)
    elif case.family == "cogvideox":  # x is the diffusion latent x_T, the contract's y = x/(a+s)
        latents = x.permute(0, 2, 1, 3, 4)  # (B, T, C, H, W)
        t0 = ts[0].double()
        x = (x.double() * torch.sqrt(t0**2 + (1 - t0) ** 2)).float()
        unpack = lambda out: out.permute(0, 2, 1, 3, 4)
    else:
        latents = x
    args = dict(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        height=H,
        width=W,
        num_frames=F,
        num_inference_steps=steps,
        guidance_scale=GUIDANCE,
        output_type="latent",
    )
    return {
        "pipeline": lambda: unpack(pipe(**args, latents=latents.clone()).frames),
        "adapter": lambda: contract_euler(m, x, ts),
        "batched": lambda: batched_cfg_euler(m, x, ts),
    }


def transformer_share(m, fn: Callable[[], object]) -> tuple[float, int]:
    """(fraction of fn's wall time inside the transformer's forward, forward calls)."""
    spent, calls, start = [0.0], [0], [0.0]

    def before(*_):
        start[0] = time.perf_counter()

    def after(*_):
        spent[0] += time.perf_counter() - start[0]
        calls[0] += 1

    hooks = [
        m.pipe.transformer.register_forward_pre_hook(before),
        m.pipe.transformer.register_forward_hook(after),
    ]
    try:
        t0 = time.perf_counter()
        fn()
        total = time.perf_counter() - t0
    finally:
        for h in hooks:
            h.remove()
    return spent[0] / total, calls[0]


def overhead(case: Case, ref: str, repeats: int) -> dict:
    """Interleaved timings of the pipeline and the adapter on one checkpoint and clip."""
    m = model.load(ref)
    runs = samplers(case, m)
    reference = runs["pipeline"]()  # also the warm-up
    errors = {k: float((fn() - reference).abs().max()) for k, fn in runs.items() if k != "pipeline"}
    share, forwards = transformer_share(m, runs["pipeline"])
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for i in range(repeats):  # a new order each round: no way runs first or last every time
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    velocity_calls = 2 * case.steps  # cfg(): one conditional and one unconditional per step
    out = {
        "case": case.label,
        "clip": f"{case.frames}x{case.width}x{case.height}",
        "latent": list(m.latent_shape(case.frames, case.height, case.width)),
        "steps": case.steps,
        "transformer_params": sum(p.numel() for p in m.pipe.transformer.parameters()),
        "pipeline_forwards": forwards,
        "transformer_share": share,
        "max_error": errors,
        "times_s": times,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
    }
    for name in ("adapter", "batched"):  # median of ratios within a round: noise hits both
        pairs = zip(times[name], times["pipeline"], strict=True)
        out[f"{name}_ratio"] = statistics.median(a / b for a, b in pairs)
    out["overhead_ms_per_velocity"] = (
        (out["median_s"]["adapter"] - out["median_s"]["pipeline"]) / velocity_calls * 1e3
    )
    return out


# The same lines run in a fresh interpreter and on a fresh Ray actor (REF is set first).
IMPORT_AND_LOAD = """
import sys, time
preloaded = [name for name in ("torch", "diffusers", "model") if name in sys.modules]
start = time.perf_counter()
import model
imported = time.perf_counter()
model.load(REF)
loaded = time.perf_counter()
model.load(REF)
result = {
    "import_s": imported - start,
    "first_load_s": loaded - imported,
    "load_again_s": time.perf_counter() - loaded,
    "preloaded": preloaded,
}
"""


def in_fresh_process(ref: str) -> dict:
    """IMPORT_AND_LOAD in a new Python process (no Ray), from the repository root."""
    code = f"REF = {ref!r}\n{IMPORT_AND_LOAD}\nimport json; print(json.dumps(result))"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def on_fresh_actor(ref: str) -> dict:
    """IMPORT_AND_LOAD on a new Ray actor; adds the actor's start time (until it answers)."""
    import ray

    class Loader:  # defined here, so Ray ships it by value and the worker imports nothing
        def ready(self) -> bool:
            return True

        def run(self, code: str, ref: str) -> dict:
            scope = {"REF": ref}
            exec(code, scope)
            return scope["result"]

    t0 = time.perf_counter()
    actor = ray.remote(num_cpus=1)(Loader).remote()
    ray.get(actor.ready.remote())
    started = time.perf_counter() - t0
    result = ray.get(actor.run.remote(IMPORT_AND_LOAD, ref))
    ray.kill(actor)
    return {"actor_start_s": started, **result}


def import_and_load(ref: str, repeats: int = 3) -> dict:
    """Medians of IMPORT_AND_LOAD in fresh processes and on fresh actors, alternated."""
    import ray

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback cluster of this process only
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runs: dict[str, list[dict]] = {"process": [], "actor": []}
        for _ in range(repeats):
            runs["process"].append(in_fresh_process(ref))
            runs["actor"].append(on_fresh_actor(ref))
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE")
        else:
            os.environ["RAY_AUTH_MODE"] = saved
    medians = {
        where: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k.endswith("_s")}
        for where, rs in runs.items()
    }
    return {"runs": runs, "median": medians}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    repeats = int(argv[0]) if argv else REPEATS
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"  # never the hub
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        refs = {
            (c.family, c.widened): save_checkpoint(c.family, c.widened, Path(tmp) / c.label)
            for c in CASES
        }
        rows = []
        for case in CASES:
            rows.append(overhead(case, refs[case.family, case.widened], repeats))
            r = rows[-1]
            ratios = f"{r['adapter_ratio']:.3f}x, CFG batched {r['batched_ratio']:.3f}x"
            print(f"{case.label}: {ratios}", file=sys.stderr)
        loading = import_and_load(refs["wan21", False])
    data = {
        "repeats": repeats,
        "target_ratio": TARGET,
        "widen": {"all": WIDEN, **WIDEN_FAMILY},
        "overhead": rows,
        "import_and_load": loading,
        "total_s": time.perf_counter() - started,
    }
    report("diffusers", render(data), data)


def render(data: dict) -> str:
    """The markdown tables and notes of a run."""
    rows = []
    for r in data["overhead"]:
        met = "—"
        if "widened" in r["case"]:
            met = "yes" if r["adapter_ratio"] <= TARGET else "no"
        rows.append(
            [
                r["case"],
                r["clip"],
                "x".join(map(str, r["latent"])),
                r["steps"],
                f"{r['transformer_params'] / 1e6:.2f}M",
                f"{r['transformer_share']:.0%}",
                f"{r['median_s']['pipeline']:.3f}",
                f"{r['median_s']['adapter']:.3f}",
                f"{r['adapter_ratio']:.3f}x",
                met,
                f"{r['median_s']['batched']:.3f}",
                f"{r['batched_ratio']:.3f}x",
                f"{max(r['max_error'].values()):.1e}",
            ]
        )
    text = (
        f"### Adapter vs pipeline: guided Euler, CFG {GUIDANCE}, "
        f"{data['repeats']} interleaved rounds\n\n"
        + table(
            [
                "checkpoint",
                "clip (FxWxH)",
                "latent (CxTxHxW)",
                "steps",
                "transformer",
                "forward share of pipeline",
                "pipeline s",
                "adapter s",
                "adapter / pipeline",
                f"<= {TARGET}x",
                "adapter, CFG batched s",
                "batched / pipeline",
                "max diff",
            ],
            rows,
        )
    )
    text += (
        "\n\nAdapter: `encode_text` per prompt, then `velocity` twice per step through "
        "`model.sampling.cfg` (tests/model/diffusers/parity.py). CFG batched: the same with "
        "both branches in one `velocity` call, as the Renderer runs window-steps. The Wan "
        "pipeline runs its two branches as two forwards; LTX's and CogVideoX's as one batch "
        "of two. Forward share: the fraction of the pipeline's wall time inside the "
        "transformer's forward. The tiny checkpoints (the parity tests' clips) are all "
        "overhead: there a ratio is Python per call and the text encoder, so the target is "
        "read on the widened ones (transformer width 128, 4 layers: `WIDEN`). Ratios: median "
        f"of the {data['repeats']} per-round ratios; s: medians; max diff: largest |latent "
        "difference| from the pipeline's result."
    )
    load = data["import_and_load"]["median"]
    n = len(data["import_and_load"]["runs"]["actor"])
    text += f"\n\n### Import and load of the tiny Wan 2.1 checkpoint (median of {n})\n\n" + table(
        ["where", "actor start s", "import model s", "first load s", "load again s"],
        [
            [
                "fresh Ray actor (local Ray, 2 CPUs)",
                f"{load['actor']['actor_start_s']:.2f}",
                f"{load['actor']['import_s']:.2f}",
                f"{load['actor']['first_load_s']:.2f}",
                f"{load['actor']['load_again_s']:.3f}",
            ],
            [
                "fresh Python process",
                "—",
                f"{load['process']['import_s']:.2f}",
                f"{load['process']['first_load_s']:.2f}",
                f"{load['process']['load_again_s']:.3f}",
            ],
        ],
    )
    text += (
        '\n\n`import model` needs no torch; the first `model.load("diffusers:...")` imports '
        "torch, diffusers and transformers, then reads the folder; loading again is the "
        "checkpoint alone."
    )
    return text


if __name__ == "__main__":
    main()
