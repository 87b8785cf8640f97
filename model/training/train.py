"""Train a preset on procedural product films (`model.training.data`): VAE, then latents, then DiT.

    python -m model.training.train --preset small --out runs/small --minutes 55

Four phases, each bounded by a step count and a share of the time budget:

1. **vae**: the causal VAE, started as a block-average autoencoder (`pool_init`: a usable
   VAE at step 0, so a busy CPU still ends with one) and fine-tuned on random crops of
   short clips (L1 + L2 reconstruction and a small KL). At the end the latent's
   per-channel scale is folded into the encoder's last and the decoder's first
   convolution, so latents have unit variance (what flow matching with N(0, 1) noise
   expects) and the model needs no extra scale factor.
2. **bank**: clips of the training length are encoded once into a bank of latents (the
   VAE is frozen from here on; encoding on every DiT step would cost more than the DiT).
3. **align**: the text encoder alone, CLIP-style (`model.training.align`): a caption's pooled
   embedding must pick out its own clip's latent in the batch. Flow matching alone teaches
   a from-scratch encoder too slowly (see `model.training.align`); this gives the DiT a prompt
   embedding in which colour and motion already stand out, in every language.
4. **dit**: the text encoder and transformer by flow matching: x_t = (1 - t)·x0 + t·ε,
   target ε - x0, t logit-normal; captions in a random language per clip, dropped to ""
   10% of the time (for classifier-free guidance); with the block-average VAE, latents
   are also mirrored and played backwards (relabelled: left <-> right, zoom in <-> out);
   EMA of the weights is what ships.

Every random draw is seeded by (seed, phase, step), and the whole state (weights,
optimiser, EMA, bank, loss log) is saved to `OUT/state.pt` every few minutes, so a killed
run resumes where it stopped with the same result. The run ends by writing the EMA model
as a checkpoint (`OUT/checkpoint`, fp16 storage) and the loss curves (`OUT/loss.png`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import model
from model.sampling import sample_training_t
from model.training.align import Aligner
from model.training.data import CAPTIONED, LANGUAGES, Clip, ClipStream, caption, is_held_out
from model.video import VideoModel

PHASES = ("vae", "bank", "align", "dit", "done")
SAVE_EVERY_S = 120.0


def _rng(seed: int, phase: str, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, PHASES.index(phase), step])


def _gen(seed: int, phase: str, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + PHASES.index(phase) * 7919 + step)


def _to_unit(video: np.ndarray, device) -> torch.Tensor:
    """uint8 [B, F, H, W, 3] → float [B, 3, F, H, W] in [-1, 1]."""
    x = torch.from_numpy(video).to(device).permute(0, 4, 1, 2, 3)  # (B, 3, F, H, W)
    return x.float() / 127.5 - 1.0


# --- phase 1: VAE ------------------------------------------------------------------------


def vae_step(m: VideoModel, opt, args, step: int) -> float:
    """One VAE step on random crops; returns the reconstruction loss."""
    rng = _rng(args.seed, "vae", step)
    stream = ClipStream(args.seed, frames=args.vae_frames, height=args.size, width=args.size)
    video, _ = stream.batch(int(rng.integers(1 << 40)), args.vae_batch)
    c = args.vae_crop
    ys, xs = rng.integers(0, args.size - c + 1, size=(2, len(video)))
    video = np.stack([v[:, y : y + c, x : x + c] for v, y, x in zip(video, ys, xs, strict=True)])
    x = _to_unit(video, args.device)
    mean, logvar = m.vae.encode_dist(x)
    eps = torch.randn(mean.shape, generator=_gen(args.seed, "vae", step)).to(mean.device)
    z = mean + eps * (0.5 * logvar).exp()
    y = m.vae.decode(z)
    recon = (y - x).abs().mean() + (y - x).pow(2).mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
    loss = recon + args.kl_weight * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.vae.parameters(), 1.0)
    opt.step()
    return recon.item()


@torch.no_grad()
def text_init(m: VideoModel, scale: float = 1.0) -> None:
    """Give the byte embeddings unit scale so different prompts start out different.

    With the preset's 0.02-scale embeddings, the first attention layer's (prompt-wide)
    average dominates the residual stream: every token of every prompt comes out nearly
    the same (cosine 0.9 at init), the DiT learns to ignore the text, and joint training
    then collapses the encoder to a constant. Unit-scale byte embeddings, small positions
    and damped block outputs keep each byte visible from the first step; with a slower
    learning rate for the encoder (`--text-lr-scale`) it stays diverse while the DiT learns
    to read it.
    """
    g = torch.Generator().manual_seed(m.config.seed + 1)  # a re-run draws the same init
    m.text.embed.weight.copy_(torch.randn(m.text.embed.weight.shape, generator=g) * scale)
    m.text.pos.copy_(torch.randn(m.text.pos.shape, generator=g) * 0.2 * scale)
    for block in m.text.blocks:
        block.proj.weight.mul_(0.2)
        block.mlp[2].weight.mul_(0.2)
    # Cross-attention starts silent (as adaLN-Zero gates do): prompts that the DiT cannot
    # read yet add no noise, so nothing pushes the encoder towards a constant either.
    for block in m.dit.blocks:
        block.cross.proj.weight.zero_()
        block.cross.proj.bias.zero_()


@torch.no_grad()
def pool_init(vae: torch.nn.Module) -> None:
    """Set the VAE to a block-average autoencoder, a good start for fine-tuning on a budget.

    Encoder: RGB rides in channels 0-2 (every residual branch is zeroed to the identity),
    each strided conv averages its 2x2 spatial block and keeps the newest frame, so latent
    channels 0-2 are the mean colour of each 8x8 block at frames 0, 4, 8, ... Decoder:
    nearest-neighbour upsampling in space and time. The RMS norm before each end conv is
    made nearly linear by many constant channels (its RMS barely moves) and an offset that
    keeps SiLU in its linear range.
    """
    OFFSET, CONST = 4.0, 20.0

    def zero(conv):
        conv.weight.zero_()
        conv.bias.zero_()

    def centre(conv, pairs, gain=1.0):
        kt, kh, kw = conv.kernel_size
        for o, i in pairs:
            conv.weight[o, i, kt - 1, kh // 2, kw // 2] = gain

    for m in vae.modules():
        if isinstance(m, torch.nn.Conv3d):
            zero(m)
        if hasattr(m, "gain"):
            m.gain.fill_(1.0)
    c0, c3 = vae.config.vae_channels[0], vae.config.vae_channels[3]
    rgb = [(c, c) for c in range(3)]
    centre(vae.enc_in, rgb)
    vae.enc_in.bias[3] = 1.0  # a constant channel, carried to the norm
    strided = [m for m in vae.encoder if type(m).__name__ == "CausalConv3d"]
    for conv in strided:
        kt = conv.kernel_size[0]
        for c in range(4):
            for kh in (1, 2):
                for kw in (1, 2):
                    conv.weight[c, c, kt - 1, kh, kw] = 0.25
    # Last strided conv: RGB + offset, and constants in every spare channel for the norm.
    last = strided[-1]
    last.weight[3:] = 0
    last.bias[:3] = OFFSET
    last.bias[3:] = CONST
    rms = ((3 * OFFSET**2 + (c3 - 3) * CONST**2) / c3) ** 0.5
    vae.enc_norm.gain[:3] = 2 * rms  # -> 2·(x + OFFSET), where SiLU is ~linear
    centre(vae.enc_out, rgb, 0.5)
    vae.enc_out.bias[:3] = -OFFSET
    vae.enc_out.bias[vae.latent_channels :] = -10.0  # small posterior variance
    centre(vae.dec_in, rgb)
    vae.dec_in.bias[:3] = OFFSET
    vae.dec_in.bias[3:c0] = CONST
    for m in vae.decoder:
        if type(m).__name__ == "Upsample":
            n = m.c_out
            copies = [(c, c) for c in range(c0)]
            if m.temporal:
                copies += [(n + c, c) for c in range(c0)]
            centre(m.conv, copies)
    rms = ((3 * OFFSET**2 + (c0 - 3) * CONST**2) / c0) ** 0.5
    vae.dec_norm.gain[:3] = 2 * rms
    centre(vae.dec_out, rgb, 0.5)
    vae.dec_out.bias[:] = -OFFSET


@torch.no_grad()
def normalise_latents(m: VideoModel, args) -> list[float]:
    """Fold the per-channel std of the latents into the VAE, so latents have unit variance.

    Dividing the mean half of `enc_out` by s and multiplying the input channels of
    `dec_in` by s leaves decode(encode(x)) unchanged (zero padding stays zero).
    """
    stream = ClipStream(args.seed + 1, frames=args.frames, height=args.size, width=args.size)
    video, _ = stream.batch(0, 8)
    z = m.vae.encode(_to_unit(video, args.device))  # (B, C, T, H, W)
    s = z.transpose(0, 1).flatten(1).std(dim=1).clamp_min(1e-3)  # (C,)
    C = m.latent_channels
    m.vae.enc_out.weight[:C] /= s.view(-1, 1, 1, 1, 1)
    m.vae.enc_out.bias[:C] /= s
    # Keep the posterior's variance consistent with the rescaled mean.
    m.vae.enc_out.bias[C:] -= 2 * s.log()
    m.vae.dec_in.weight *= s.view(1, -1, 1, 1, 1)
    return s.tolist()


# --- phase 2: latent bank ----------------------------------------------------------------


@torch.no_grad()
def bank_step(m: VideoModel, args, step: int) -> tuple[torch.Tensor, list[dict]]:
    """Encode one batch of training clips: latents (fp16, CPU) and their clips as dicts."""
    stream = ClipStream(args.seed + 1, frames=args.frames, height=args.size, width=args.size)
    video, clips = stream.batch(step * args.bank_batch, args.bank_batch)
    z = m.vae.encode(_to_unit(video, args.device))
    return z.half().cpu(), [asdict(c) for c in clips]


# --- phase 3: text-video alignment ---------------------------------------------------


def _captioned_batch(state: dict, args, rng: np.random.Generator, size: int):
    """Latents [B, C, T, H, W] from the bank (augmented) and one caption per clip."""
    bank, clips = state["bank"], state["bank_clips"]
    idx = rng.integers(len(clips), size=size)
    x0 = bank[torch.from_numpy(idx)].float().to(args.device)
    out = []
    for b, i in enumerate(idx):
        clip = Clip(**clips[i])
        if _augments(args):
            x0[b], clip = mirror_reverse(x0[b], clip, rng.random() < 0.5, rng.random() < 0.5)
        out.append(clip)
    prompts = [caption(c, LANGUAGES[rng.integers(len(LANGUAGES))], rng) for c in out]
    return x0, out, prompts


def align_step(m: VideoModel, aligner: Aligner, opt, state: dict, args, step: int) -> float:
    """One contrastive step of text encoder + latent probe; returns the InfoNCE loss."""
    rng = _rng(args.seed, "align", step)
    z, clips, prompts = _captioned_batch(state, args, rng, args.align_batch)
    keys = [tuple(getattr(c, k) for k in CAPTIONED) for c in clips]
    same = torch.tensor([[a == b for b in keys] for a in keys], device=z.device)
    loss, _ = aligner.loss(m.text.encode(prompts).pooled(), z, same)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(m.text.parameters()) + list(aligner.parameters()), 1.0)
    for group in opt.param_groups:
        group["lr"] = args.align_lr * min(1.0, (step + 1) / args.warmup)
    opt.step()
    return loss.item()


# --- phase 4: DiT ------------------------------------------------------------------------


_MIRROR = {"left": "right", "right": "left"}
_REVERSE = {"left": "right", "right": "left", "up": "down", "down": "up",
            "zoom_in": "zoom_out", "zoom_out": "zoom_in"}  # fmt: skip


def _augments(args) -> bool:
    """Mirror/reverse latents only with the block-average VAE, where that is exact."""
    return args.vae_init == "pool" and args.vae_steps == 0


def mirror_reverse(z: torch.Tensor, clip: Clip, mirror: bool, reverse: bool):
    """A latent clip [C, T, H, W] mirrored left-right and/or played backwards, relabelled.

    With the block-average VAE, latent t is the 8x8 block means of pixel frame 4t, so a
    mirrored or time-reversed latent is exactly the latent of the mirrored or reversed
    video. A result that would be a held-out triple is not used (the clip stays as it was).
    """
    motion, pan = clip.motion, clip.pan
    if mirror:
        motion, pan = _MIRROR.get(motion, motion), _MIRROR.get(pan, pan)
    if reverse:
        motion, pan = _REVERSE.get(motion, motion), _MIRROR.get(pan, pan)
    if is_held_out(clip.product, clip.colour, motion):
        return z, clip
    if mirror:
        z = z.flip(-1)
    if reverse:
        z = z.flip(1)
    return z, dataclasses.replace(clip, motion=motion, pan=pan)


def dit_step(m: VideoModel, opt, state: dict, args, step: int) -> float:
    """One flow-matching step of text encoder + DiT on a batch drawn from the bank."""
    rng = _rng(args.seed, "dit", step)
    gen = _gen(args.seed, "dit", step)
    x0, _, prompts = _captioned_batch(state, args, rng, args.batch)  # (B, C, T, H, W)
    prompts = ["" if rng.random() < args.cfg_dropout else p for p in prompts]
    t = sample_training_t(len(x0), gen).to(args.device)
    # Shifted towards t = 1 (as sampling is): only near pure noise must the prompt decide.
    t = args.t_shift * t / (1 + (args.t_shift - 1) * t)
    noise = torch.randn(x0.shape, generator=gen).to(args.device)
    tt = t.view(-1, 1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * noise
    cond = m.text.encode(prompts)
    v = m.dit(xt, t, cond)
    loss = F.mse_loss(v.float(), noise - x0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(m.dit.parameters()) + list(m.text.parameters()), 1.0)
    for group in opt.param_groups:
        group["lr"] = args.lr * group["lr_scale"] * min(1.0, (step + 1) / args.warmup)
    opt.step()
    return loss.item()


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], m: VideoModel, step: int, decay: float) -> None:
    """EMA of the DiT and text-encoder weights (decay warms up over the first steps)."""
    d = min(decay, (1 + step) / (10 + step))
    for name, p in m.named_parameters():
        if name in ema:
            ema[name].lerp_(p.detach(), 1 - d)


# --- the run -----------------------------------------------------------------------------


def _new_state(m: VideoModel) -> dict:
    return {
        "phase": "vae",
        "step": {p: 0 for p in PHASES},
        "elapsed": {p: 0.0 for p in PHASES},
        "log": [],
        "bank": None,
        "bank_clips": [],
        "latent_scale": None,
    }


def _save(
    state: dict, m: VideoModel, aligner: Aligner, opts: dict, ema: dict | None, out: Path
) -> None:
    state = dict(
        state,
        model=m.state_dict(),
        aligner=aligner.state_dict(),
        ema=ema,
        opts={k: o.state_dict() for k, o in opts.items()},
    )
    tmp = out / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out / "state.pt")


def _budget(args, phase: str) -> tuple[int, float]:
    """(max steps, max seconds) of a phase."""
    share = {"vae": args.vae_share, "bank": args.bank_share, "align": args.align_share}
    share["dit"] = 1.0 - sum(share.values())
    steps = {
        "vae": args.vae_steps,
        "bank": args.bank_steps,
        "align": args.align_steps,
        "dit": args.dit_steps,
    }[phase]
    return steps, args.minutes * 60.0 * share[phase]


def model_config(args: argparse.Namespace) -> model.config.ModelConfig:
    """The preset's config with the command line's overrides, validated."""
    cfg = model.config.get_preset(args.preset)
    if args.text_conv is None:
        return cfg
    return model.config.ModelConfig.model_validate({**dict(cfg), "text_conv": args.text_conv})


def train(args: argparse.Namespace) -> Path:
    """Run (or resume) the four phases into `args.out`; returns the checkpoint directory."""
    torch.set_num_threads(args.threads)
    # Tiny presets cut long captions; that is expected here, not worth a warning per step.
    warnings.filterwarnings("ignore", message=r"prompts\[\d+\] is \d+ bytes", category=UserWarning)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model_config(args)
    m = model.build(cfg, zero_init=True, device=args.device).train()
    vae_opt = torch.optim.AdamW(m.vae.parameters(), lr=args.vae_lr, betas=(0.9, 0.99))
    groups = [{"params": list(m.dit.parameters()), "lr_scale": 1.0},
              {"params": list(m.text.parameters()), "lr_scale": args.text_lr_scale}]  # fmt: skip
    dit_opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    latent = m.latent_shape(args.frames, args.size, args.size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)  # the probe's init is part of the run's seed
        aligner = Aligner(cfg.text_dim, latent).to(args.device)
    align_opt = torch.optim.AdamW(
        list(m.text.parameters()) + list(aligner.parameters()), lr=args.align_lr, weight_decay=0.01
    )
    opts = {"vae": vae_opt, "align": align_opt, "dit": dit_opt}
    ema = None
    if (out / "state.pt").exists():
        state = torch.load(out / "state.pt", map_location=args.device, weights_only=False)
        m.load_state_dict(state.pop("model"))
        if state.get("aligner"):  # absent in runs saved before the align phase existed
            aligner.load_state_dict(state.pop("aligner"))
        for k, o in opts.items():
            if state["opts"].get(k):  # None: that phase restarts from a fresh optimiser
                o.load_state_dict(state["opts"][k])
        ema = state.pop("ema")
        state.pop("opts")
        if state["phase"] == "done" and state["step"]["dit"] < args.dit_steps:
            state["phase"] = "dit"  # asked for more DiT steps than the run made: go on
        print(f"resumed at phase {state['phase']} step {state['step'][state['phase']]}")
    else:
        state = _new_state(m)
        if args.vae_init == "pool":
            pool_init(m.vae)
        text_init(m)
    last_save = time.monotonic()
    while state["phase"] != "done":
        phase = state["phase"]
        max_steps, max_s = _budget(args, phase)
        if phase == "dit" and ema is None:
            ema = {
                n: p.detach().clone()
                for n, p in m.named_parameters()
                if n.startswith(("dit.", "text."))
            }
        losses: list[float] = []
        while state["step"][phase] < max_steps and state["elapsed"][phase] < max_s:
            t0 = time.monotonic()
            step = state["step"][phase]
            if phase == "vae":
                losses.append(vae_step(m, vae_opt, args, step))
            elif phase == "bank":
                z, clips = bank_step(m, args, step)
                state["bank"] = z if state["bank"] is None else torch.cat([state["bank"], z])
                state["bank_clips"].extend(clips)
            elif phase == "align":
                losses.append(align_step(m, aligner, align_opt, state, args, step))
            else:
                losses.append(dit_step(m, dit_opt, state, args, step))
                ema_update(ema, m, step, args.ema)
            state["step"][phase] += 1
            state["elapsed"][phase] += time.monotonic() - t0
            if losses and (len(losses) == args.log_every or state["step"][phase] == max_steps):
                entry = {
                    "phase": phase,
                    "step": state["step"][phase],
                    "loss": float(np.mean(losses)),
                    "elapsed_s": state["elapsed"][phase],
                }
                state["log"].append(entry)
                print(json.dumps(entry), flush=True)
                losses = []
            if time.monotonic() - last_save > SAVE_EVERY_S:
                _save(state, m, aligner, opts, ema, out)
                last_save = time.monotonic()
        if phase == "vae":
            state["latent_scale"] = normalise_latents(m, args)
        if phase == "bank":
            print(f"bank: {len(state['bank_clips'])} clips", flush=True)
        state["phase"] = PHASES[PHASES.index(phase) + 1]
        _save(state, m, aligner, opts, ema, out)
        last_save = time.monotonic()
    return export(m, ema, state, args)


def export(m: VideoModel, ema: dict | None, state: dict, args) -> Path:
    """Write the EMA model (fp16 storage) as a checkpoint, the loss log and its plot."""
    out = Path(args.out)
    final = copy.deepcopy(m).eval()
    if ema:
        final.load_state_dict({**final.state_dict(), **ema})
    final = final.to(dtype=torch.float16 if args.fp16 else torch.float32, device="cpu")
    meta = {
        "data_seed": args.seed,
        "command": args.command,
        "train_size": [args.frames, args.size, args.size],
        "steps": {p: state["step"][p] for p in PHASES[:-1]},
        "minutes": {p: round(state["elapsed"][p] / 60, 2) for p in PHASES[:-1]},
        "bank_clips": len(state["bank_clips"]),
        "latent_scale": state["latent_scale"],
        "final_loss": {
            p: next((e["loss"] for e in reversed(state["log"]) if e["phase"] == p), None)
            for p in ("vae", "align", "dit")
        },
    }
    digest = model.save(final, str(out / "checkpoint"), meta)
    (out / "log.json").write_text(json.dumps(state["log"], indent=1))
    plot_losses(state["log"], out / "loss.png")
    print(f"checkpoint {out / 'checkpoint'} sha256 {digest}")
    return out / "checkpoint"


def plot_losses(log: list[dict], path: Path, width: int = 900, height: int = 360) -> None:
    """A PNG of the VAE and DiT loss curves side by side (log-scale y), drawn with PIL."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    panels = [p for p in ("vae", "align", "dit") if any(e["phase"] == p for e in log)]
    for k, phase in enumerate(panels):
        pts = [(e["step"], e["loss"]) for e in log if e["phase"] == phase and e["loss"] > 0]
        x0, x1 = k * width // len(panels) + 60, (k + 1) * width // len(panels) - 20
        y0, y1 = 30, height - 40
        draw.rectangle([x0, y0, x1, y1], outline="black")
        title = {
            "vae": "VAE reconstruction (L1+L2)",
            "align": "text-video InfoNCE",
            "dit": "DiT flow-matching MSE",
        }[phase]
        draw.text((x0, 10), title, fill="black")
        if len(pts) < 2:
            continue
        steps, losses = np.array(pts).T
        ly = np.log10(losses)
        lo, hi = ly.min(), max(ly.max(), ly.min() + 1e-6)
        px = x0 + (steps - steps.min()) / max(np.ptp(steps), 1) * (x1 - x0)
        py = y1 - (ly - lo) / (hi - lo) * (y1 - y0)
        draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill="steelblue")
        for v, y in ((lo, y1), (hi, y0)):
            draw.text((x0 - 55, y - 6), f"{10**v:.3g}", fill="black")
        draw.text((x0, y1 + 5), f"step {int(steps.min())}", fill="black")
        draw.text((x1 - 70, y1 + 5), f"step {int(steps.max())}", fill="black")
    img.save(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: the shipped `small` run)."""
    p = argparse.ArgumentParser(
        prog="python -m model.training.train", description=__doc__.split("\n")[0]
    )
    p.add_argument("--preset", default="small", help="model preset to train")
    p.add_argument(
        "--text-conv",
        type=int,
        default=None,
        help="byte convolution width of the text encoder (default: the preset's; 0 = none)",
    )
    p.add_argument("--out", required=True, help="run directory (resumes if it has state.pt)")
    p.add_argument("--minutes", type=float, default=55.0, help="wall-clock budget, all phases")
    p.add_argument("--seed", type=int, default=0, help="data and training seed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 on a busy CPU)")
    p.add_argument("--size", type=int, default=64, help="training height = width (pixels)")
    p.add_argument("--frames", type=int, default=17, help="frames of DiT training clips (4n+1)")
    p.add_argument("--vae-share", type=float, default=0.0, help="share of time for the VAE")
    p.add_argument("--bank-share", type=float, default=0.15, help="share of time for the bank")
    p.add_argument("--vae-steps", type=int, default=0, help="VAE steps (0: keep the init)")
    p.add_argument("--bank-steps", type=int, default=100_000, help="bank batches to encode")
    p.add_argument("--align-share", type=float, default=0.15, help="share of time to align text")
    p.add_argument("--align-steps", type=int, default=1500, help="text alignment steps")
    p.add_argument("--align-batch", type=int, default=96)
    p.add_argument("--align-lr", type=float, default=1e-3)
    p.add_argument("--dit-steps", type=int, default=1_000_000)
    p.add_argument("--vae-frames", type=int, default=9)
    p.add_argument("--vae-crop", type=int, default=32)
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument(
        "--vae-init",
        choices=("pool", "random"),
        default="pool",
        help="start the VAE as a block-average autoencoder, or from random init",
    )
    p.add_argument("--vae-lr", type=float, default=3e-4)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--bank-batch", type=int, default=8)
    p.add_argument("--batch", type=int, default=16, help="DiT batch size (16 beat 24 on CPU)")
    p.add_argument("--lr", type=float, default=8e-4, help="DiT learning rate")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--t-shift", type=float, default=1.0, help="shift of the training t")
    p.add_argument("--text-lr-scale", type=float, default=0.2, help="text encoder lr / DiT lr")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cfg-dropout", type=float, default=0.1)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--no-fp16", dest="fp16", action="store_false", help="store fp32 weights")
    args = p.parse_args(argv)
    args.command = "python -m model.training.train " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    if (args.frames - 1) % 4 or (args.vae_frames - 1) % 4:
        p.error("--frames and --vae-frames must be of the form 4n+1")
    if args.size % 16 or args.vae_crop % 8 or args.vae_crop > args.size:
        p.error("--size must be a multiple of 16 and --vae-crop a multiple of 8 <= size")
    try:
        model_config(args)  # the config's own checks, reported as a CLI error
    except pydantic.ValidationError:
        p.error("--text-conv must be an odd width in bytes, or 0 for none")
    except ValueError as e:  # an unknown --preset
        p.error(str(e))
    if not 0 <= args.vae_share + args.bank_share + args.align_share < 1:
        p.error("--vae-share + --bank-share + --align-share must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m model.training.train`."""
    train(parse_args(argv))


if __name__ == "__main__":
    main()
